"""The request bodies of the REST benchmark: realistic lab Observations of about 600 bytes."""

from __future__ import annotations

import json
import random

# (LOINC code, display, UCUM unit, low, high): common chemistry/haematology panels.
LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 140),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 1.4),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 133, 148),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.3, 5.3),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11, 17.5),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 5, 60),
]


def observation(i: int, rng: random.Random) -> dict:
    """The ``i``-th lab Observation (valid FHIR R4; ~600 bytes as compact JSON)."""
    code, display, unit, low, high = LABS[i % len(LABS)]
    value = round(rng.uniform(low * 0.8, high * 1.2), 2)
    day = 1 + i % 28
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.1", "value": f"LAB-{i:07d}"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                        "display": "Laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": f"Patient/pat-{i % 500:05d}"},
        "effectiveDateTime": f"2024-05-{day:02d}T08:30:00+02:00",
        "issued": f"2024-05-{day:02d}T10:15:00.000+02:00",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def observation_bytes(i: int, rng: random.Random) -> bytes:
    return json.dumps(observation(i, rng), separators=(",", ":")).encode()


def stored_form(i: int) -> bytes:
    """What trialfhir returns for a read: the body with id and meta in front (same size)."""
    doc = observation(i, random.Random(i))
    out = {
        "resourceType": doc.pop("resourceType"),
        "id": "0b7e3c1e-6a0f-4f57-9d0c-3a9a2f1e5b6d",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:15:00.123456Z"},
    }
    out.update(doc)
    return json.dumps(out, separators=(",", ":")).encode()
