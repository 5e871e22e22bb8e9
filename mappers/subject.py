"""Subject ↔ Patient + ResearchSubject.

**Patient** ``{study}-{subject}``: ``identifier`` = the subject code in the study-scoped
system ``http://trialfhir.org/fhir/sid/study/{study}/subject``; ``gender``;
``birthDate`` = the birth year only (``"1968"``). No name or other direct identifier.

**ResearchSubject** ``{study}-{subject}``: the same identifier; ``status``;
``period.start`` = the consent date; ``study`` → ``ResearchStudy/{study}``;
``individual`` → the Patient; ``assignedArm`` = the arm name.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from mappers import codes, ids
from mappers._fhir import MappingError, expect_type, parse_year
from schemas.trial import Subject

__all__ = [
    "patient_and_research_subject_to_subject",
    "subject_to_fhir",
    "subject_to_patient",
    "subject_to_research_subject",
]


def _identifier(subject: Subject) -> dict[str, str]:
    return {
        "use": "official",
        "system": codes.subject_identifier_system(subject.study_code),
        "value": subject.subject_code,
    }


def subject_to_patient(subject: Subject) -> dict[str, Any]:
    """The pseudonymised Patient of ``subject``."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": ids.patient_id(subject.study_code, subject.subject_code),
        "identifier": [_identifier(subject)],
        "gender": subject.sex,
    }
    if subject.birth_year is not None:
        patient["birthDate"] = f"{subject.birth_year:04d}"
    return patient


def subject_to_research_subject(subject: Subject) -> dict[str, Any]:
    """The ResearchSubject linking ``subject``'s Patient to its study."""
    rs: dict[str, Any] = {
        "resourceType": "ResearchSubject",
        "id": ids.research_subject_id(subject.study_code, subject.subject_code),
        "identifier": [_identifier(subject)],
        "status": subject.status,
        "period": {"start": subject.consent_date.isoformat()},
        "study": ids.reference("ResearchStudy", ids.study_id(subject.study_code)),
        "individual": ids.reference("Patient", ids.patient_id(subject.study_code, subject.subject_code)),
    }
    if subject.arm is not None:
        rs["assignedArm"] = subject.arm
    return rs


def subject_to_fhir(subject: Subject) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(Patient, ResearchSubject)`` of ``subject``."""
    return subject_to_patient(subject), subject_to_research_subject(subject)


def _subject_key(identifiers: Any) -> tuple[str, str] | None:
    for ident in identifiers or ():
        if isinstance(ident, dict):
            study_code = codes.study_code_from_subject_system(ident.get("system"))
            if study_code and isinstance(ident.get("value"), str):
                return study_code, ident["value"]
    return None


def patient_and_research_subject_to_subject(
    patient: dict[str, Any], research_subject: dict[str, Any]
) -> Subject:
    """The Subject of a Patient and its ResearchSubject (the pair this module writes).

    The business key comes from the ResearchSubject's study-scoped identifier (the
    Patient's when the ResearchSubject has none); the ResearchSubject must point at the
    Patient (``individual``) when the Patient has an id.
    """
    pat = expect_type(patient, "Patient")
    rs = expect_type(research_subject, "ResearchSubject")
    key = _subject_key(rs.get("identifier")) or _subject_key(pat.get("identifier"))
    if key is None:
        raise MappingError("neither ResearchSubject nor Patient has a study-scoped subject identifier")
    if pat.get("id") is not None and ids.reference_id(rs.get("individual"), "Patient") != pat["id"]:
        raise MappingError(f"ResearchSubject.individual does not reference Patient/{pat['id']}")
    start = (rs.get("period") or {}).get("start")
    if not isinstance(start, str) or len(start) < 10:
        raise MappingError("ResearchSubject.period.start (the consent date) is missing or partial")
    values: dict[str, Any] = {
        "study_code": key[0],
        "subject_code": key[1],
        "sex": pat.get("gender", "unknown"),
        "birth_year": parse_year(pat.get("birthDate")),
        "consent_date": date.fromisoformat(start[:10]),
        "status": rs.get("status"),
    }
    if rs.get("assignedArm") is not None:
        values["arm"] = rs["assignedArm"]
    return Subject(**values)
