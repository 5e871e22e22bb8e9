"""Safety summary (contract §4 "safety", §5 strata; AE fields per contract §2).

Read from each ``AdverseEvent?study=…`` (R4): ``actuality`` (only ``actual`` events count;
``potential`` ones — near misses — are listed but not counted), ``seriousness``
(``Serious`` = SAE), ``severity``, the CTCAE grade (``ae-grade`` extension, NCIt or local
``ctcae-grade-N`` codes, :data:`mappers.codes.AE_GRADE_FROM_CODING`), the WHO-UMC causality
of every ``suspectEntity`` (related = any of Certain, Probably-Likely, Possible; every other
assessment, and none, = not related), ``outcome`` and the onset (``date``, else
``detected``, else ``recordedDate``).

Each event is linked to the infusion it followed: the ``MedicationAdministration`` its
``suspectEntity.instance`` names, else the subject's most recent completed infusion of the
study product that started on or before the onset (by instant when the onset has a time,
by calendar date when it is a date), else none (before the first infusion).

The study-level strata count events (``subjects-with-ae`` counts subjects) of the cohort —
subjects with ≥ 1 completed infusion (contract §4); per-subject strata cover every subject.
An event without a severity, grade or outcome is counted in none of those strata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Optional

from mappers import codes
from service.derivation.reading import code_of, reference_id, when
from service.derivation.records import SubjectRecord

OUTCOMES: Final = ("resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown")
STRATA: Final[tuple[str, ...]] = (
    "subjects-with-ae", "ae", "sae", "severity-mild", "severity-moderate", "severity-severe",
    *(f"grade-{g}" for g in range(1, 6)), "related", "not-related", *OUTCOMES,
)


@dataclass(frozen=True, slots=True)
class AdverseEventRow:
    ref: str
    patient: Optional[str]
    subject: Optional[str]
    term: Optional[str]
    onset: Optional[str]
    actual: bool
    serious: bool
    severity: Optional[str]
    grade: Optional[int]
    causality: tuple[str, ...]
    related: bool
    outcome: Optional[str]
    infusion: Optional[str]
    infusion_link: Optional[str]
    """``suspectEntity`` or ``most recent infusion before onset``."""

    def strata(self) -> list[str]:
        """The event strata this event counts in (``subjects-with-ae`` aside)."""
        out = ["ae"]
        if self.serious:
            out.append("sae")
        if self.severity in ("mild", "moderate", "severe"):
            out.append(f"severity-{self.severity}")
        if self.grade is not None:
            out.append(f"grade-{self.grade}")
        out.append("related" if self.related else "not-related")
        if self.outcome in OUTCOMES:
            out.append(self.outcome)
        return out


def _grade(resource: dict[str, Any]) -> Optional[int]:
    for ext in resource.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == codes.EXT_AE_GRADE:
            for c in (ext.get("valueCodeableConcept") or {}).get("coding") or ():
                grade = codes.AE_GRADE_FROM_CODING.get((c.get("system"), c.get("code")))
                if grade is not None:
                    return grade
    return None


def read_adverse_event(resource: dict[str, Any], subjects: dict[str, SubjectRecord]) -> AdverseEventRow:
    """One AdverseEvent, linked to its subject's infusion (module docstring)."""
    patient = reference_id(resource.get("subject"), "Patient")
    subject = subjects.get(patient or "")
    causality = tuple(
        code
        for se in resource.get("suspectEntity") or ()
        if isinstance(se, dict)
        for c in se.get("causality") or ()
        if isinstance(c, dict) and (code := code_of(c.get("assessment"), codes.AE_CAUSALITY_ASSESS))
    )
    onset_text = next((resource[k] for k in ("date", "detected", "recordedDate") if isinstance(resource.get(k), str)), None)
    infusion, link = None, None
    for se in resource.get("suspectEntity") or ():
        ma = reference_id(se.get("instance") if isinstance(se, dict) else None, "MedicationAdministration")
        if ma is not None:
            infusion, link = f"MedicationAdministration/{ma}", "suspectEntity"
            break
    onset = when(onset_text, "onset")
    if infusion is None and subject is not None and not isinstance(onset, str):
        dated_only = len(onset.text) == 10
        before = [i for i in subject.infusions if (i.day <= onset.day if dated_only else i.instant_us <= onset.instant_us)]
        if before:
            infusion, link = before[-1].ref, "most recent infusion before onset"
    return AdverseEventRow(
        ref=f"AdverseEvent/{resource['id']}",
        patient=patient,
        subject=subject.code if subject else None,
        term=(resource.get("event") or {}).get("text") or next((c.get("display") for c in (resource.get("event") or {}).get("coding") or () if c.get("display")), None),
        onset=onset_text,
        actual=resource.get("actuality", "actual") == "actual",
        serious=code_of(resource.get("seriousness"), codes.AE_SERIOUSNESS) == codes.SERIOUS,
        severity=code_of(resource.get("severity"), codes.AE_SEVERITY),
        grade=_grade(resource),
        causality=causality,
        related=any(c in codes.RELATED_CAUSALITY for c in causality),
        outcome=code_of(resource.get("outcome"), codes.AE_OUTCOME),
        infusion=infusion,
        infusion_link=link,
    )


def count_strata(events: Sequence[AdverseEventRow]) -> dict[str, int]:
    """Every stratum of contract §5 (zeros included), over the actual events given."""
    counts = dict.fromkeys(STRATA, 0)
    actual = [e for e in events if e.actual]
    counts["subjects-with-ae"] = len({e.patient for e in actual})
    for e in actual:
        for stratum in e.strata():
            counts[stratum] += 1
    return counts


@dataclass(frozen=True, slots=True)
class SafetySummary:
    study: dict[str, int]
    """Strata over the cohort."""
    subjects: dict[str, dict[str, int]]
    """Subject code → strata of that subject."""
    events: tuple[AdverseEventRow, ...]


def summarise_safety(adverse_events: Sequence[dict[str, Any]], subjects: Sequence[SubjectRecord]) -> SafetySummary:
    by_patient = {s.patient: s for s in subjects}
    events = tuple(sorted((read_adverse_event(ae, by_patient) for ae in adverse_events), key=lambda e: (e.subject or "", e.onset or "", e.ref)))
    cohort = {s.patient for s in subjects if s.treated}
    by_patient_events: dict[Optional[str], list[AdverseEventRow]] = {}
    for e in events:
        by_patient_events.setdefault(e.patient, []).append(e)
    per_subject = {s.code: count_strata(by_patient_events.get(s.patient, [])) for s in subjects}
    return SafetySummary(count_strata([e for e in events if e.patient in cohort]), per_subject, events)


__all__ = ["OUTCOMES", "STRATA", "AdverseEventRow", "SafetySummary", "count_strata", "read_adverse_event", "summarise_safety"]
