"""The records the derivation works on (plain, immutable, cheap to build in bulk)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Optional

from schemas.trial import EndpointSettings, Visit
from service.derivation.canonical import Canon


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class Source:
    """The stored resource an input value comes from, with what visit selection needs."""

    ref: str
    """``Observation/{id}`` or ``QuestionnaireResponse/{id}``."""
    version: int
    effective: str
    """``effective[x]`` (``authored`` for a QuestionnaireResponse) as written."""
    day: date
    """Its calendar date as written (contract §3)."""
    instant_us: int
    last_updated_us: int


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class InputValue:
    """One usable input value: a measure of a subject, converted (contract §2)."""

    patient: str
    measure: str
    """A key of :data:`mappers.codes.MEASURE_CODES`, or ``haq_di_qr`` for a HAQ-DI scored
    from a QuestionnaireResponse."""
    canon: Canon
    source: Source
    encounter: Optional[str] = None
    """The id of the Encounter ``Observation.encounter`` references, if any."""


@dataclass(frozen=True, slots=True)
class SetAside:
    """An input that was recognised but cannot be used, and why (contract §2)."""

    ref: str
    patient: Optional[str]
    measure: Optional[str]
    reason: str
    day: Optional[date] = None
    encounter: Optional[str] = None


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class Infusion:
    """A completed infusion of the study product (contract §2, §3 day 0)."""

    ref: str
    start: str
    day: date
    instant_us: int


@dataclass(slots=True)
class SubjectRecord:
    """A subject of the study with its day 0 (contract §3)."""

    code: str
    patient: str
    research_subject: str
    day0: Optional[date]
    day0_source: Optional[str]
    """``MedicationAdministration/{id}`` or ``ResearchSubject.period.start``."""
    infusions: list[Infusion] = field(default_factory=list)

    @property
    def treated(self) -> bool:
        """In the cohort: ≥ 1 completed infusion of the study product (contract §4)."""
        return bool(self.infusions)


@dataclass(frozen=True, slots=True)
class StudyContext:
    """What the derivation needs to know about the study."""

    code: str
    resource_id: str
    schedule: tuple[Visit, ...]
    settings: EndpointSettings
    product_code: str
    schedule_source: str
    """``PlanDefinition/{id}`` or ``default`` (contract §3)."""


@dataclass(slots=True)
class StudyData:
    """Everything loaded for one derivation."""

    study: StudyContext
    subjects: list[SubjectRecord]
    values: list[InputValue]
    set_aside: list[SetAside]
    encounter_visits: dict[str, Optional[str]]
    """Encounter id → the visit name of its study-visit extension (``None`` without one)."""
    adverse_events: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


__all__ = ["Infusion", "InputValue", "SetAside", "Source", "StudyContext", "StudyData", "SubjectRecord"]
