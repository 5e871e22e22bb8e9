"""Small helpers shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

FHIR_JSON = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}


def unique(prefix: str = "t") -> str:
    """A fresh identifier value, so tests sharing a live server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(mrn: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient"}
    if mrn is not None:
        body["identifier"] = [{"system": "urn:trialfhir:test:mrn", "value": mrn}]
    body.update(extra)
    return body


def observation(value: str = "1.50", **extra: Any) -> bytes:
    """An Observation as raw JSON text, so decimal literals like 1.50 reach the server as written."""
    import json

    base = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5"}]}}
    base.update(extra)
    text = json.dumps(base)
    return (text[:-1] + f', "valueQuantity": {{"value": {value}, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"}}}}').encode()
