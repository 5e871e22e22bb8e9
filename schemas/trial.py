"""Trial entities of the domain API (pydantic v2): the JSON the ``/api`` layer accepts and
returns, and what :mod:`mappers` turns into FHIR R4 resources and back.

Business keys (``Study.code``, ``Subject.subject_code``, ``Infusion.infusion_code``,
``AdverseEvent.ae_code``, visit names) are short codes of letters, digits, ``-`` and
``.`` (:data:`Code`), so deterministic FHIR ids can be derived from them
(:mod:`mappers.ids`) and the ``|``-joined identifier values stay unambiguous.

Units are UCUM codes and are validated against contract §2 per measure
(:data:`ACCEPTED_UNITS`): a unit a measure does not accept is a validation error that
names the accepted units; values outside the scale of the unit (e.g. a joint count of 29,
PtGA 12 on a 0–10 scale) are refused the same way. Nothing is converted here: scores
convert units when they read the values.

Decimals stay :class:`~decimal.Decimal` with their precision (``1.50`` stays ``1.50``).
Datetimes must carry a time zone (FHIR ``dateTime`` with a time requires one); a value
known only to the day is a :class:`~datetime.date`.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Final, Literal, Optional, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from mappers import codes

__all__ = [
    "ACCEPTED_UNITS",
    "AdverseEvent",
    "Arm",
    "Assessment",
    "Code",
    "Coding",
    "DEFAULT_SCHEDULE",
    "DAS28_CUT_POINTS_STANDARD",
    "DAS28_CRP_CUT_POINTS_ALTERNATIVE",
    "Das28CutPoints",
    "EndpointSettings",
    "Infusion",
    "Measure",
    "Product",
    "Study",
    "StudyIdentifier",
    "Subject",
    "Visit",
    "accepted_units_text",
    "default_schedule",
    "is_mass_per_volume",
    "unit_problem",
]

# --- shared types -------------------------------------------------------------------

#: A business key: letters, digits, ``-`` and ``.``; starts and ends with a letter or digit.
Code = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,62}[A-Za-z0-9])?$"),
]
#: A code of the local code system (lower-case kebab, e.g. ``bm-cmsc``); also the
#: Medication id, so it is read back exactly.
ProductCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9.\-]{0,62}[a-z0-9])?$")]
#: A finite decimal (no NaN/Infinity), precision kept.
FiniteDecimal = Annotated[Decimal, Field(allow_inf_nan=False)]
#: A date or a time-zone-aware datetime (FHIR ``dateTime`` at day or second precision).
DateOrDateTime = Union[AwareDatetime, date]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)]

ResearchStudyStatus = Literal[
    "active", "administratively-completed", "approved", "closed-to-accrual",
    "closed-to-accrual-and-intervention", "completed", "disapproved", "in-review",
    "temporarily-closed-to-accrual", "temporarily-closed-to-accrual-and-intervention",
    "withdrawn",
]
"""R4 ``research-study-status`` (required binding of ResearchStudy.status)."""

ResearchStudyPhase = Literal[
    "n-a", "early-phase-1", "phase-1", "phase-1-phase-2", "phase-2", "phase-2-phase-3",
    "phase-3", "phase-4",
]
"""R4 ``research-study-phase`` codes."""

ArmType = Literal[
    "experimental", "active-comparator", "placebo-comparator", "sham-comparator",
    "no-intervention", "other-arm-type",
]
"""THO ``research-study-arm-type`` codes."""

ResearchSubjectStatus = Literal[
    "candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study",
    "on-study", "on-study-intervention", "on-study-observation", "pending-on-study",
    "potential-candidate", "screening", "withdrawn",
]
"""R4 ``research-subject-status`` (required binding of ResearchSubject.status)."""

AdministrativeGender = Literal["male", "female", "other", "unknown"]

MedicationAdministrationStatus = Literal[
    "in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown",
]
"""R4 ``medication-admin-status``."""

AssessmentStatus = Literal["final", "amended", "corrected", "entered-in-error"]
"""Observation statuses an assessment can carry (contract §2: final/amended/corrected
count, entered-in-error retracts)."""

AeSeverity = Literal["mild", "moderate", "severe"]
AeOutcome = Literal["resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown"]
"""R4 ``adverse-event-outcome`` (required binding of AdverseEvent.outcome)."""
AeCausality = Literal[
    "Certain", "Probably-Likely", "Possible", "Unlikely", "Conditional-Classified",
    "Unassessable-Unclassifiable",
]
"""WHO-UMC categories, as R4 ``adverse-event-causality-assess`` codes."""
SeriousnessCriterion = Literal[
    "results-in-death", "life-threatening", "hospitalization", "disability",
    "congenital-anomaly", "other-medically-important",
]
"""ICH E2B seriousness criteria (written as the AE back-port ``seriousness-criteria``)."""
AeActionTaken = Literal[
    "dose-not-changed", "dose-reduced", "dose-increased", "drug-interrupted",
    "drug-withdrawn", "not-applicable", "unknown",
]
"""Action taken with the study treatment (CDISC AEACN), local codes."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Coding(_Model):
    """A code in a code system (FHIR ``Coding`` without version/userSelected)."""

    system: Annotated[str, StringConstraints(min_length=1)]
    code: Annotated[str, StringConstraints(min_length=1)]
    display: Optional[str] = None


RA_CONDITION: Final = Coding(system=codes.SNOMED, code=codes.RA_CONDITION_CODE, display=codes.RA_CONDITION_DISPLAY)
IV_ROUTE: Final = Coding(system=codes.SNOMED, code=codes.ROUTE_IV_CODE, display=codes.ROUTE_IV_DISPLAY)


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _not_before(later: date, earlier: date) -> bool:
    """``later >= earlier``; instants when both are datetimes, calendar dates otherwise."""
    if isinstance(later, datetime) and isinstance(earlier, datetime):
        return later >= earlier
    return _as_date(later) >= _as_date(earlier)


# --- study --------------------------------------------------------------------------


class StudyIdentifier(_Model):
    """An external identifier of the study, e.g. its registry id
    (``https://irct.behdasht.gov.ir`` | ``IRCT20080728001031N29``)."""

    system: Annotated[str, StringConstraints(min_length=1)] = codes.IRCT_IDENTIFIER_SYSTEM
    value: Annotated[str, StringConstraints(min_length=1)]

    @field_validator("system")
    @classmethod
    def _not_reserved(cls, system: str) -> str:
        if system == codes.STUDY_IDENTIFIER_SYSTEM:
            raise ValueError(f"{system} is reserved for the study code (Study.code)")
        return system


class Arm(_Model):
    """A study arm (``ResearchStudy.arm``); subjects name it in ``Subject.arm``."""

    name: NonEmptyText
    type: Optional[ArmType] = None
    description: Optional[str] = None


class Visit(_Model):
    """A scheduled visit: target study day and an inclusive window around it.

    ``window_low``/``window_high`` are offsets in days from ``target_day`` (``-7``/``7``
    for W4 ±7); the window covers study days ``target_day + window_low`` …
    ``target_day + window_high``.
    """

    name: Code
    target_day: int
    window_low: Annotated[int, Field(le=0)] = 0
    window_high: Annotated[int, Field(ge=0)] = 0

    @property
    def first_day(self) -> int:
        """First study day of the window (inclusive)."""
        return self.target_day + self.window_low

    @property
    def last_day(self) -> int:
        """Last study day of the window (inclusive)."""
        return self.target_day + self.window_high


def default_schedule() -> list[Visit]:
    """Contract §3 default RA schedule."""
    return [
        Visit(name="BL", target_day=0, window_low=-28, window_high=0),
        Visit(name="W4", target_day=28, window_low=-7, window_high=7),
        Visit(name="W8", target_day=56, window_low=-7, window_high=7),
        Visit(name="W12", target_day=84, window_low=-7, window_high=7),
        Visit(name="W16", target_day=112, window_low=-7, window_high=7),
        Visit(name="W24", target_day=168, window_low=-14, window_high=14),
    ]


#: The default RA schedule of contract §3 (a fresh list per call of ``Study``).
DEFAULT_SCHEDULE: Final[tuple[Visit, ...]] = tuple(default_schedule())


class Das28CutPoints(_Model):
    """DAS28 disease-activity cut-points: remission < ``remission``; low ≤ ``low``;
    moderate ≤ ``moderate``; high above."""

    remission: FiniteDecimal
    low: FiniteDecimal
    moderate: FiniteDecimal

    @model_validator(mode="after")
    def _increasing(self) -> "Das28CutPoints":
        if not (Decimal(0) < self.remission < self.low < self.moderate):
            raise ValueError("DAS28 cut-points must be positive and increasing (remission < low < moderate)")
        return self


#: Validated DAS28-ESR cut-points, also the contract's default for DAS28-CRP.
DAS28_CUT_POINTS_STANDARD: Final = Das28CutPoints(remission=Decimal("2.6"), low=Decimal("3.2"), moderate=Decimal("5.1"))
#: Fleischmann's DAS28-CRP cut-points (per-study alternative).
DAS28_CRP_CUT_POINTS_ALTERNATIVE: Final = Das28CutPoints(remission=Decimal("2.4"), low=Decimal("2.9"), moderate=Decimal("4.6"))


class EndpointSettings(_Model):
    """Per-study endpoint settings (contract §3); the defaults apply when not set."""

    acr_acute_phase_reactant: Literal["crp", "esr"] = "crp"
    """Acute-phase reactant counted in ACR20/50/70."""
    das28_crp_cut_points: Das28CutPoints = Field(default_factory=lambda: DAS28_CUT_POINTS_STANDARD.model_copy())
    """Cut-points for the DAS28-CRP activity category."""
    haq_di_scoring: Literal["adjusted", "unadjusted"] = "adjusted"
    """``adjusted``: aids/devices or help raise a category score to 2; ``unadjusted``: not."""
    boolean_remission: list[Literal["2011", "2022"]] = Field(default_factory=lambda: ["2011", "2022"])
    """Boolean remission definitions reported (kept sorted, without duplicates)."""

    @field_validator("boolean_remission")
    @classmethod
    def _sorted_unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))


class Study(_Model):
    """A clinical study: ResearchStudy + its schedule (PlanDefinition), cohort (Group)."""

    code: Code
    """Business key; ``ResearchStudy/{code lower-cased}``."""
    identifiers: list[StudyIdentifier] = Field(default_factory=list)
    """External identifiers, e.g. the registry id (IRCT…, NCT…)."""
    title: NonEmptyText
    phase: ResearchStudyPhase
    condition: Coding = Field(default_factory=lambda: RA_CONDITION.model_copy())
    status: ResearchStudyStatus = "active"
    arms: list[Arm] = Field(default_factory=list)
    product_code: ProductCode = codes.PRODUCT_CODE
    """The investigational product (``ResearchStudy.focus``, ``Medication/{code}``)."""
    schedule: list[Visit] = Field(default_factory=default_schedule)
    """Visits, kept sorted by target day; windows may not overlap; ``BL`` is required."""
    settings: EndpointSettings = Field(default_factory=EndpointSettings)

    @model_validator(mode="after")
    def _check(self) -> "Study":
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be unique within a study")
        keys = [(i.system, i.value) for i in self.identifiers]
        if len(set(keys)) != len(keys):
            raise ValueError("identifiers must be unique")
        visits = sorted(self.schedule, key=lambda v: (v.target_day, v.name))
        seen = [v.name.upper() for v in visits]
        if len(set(seen)) != len(seen):
            raise ValueError("visit names must be unique (case-insensitively) within a schedule")
        if "BL" not in {v.name for v in visits}:
            raise ValueError("the schedule needs a baseline visit named 'BL'")
        for before, after in zip(visits, visits[1:]):
            if after.first_day <= before.last_day:
                raise ValueError(
                    f"visit windows overlap: {before.name} (days {before.first_day}..{before.last_day}) "
                    f"and {after.name} (days {after.first_day}..{after.last_day})"
                )
        self.schedule = visits
        return self

    def visit(self, name: str) -> Visit | None:
        """The visit called ``name`` (exact match), if the schedule has it."""
        return next((v for v in self.schedule if v.name == name), None)


class Product(_Model):
    """The study product (``Medication`` with a code in the local system)."""

    code: ProductCode = codes.PRODUCT_CODE
    display: NonEmptyText = codes.PRODUCT_DISPLAY


# --- subjects and infusions ---------------------------------------------------------


class Subject(_Model):
    """A study subject (Patient + ResearchSubject). Pseudonymised: no name, birth year only."""

    study_code: Code
    subject_code: Code
    """Business key within the study; ``Patient/{study}-{subject}`` (lower-case)."""
    sex: AdministrativeGender
    birth_year: Optional[Annotated[int, Field(ge=1900, le=2100)]] = None
    arm: Optional[NonEmptyText] = None
    """Name of the assigned arm (``Arm.name``)."""
    consent_date: date
    status: ResearchSubjectStatus = "on-study"


class Infusion(_Model):
    """One administration of the study product (MedicationAdministration)."""

    study_code: Code
    subject_code: Code
    infusion_code: Code
    """Business key within the subject, e.g. ``W0``, ``W4``, ``W8``."""
    start: AwareDatetime
    end: Optional[AwareDatetime] = None
    product_code: ProductCode = codes.PRODUCT_CODE
    dose_value: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    dose_unit: Literal["10*6/kg"] = "10*6/kg"
    """UCUM; contract §2 fixes million cells per kg."""
    lot: Optional[NonEmptyText] = None
    route: Coding = Field(default_factory=lambda: IV_ROUTE.model_copy())
    status: MedicationAdministrationStatus = "completed"

    @model_validator(mode="after")
    def _end_after_start(self) -> "Infusion":
        if self.end is not None and self.end < self.start:
            raise ValueError("infusion end is before its start")
        return self


# --- assessments --------------------------------------------------------------------


class Measure(StrEnum):
    """The measures of contract §2 (codes in :data:`mappers.codes.MEASURE_CODES`)."""

    TJC28 = "tjc28"
    SJC28 = "sjc28"
    PTGA = "ptga"
    EGA = "ega"
    PAIN = "pain"
    HAQ_DI = "haq_di"
    ESR = "esr"
    CRP = "crp"
    ANTI_CCP = "anti_ccp"
    RF = "rf"
    IL10 = "il10"
    TNF_ALPHA = "tnf_alpha"
    IL17A = "il17a"
    TREG_PCT = "treg_pct"
    TH17_PCT = "th17_pct"


#: UCUM codes accepted per measure (contract §2). ``None`` = no unit (joint counts; it is
#: stored as ``{#}``). CRP and IL-10 also accept any UCUM mass/volume unit.
ACCEPTED_UNITS: Final[dict[Measure, tuple[Optional[str], ...]]] = {
    Measure.TJC28: ("{#}", "1", None),
    Measure.SJC28: ("{#}", "1", None),
    Measure.PTGA: ("{score}", "cm", "mm"),
    Measure.EGA: ("{score}", "cm", "mm"),
    Measure.PAIN: ("mm", "cm", "{score}"),
    Measure.HAQ_DI: ("{score}",),
    Measure.ESR: ("mm/h",),
    Measure.CRP: ("mg/L", "mg/dL"),
    Measure.ANTI_CCP: ("[arb'U]/mL", "U/mL"),
    Measure.RF: ("[IU]/mL",),
    Measure.IL10: ("pg/mL",),
    Measure.TNF_ALPHA: ("pg/mL",),
    Measure.IL17A: ("pg/mL",),
    Measure.TREG_PCT: ("%",),
    Measure.TH17_PCT: ("%",),
}
_MASS_PER_VOLUME: Final = frozenset({Measure.CRP, Measure.IL10})
_COUNTS: Final = frozenset({Measure.TJC28, Measure.SJC28})
_D = Decimal
#: Inclusive value range per (measure, unit); every other value only has to be ≥ 0.
_RANGES: Final[dict[tuple[Measure, Optional[str]], tuple[Decimal, Decimal]]] = {
    **{(m, u): (_D(0), _D(28)) for m in _COUNTS for u in ("{#}", "1", None)},
    **{(m, "{score}"): (_D(0), _D(10)) for m in (Measure.PTGA, Measure.EGA, Measure.PAIN)},
    **{(m, "cm"): (_D(0), _D(10)) for m in (Measure.PTGA, Measure.EGA, Measure.PAIN)},
    **{(m, "mm"): (_D(0), _D(100)) for m in (Measure.PTGA, Measure.EGA, Measure.PAIN)},
    (Measure.HAQ_DI, "{score}"): (_D(0), _D(3)),
    (Measure.TREG_PCT, "%"): (_D(0), _D(100)),
    (Measure.TH17_PCT, "%"): (_D(0), _D(100)),
}
_COMMON_MASS_PER_VOLUME: Final = frozenset(
    f"{mass}/{volume}"
    for mass in ("kg", "g", "mg", "ug", "ng", "pg")
    for volume in ("L", "dL", "cL", "mL", "uL")
)


@functools.lru_cache(maxsize=256)
def is_mass_per_volume(unit: str) -> bool:
    """Whether ``unit`` is a valid UCUM unit of mass/volume (``mg/dL``, ``ng/L``, ``g/m3``…).

    Common units are answered from a table; others are parsed with ucumvert (loaded on
    first use).
    """
    if unit in _COMMON_MASS_PER_VOLUME:
        return True
    if "{" in unit or "[" in unit:
        return False
    try:
        quantity = _ucum_registry().from_ucum(unit)
        return quantity.dimensionality == _ucum_registry().parse_units("g/L").dimensionality
    except Exception:  # noqa: BLE001 - not parseable as UCUM: not mass/volume
        return False


@functools.lru_cache(maxsize=1)
def _ucum_registry():  # pragma: no cover - trivial
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def accepted_units_text(measure: Measure | str) -> str:
    """The accepted units of ``measure`` as a human-readable list (used in messages)."""
    measure = Measure(measure)
    shown = ", ".join("no unit" if u is None else u for u in ACCEPTED_UNITS[measure])
    if measure in _MASS_PER_VOLUME:
        shown += " or any UCUM mass/volume unit"
    if measure in _COUNTS:
        shown += " (valueInteger is accepted too)"
    return shown


def unit_problem(measure: Measure | str, unit: Optional[str], value: Optional[Decimal] = None) -> Optional[str]:
    """Why ``value`` in ``unit`` is not acceptable for ``measure`` (``None`` when it is).

    The same check :class:`Assessment` runs, usable without raising (e.g. to report why
    an incoming Observation is set aside).
    """
    measure = Measure(measure)
    accepted = ACCEPTED_UNITS[measure]
    unit_ok = unit in accepted or (
        measure in _MASS_PER_VOLUME and unit is not None and is_mass_per_volume(unit)
    )
    if not unit_ok:
        shown = "no unit" if unit is None else f"'{unit}'"
        return f"{shown} is not an accepted unit for {measure.value}; accepted units: {accepted_units_text(measure)}"
    if value is None:
        return None
    if not value.is_finite():
        return f"{measure.value} value must be a finite number"
    low, high = _RANGES.get((measure, unit), (_D(0), None))
    if value < low or (high is not None and value > high):
        scale = f"{low}–{high}" if high is not None else f"≥ {low}"
        return f"{measure.value} value {value} {unit or ''} is outside the scale ({scale})".replace("  ", " ")
    if measure in _COUNTS and value != value.to_integral_value():
        return f"{measure.value} is a count; {value} is not a whole number"
    return None


class Assessment(_Model):
    """One measured value of a subject (an Observation).

    ``study_code``/``subject_code``/``visit_name`` may be unknown for an Observation
    that came from a hospital feed (the service resolves the subject from
    ``Observation.subject`` and the visit from the date, contract §3); writing an
    assessment as FHIR needs all three (the business key ``study|subject|visit|measure``).
    """

    study_code: Optional[Code] = None
    subject_code: Optional[Code] = None
    visit_name: Optional[Code] = None
    effective: DateOrDateTime
    measure: Measure
    value: FiniteDecimal
    unit: Optional[str] = None
    """UCUM code; must be one :data:`ACCEPTED_UNITS` lists for the measure. A joint count
    without unit is stored as ``{#}``."""
    status: AssessmentStatus = "final"

    @model_validator(mode="after")
    def _check_unit(self) -> "Assessment":
        problem = unit_problem(self.measure, self.unit, self.value)
        if problem:
            raise ValueError(problem)
        if self.measure in _COUNTS and self.unit is None:
            self.unit = "{#}"
        return self


# --- adverse events -----------------------------------------------------------------


class AdverseEvent(_Model):
    """An adverse event of a subject (R4 AdverseEvent, contract §2)."""

    study_code: Code
    subject_code: Code
    ae_code: Code
    """Business key within the subject, e.g. ``AE1``."""
    term: NonEmptyText
    """Verbatim/reported term (``AdverseEvent.event.text``)."""
    meddra_code: Optional[Annotated[str, StringConstraints(pattern=r"^\d{8}$")]] = None
    """MedDRA LLT/PT code (8 digits), system ``https://www.meddra.org``."""
    onset: DateOrDateTime
    end: Optional[DateOrDateTime] = None
    severity: AeSeverity
    grade: Optional[Annotated[int, Field(ge=1, le=5)]] = None
    """CTCAE grade."""
    serious: bool = False
    seriousness_criteria: list[SeriousnessCriterion] = Field(default_factory=list)
    """Criteria met; at least one when serious, none otherwise (kept sorted)."""
    relatedness: Optional[AeCausality] = None
    """WHO-UMC causality with the study product."""
    outcome: Optional[AeOutcome] = None
    action_taken: Optional[AeActionTaken] = None
    infusion_code: Optional[Code] = None
    """The infusion the event followed (``Infusion.infusion_code`` of the same subject)."""

    @model_validator(mode="after")
    def _check(self) -> "AdverseEvent":
        criteria = sorted(set(self.seriousness_criteria))
        if self.serious and not criteria:
            raise ValueError("a serious adverse event needs at least one seriousness criterion")
        if not self.serious and criteria:
            raise ValueError("seriousness criteria are only given for a serious adverse event")
        self.seriousness_criteria = criteria
        if self.end is not None and not _not_before(self.end, self.onset):
            raise ValueError("adverse event end is before its onset")
        return self
