"""Deterministic FHIR resource ids derived from business keys.

The same entity always maps to the same id, so writing it again is an idempotent
update (``PUT [type]/[id]``). An id is the business-key parts lower-cased and joined
with ``-`` (``Patient/{study}-{subject}``); characters outside ``[a-z0-9-.]`` become
``-``. When that would exceed FHIR's 64 characters, the id is cut to 55 characters and
ends with ``-`` + the first 8 hex digits of the SHA-256 of the exact (case-kept) parts,
so it stays unique and deterministic.

Business keys are compared case-insensitively for ids: ``S01`` and ``s01`` in one study
would share an id, so the API should treat keys case-insensitively too. The business
keys themselves travel unchanged in each resource's ``identifier``.

| resource | id |
|---|---|
| ResearchStudy | ``{study}`` |
| PlanDefinition (schedule of activities) | ``{study}-soa`` |
| Group (enrolled cohort) | ``{study}-enrolled`` |
| Medication (study product) | ``{product}`` |
| Patient, ResearchSubject | ``{study}-{subject}`` |
| MedicationAdministration | ``{study}-{subject}-{infusion}`` |
| Observation | ``{study}-{subject}-{visit}-{measure}`` (``haq_di`` → ``haq-di``) |
| AdverseEvent | ``{study}-{subject}-{ae}`` |
"""

from __future__ import annotations

import hashlib
import re

_ID_MAX = 64
_NOT_ID = re.compile(r"[^a-z0-9\-.]")


def make_id(*parts: str) -> str:
    """A valid FHIR id (``[A-Za-z0-9\\-.]{1,64}``) from business-key parts."""
    if not parts or any(not p for p in parts):
        raise ValueError("every id part must be a non-empty string")
    text = _NOT_ID.sub("-", "-".join(parts).lower())
    if len(text) <= _ID_MAX:
        return text
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()[:8]
    return f"{text[:_ID_MAX - 9]}-{digest}"


def study_id(study_code: str) -> str:
    return make_id(study_code)


def plan_definition_id(study_code: str) -> str:
    return make_id(study_code, "soa")


def group_id(study_code: str) -> str:
    return make_id(study_code, "enrolled")


def medication_id(product_code: str) -> str:
    return make_id(product_code)


def patient_id(study_code: str, subject_code: str) -> str:
    return make_id(study_code, subject_code)


def research_subject_id(study_code: str, subject_code: str) -> str:
    return make_id(study_code, subject_code)


def medication_administration_id(study_code: str, subject_code: str, infusion_code: str) -> str:
    return make_id(study_code, subject_code, infusion_code)


def observation_id(study_code: str, subject_code: str, visit_name: str, measure: str) -> str:
    return make_id(study_code, subject_code, visit_name, measure)


def adverse_event_id(study_code: str, subject_code: str, ae_code: str) -> str:
    return make_id(study_code, subject_code, ae_code)


def reference(resource_type: str, resource_id: str) -> dict[str, str]:
    """A literal ``Reference`` (``{"reference": "Type/id"}``)."""
    return {"reference": f"{resource_type}/{resource_id}"}


def reference_id(ref: object, resource_type: str) -> str | None:
    """The id of a relative literal reference to ``resource_type`` (else ``None``).

    Accepts ``Type/id``, ``Type/id/_history/n`` and absolute URLs ending in those.
    """
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if not isinstance(text, str):
        return None
    segments = text.split("/")
    if "_history" in segments:
        segments = segments[: segments.index("_history")]
    if len(segments) >= 2 and segments[-2] == resource_type and segments[-1]:
        return segments[-1]
    return None
