"""What the report shows, as plain immutable data (built by :mod:`.service`, read by the renderers).

Values are ``Decimal`` as the derivation reports them (derived outputs rounded per
contract §4 exactly as in the ``$endpoints`` Observations; inputs as stored, in the units
the scores use), so a renderer only formats and places them and never computes a score.
Per-visit tuples are aligned with :attr:`ReportData.visits` (or, for changes, with the
visits after baseline); ``None`` marks a value that was not computed or not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Optional


@dataclass(frozen=True, slots=True)
class VisitInfo:
    """A scheduled visit: name and target study day (the x position of the visit charts)."""

    name: str
    target_day: int


@dataclass(frozen=True, slots=True)
class Band:
    """One activity category's range on a score axis, from the previous band's bound up to ``upper``."""

    category: str
    """``remission``, ``low``, ``moderate`` or ``high`` (contract §4 category codes)."""
    upper: Optional[Decimal]
    """Upper bound; ``None`` for the top band."""
    upper_inclusive: bool
    """Whether ``upper`` belongs to this band (DAS28 remission is ``< 2.6``, every other bound ``≤``)."""


@dataclass(frozen=True, slots=True)
class Trajectory:
    """One measure of every subject over the visits (one trajectory chart)."""

    code: str
    """The output code (``das28-esr`` …) or ``pain`` for the pain input."""
    label: str
    unit: str
    bands: tuple[Band, ...]
    """Activity bands, lowest first; empty when the measure has no categories (pain)."""
    scale_max: Optional[Decimal]
    """The top of a bounded scale (pain: 100 mm), so the axis shows the whole scale; ``None`` when open."""
    values: dict[str, tuple[Optional[Decimal], ...]]
    """Subject → value per visit, as reported."""
    categories: dict[str, tuple[Optional[str], ...]]
    """Subject → the derivation's activity category per visit (empty without bands)."""
    source: str
    """Where the values come from, for the caption."""


@dataclass(frozen=True, slots=True)
class ResponseRate:
    """A binary endpoint at one visit over the cohort, as the ``$endpoints`` MeasureReport gives it."""

    code: str
    label: str
    visit: str
    responders: int
    evaluable: int
    cohort: int
    proportion: Optional[Decimal]
    """responders / evaluable, 4 decimals; ``None`` when nobody is evaluable."""
    ci: Optional[tuple[Decimal, Decimal]]
    """Exact (Clopper–Pearson) 95 % CI of ``proportion``, 4 decimals."""
    proportion_nri: Optional[Decimal]
    """responders / cohort (non-responder imputation), 4 decimals."""
    ci_nri: Optional[tuple[Decimal, Decimal]]


@dataclass(frozen=True, slots=True)
class LaneEvent:
    """Something that happened to a subject on a study day (a swimmer-plot marker)."""

    day: int
    kind: str
    """``infusion``, ``visit`` or ``adverse-event``."""
    label: str
    detail: str
    severity: Optional[str] = None
    """Adverse events only: ``mild``/``moderate``/``severe`` or ``None`` when not given."""
    serious: bool = False


@dataclass(frozen=True, slots=True)
class Lane:
    """One subject's row of the swimmer plot."""

    subject: str
    in_cohort: bool
    events: tuple[LaneEvent, ...]
    """In study-day order; events that cannot be placed on a study day are left out (see ``unplaced``)."""
    unplaced: tuple[str, ...]
    """Why an event is missing from the lane (no day 0, no usable date)."""


@dataclass(frozen=True, slots=True)
class ChangeSeries:
    """A biomarker's baseline and change from baseline per subject (one biomarker chart)."""

    code: str
    label: str
    unit: str
    baseline: dict[str, Optional[Decimal]]
    """Subject → baseline value as reported."""
    changes: dict[str, tuple[Optional[Decimal], ...]]
    """Subject → visit − BL per visit after baseline (exact for inputs; for a derived ratio
    computed on the unrounded values and rounded like the ratio)."""
    source: str


@dataclass(frozen=True, slots=True)
class Completeness:
    """Which input measure each subject has at each visit."""

    measures: tuple[tuple[str, str], ...]
    """(measure key, label) in display order."""
    cells: dict[tuple[str, str], tuple[str, ...]]
    """(subject, visit) → per measure ``present``, ``set aside`` (recognised but unusable,
    contract §2) or ``missing``."""


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """One adverse event as the derivation's safety summary reads it."""

    subject: str
    term: str
    onset: str
    day: Optional[int]
    severity: str
    grade: Optional[int]
    serious: bool
    causality: str
    related: bool
    outcome: str
    infusion: str
    """The infusion it followed, as ``infusion N (day D)`` of its subject (or the reference
    when the infusion is not one of the subject's study-product infusions)."""
    counted: bool
    """Actual events count in the strata; potential ones (near misses) are listed only."""


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows for one study."""

    study_code: str
    study_id: str
    title: Optional[str]
    schedule_source: str
    reactant: str
    """ACR's acute-phase reactant (per-study setting)."""
    visits: tuple[VisitInfo, ...]
    subjects: tuple[str, ...]
    cohort: tuple[str, ...]
    trajectories: tuple[Trajectory, ...]
    responses: tuple[ResponseRate, ...]
    lanes: tuple[Lane, ...]
    biomarkers: tuple[ChangeSeries, ...]
    completeness: Completeness
    strata: tuple[tuple[str, int], ...]
    """Safety strata over the cohort (contract §5 order, zeros included)."""
    safety_events: tuple[SafetyEvent, ...]
    warnings: tuple[str, ...]

    @property
    def visits_after_baseline(self) -> tuple[VisitInfo, ...]:
        baseline = next(v for v in self.visits if v.name == "BL")
        return tuple(v for v in self.visits if v.target_day > baseline.target_day)


__all__ = [
    "Band",
    "ChangeSeries",
    "Completeness",
    "Lane",
    "LaneEvent",
    "ReportData",
    "ResponseRate",
    "SafetyEvent",
    "Trajectory",
    "VisitInfo",
]
