"""Derived Observations (contract §5): one per subject × visit × output code.

``Observation/{study}-{subject}-{visit}-{code}`` (ids from the business keys, lower-cased,
:func:`mappers.ids.make_id`), so a re-derivation updates the same resource:

- ``status`` ``final``; ``category`` local ``derived``; ``code`` the local coding (and
  LOINC 75845-8 / 75847-4 for SDAI / CDAI, contract §4); ``subject`` → the Patient;
- ``identifier`` ``http://trialfhir.org/fhir/sid/derived`` | ``{study}|{subject}|{visit}|{code}``;
- ``effectiveDateTime`` = the latest ``effective[x]`` (by instant) among the inputs used,
  as written; absent when no input was used;
- the value: ``valueQuantity`` rounded half away from zero to the decimals of contract §4
  (UCUM ``{score}``, ``mm``, ``1``), ``valueCodeableConcept`` (local category codes) or
  ``valueBoolean``;
- not computable: no value, ``dataAbsentReason`` ``not-a-number`` when the formula is
  undefined for the value (ESR 0, Th17 0) and ``unknown`` otherwise, and a ``note`` with
  the reason (a set-aside input is named there, contract §2);
- ``derivedFrom`` → every input resource used (Observations, or the QuestionnaireResponse
  a HAQ-DI was scored from), baseline inputs first for change endpoints;
- extensions ``study-visit`` (``valueString``) and ``workflow-researchStudy``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

from mappers import codes, ids
from schemas.trial import Visit
from service.derivation.catalog import (
    BY_CODE,
    CATEGORY_DISPLAY,
    DERIVED_CATEGORY,
    DERIVED_CATEGORY_DISPLAY,
    DERIVED_IDENTIFIER_SYSTEM,
    Kind,
)
from service.derivation.engine import Output
from service.derivation.records import StudyContext, SubjectRecord
from service.endpoints.rounding import round_half_away

DATA_ABSENT: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_ABSENT = {
    True: {"coding": [{"system": DATA_ABSENT, "code": "not-a-number", "display": "Not a Number (NaN)"}]},
    False: {"coding": [{"system": DATA_ABSENT, "code": "unknown", "display": "Unknown"}]},
}
_CATEGORY = [{"coding": [{"system": codes.RA, "code": DERIVED_CATEGORY, "display": DERIVED_CATEGORY_DISPLAY}]}]


def _code(code: str) -> dict[str, Any]:
    out = BY_CODE[code]
    coding = [{"system": codes.RA, "code": code, "display": out.display}]
    if out.loinc:
        coding.append({"system": codes.LOINC, "code": out.loinc})
    return {"coding": coding, "text": out.display}


_CODES: Final = {code: _code(code) for code in BY_CODE}


_NOT_ID = re.compile(r"[^a-z0-9\-.]")


@lru_cache(maxsize=100_000)
def _prefix(study_code: str, subject_code: str, visit: str) -> str:
    return _NOT_ID.sub("-", f"{study_code}-{subject_code}-{visit}".lower())


def derived_id(study_code: str, subject_code: str, visit: str, code: str) -> str:
    """``ids.make_id(study, subject, visit, code)``, with the subject × visit part cached."""
    candidate = f"{_prefix(study_code, subject_code, visit)}-{code}"
    return candidate if len(candidate) <= 64 else ids.make_id(study_code, subject_code, visit, code)


def value_element(output: Output) -> tuple[str, Any]:
    """(element name, FHIR value) of a computed output, rounded per contract §4."""
    definition = BY_CODE[output.code]
    if definition.kind is Kind.QUANTITY:
        unit = definition.unit or "1"
        value = round_half_away(output.value, definition.decimals or 0)  # type: ignore[arg-type]
        return "valueQuantity", {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}
    if definition.kind is Kind.CATEGORY:
        code = str(output.value)
        return "valueCodeableConcept", {"coding": [{"system": codes.RA, "code": code, "display": CATEGORY_DISPLAY[code]}]}
    return "valueBoolean", bool(output.value)


def derived_observation(study: StudyContext, subject: SubjectRecord, visit: Visit, output: Output) -> dict[str, Any]:
    """The derived Observation of one output (module docstring)."""
    refs = list(dict.fromkeys(s.value.source.ref for s in output.inputs))
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": derived_id(study.code, subject.code, visit.name, output.code),
        "extension": [
            {"url": codes.EXT_STUDY_VISIT, "valueString": visit.name},
            {"url": codes.EXT_WORKFLOW_RESEARCH_STUDY, "valueReference": {"reference": f"ResearchStudy/{study.resource_id}"}},
        ],
        "identifier": [{"system": DERIVED_IDENTIFIER_SYSTEM, "value": f"{study.code}|{subject.code}|{visit.name}|{output.code}"}],
        "status": "final",
        "category": _CATEGORY,
        "code": _CODES[output.code],
        "subject": {"reference": f"Patient/{subject.patient}"},
    }
    if output.inputs:
        latest = max(output.inputs, key=lambda s: (s.value.source.instant_us, s.value.source.effective))
        resource["effectiveDateTime"] = latest.value.source.effective
    if output.value is not None:
        name, value = value_element(output)
        resource[name] = value
    else:
        resource["dataAbsentReason"] = _ABSENT[output.undefined]
        resource["note"] = [{"text": f"Not computed: {output.reason}"}]
    if refs:
        resource["derivedFrom"] = [{"reference": ref} for ref in refs]
    return resource


__all__ = ["DATA_ABSENT", "derived_id", "derived_observation", "value_element"]
