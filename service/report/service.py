"""Gather a study's report from one derivation — the only step of the report that reads storage.

:func:`report_data` runs :func:`service.derivation.service.derive`, the same load-and-compute
that ``GET /fhir/ResearchStudy/{id}/$endpoints`` runs, and :func:`from_derivation` turns
the result into :class:`~service.report.model.ReportData`. Nothing is recomputed here:
scores, categories, responses, CIs and safety strata are read off the derivation; derived
values are rounded with :func:`service.derivation.outputs.value_element`, exactly as the
``$endpoints`` Observations are, and proportions/CIs to 4 decimals as its MeasureReports
are. The only arithmetic is the per-subject change from baseline of the biomarkers (visit −
BL, exact), which the derivation summarises per cohort but does not list per subject.

The report does not store the outputs (``$endpoints`` does): a page view is a read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Context, Decimal
from typing import Optional

from sqlalchemy import Engine

from service.auth.policy import study_operation
from service.db.engine import read_transaction
from service.derivation import queries
from service.derivation.canonical import CONVERTERS
from service.derivation.catalog import BY_CODE
from service.derivation.engine import Output, SubjectOutputs, VisitOutputs
from service.derivation.outputs import value_element
from service.derivation.reading import loads, when
from service.derivation.records import SetAside, SubjectRecord
from service.derivation.safety import STRATA, AdverseEventRow
from service.derivation.service import Derivation, derive
from service.derivation.visits import place
from service.endpoints.categories import CDAI_CUTPOINTS, DAS28_DEFAULT, SDAI_CUTPOINTS, Das28Cutpoints
from service.endpoints.rounding import round_half_away
from service.endpoints.statistics import ConfidenceInterval
from service.report.model import (
    Band,
    ChangeSeries,
    Completeness,
    Lane,
    LaneEvent,
    ReportData,
    ResponseRate,
    SafetyEvent,
    Trajectory,
    VisitInfo,
)

_EXACT = Context(prec=60)
_PLACES = 4
"""Decimals of proportions and CI limits, as in the ``$endpoints`` MeasureReports."""
RESPONSE_CODES = ("acr20", "acr50", "acr70")
MEASURE_LABELS: dict[str, str] = {
    "tjc28": "TJC28", "sjc28": "SJC28", "ptga": "PtGA", "ega": "EGA", "pain": "Pain", "haq_di": "HAQ-DI",
    "esr": "ESR", "crp": "CRP", "il10": "IL-10", "tnf_alpha": "TNF-α", "il17a": "IL-17A", "treg_pct": "Treg %", "th17_pct": "Th17 %",
}
"""Display labels of the input measures the derivation reads (keys of its converters)."""
#: Biomarkers with a per-subject change chart: (code, label, input measure, canonical key, unit).
BIOMARKER_INPUTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("esr", "ESR", "esr", "mm_h", "mm/h"),
    ("crp", "CRP", "crp", "mg_l", "mg/L"),
    ("il10", "IL-10", "il10", "pg_ml", "pg/mL"),
    ("il17a", "IL-17A", "il17a", "pg_ml", "pg/mL"),
    ("tnf-alpha", "TNF-α", "tnf_alpha", "pg_ml", "pg/mL"),
)
RATIO_CODE = "treg-th17-ratio"
#: The resource types whose content the page shows (besides the ResearchStudy): subjects,
#: observed and derived values, infusion dates, adverse events; a caller needs ``r`` on each.
REPORT_READS = ("ResearchSubject", "Observation", "MedicationAdministration", "AdverseEvent")
_SCORE_LABELS = {"das28-esr": "DAS28-ESR", "das28-crp": "DAS28-CRP", "sdai": "SDAI", "cdai": "CDAI"}


# --- bands ------------------------------------------------------------------------------------------


def das28_bands(cuts: Das28Cutpoints) -> tuple[Band, ...]:
    """DAS28 bands: remission < first cut, low ≤, moderate ≤, high above (contract §4)."""
    return (
        Band("remission", cuts.remission_below, False),
        Band("low", cuts.low_max, True),
        Band("moderate", cuts.moderate_max, True),
        Band("high", None, False),
    )


def inclusive_bands(bounds: tuple[Decimal, Decimal, Decimal]) -> tuple[Band, ...]:
    """SDAI/CDAI bands: each bound belongs to the band below it (contract §4)."""
    remission, low, moderate = bounds
    return (Band("remission", remission, True), Band("low", low, True), Band("moderate", moderate, True), Band("high", None, False))


# --- helpers ----------------------------------------------------------------------------------------


def reported(output: Optional[Output]) -> Optional[Decimal]:
    """The value of a numeric output as the derived Observation carries it (rounded), or ``None``."""
    if output is None or output.value is None:
        return None
    name, element = value_element(output)
    assert name == "valueQuantity", f"{output.code} is not numeric"
    return element["value"]  # type: ignore[no-any-return]


def _rounded_ci(ci: Optional[ConfidenceInterval]) -> Optional[tuple[Decimal, Decimal]]:
    return None if ci is None else (round_half_away(ci.lower, _PLACES), round_half_away(ci.upper, _PLACES))


def _rounded(value: Optional[Decimal]) -> Optional[Decimal]:
    return None if value is None else round_half_away(value, _PLACES)


def _category(vo: VisitOutputs, code: str) -> Optional[str]:
    output = vo.outputs.get(f"{code}-activity")
    return None if output is None or output.value is None else str(output.value)


def _input(vo: VisitOutputs, measure: str, key: str) -> Optional[Decimal]:
    selected = vo.selected.get(measure)
    return None if selected is None else Decimal(selected.value.canon[key])


# --- the parts of the report ------------------------------------------------------------------------


def trajectories(d: Derivation) -> tuple[Trajectory, ...]:
    """DAS28-ESR, DAS28-CRP, SDAI, CDAI (with their bands) and pain per subject over the visits."""
    bands = {
        "das28-esr": das28_bands(DAS28_DEFAULT),
        "das28-crp": das28_bands(d.rules.crp_cutpoints),
        "sdai": inclusive_bands(SDAI_CUTPOINTS),
        "cdai": inclusive_bands(CDAI_CUTPOINTS),
    }
    out = []
    for code, label in _SCORE_LABELS.items():
        out.append(Trajectory(
            code=code,
            label=label,
            unit="score",
            bands=bands[code],
            scale_max=None,
            values={r.subject.code: tuple(reported(vo.outputs.get(code)) for vo in r.visits) for r in d.results},
            categories={r.subject.code: tuple(_category(vo, code) for vo in r.visits) for r in d.results},
            source=f"derived output {code}, rounded to {BY_CODE[code].decimals} decimals as in $endpoints",
        ))
    out.append(Trajectory(
        code="pain",
        label="Pain",
        unit="mm",
        bands=(),
        scale_max=Decimal(100),
        values={r.subject.code: tuple(_input(vo, "pain", "mm") for vo in r.visits) for r in d.results},
        categories={},
        source="patient pain input selected for the visit, on the 0–100 mm scale",
    ))
    return tuple(out)


def responses(d: Derivation) -> tuple[ResponseRate, ...]:
    """ACR20/50/70 per visit: the derivation's cohort summaries, rounded like its MeasureReports."""
    return tuple(
        ResponseRate(
            code=row.code,
            label=row.code.upper(),
            visit=row.visit.name,
            responders=row.summary.responders,
            evaluable=row.summary.evaluable,
            cohort=row.summary.cohort,
            proportion=_rounded(row.summary.proportion),
            ci=_rounded_ci(row.summary.ci),
            proportion_nri=_rounded(row.summary.proportion_nri),
            ci_nri=_rounded_ci(row.summary.ci_nri),
        )
        for row in d.summaries.binary
        if row.code in RESPONSE_CODES
    )


def _ae_day(event: AdverseEventRow, subject: Optional[SubjectRecord]) -> tuple[Optional[int], Optional[str]]:
    """(study day of the onset, why there is none)."""
    if subject is None or subject.day0 is None:
        return None, "day 0 of the subject is unknown"
    onset = when(event.onset, "onset")
    if isinstance(onset, str):
        return None, onset
    return (onset.day - subject.day0).days, None


def _lane(r: SubjectOutputs, events: Sequence[AdverseEventRow]) -> Lane:
    subject = r.subject
    placed: list[LaneEvent] = []
    unplaced: list[str] = []
    if subject.day0 is not None:
        for n, infusion in enumerate(subject.infusions, start=1):
            placed.append(LaneEvent((infusion.day - subject.day0).days, "infusion", f"infusion {n}", f"started {infusion.start}"))
    for vo in r.visits:
        days = sorted({s.study_day for s in vo.selected.values() if s.study_day is not None})
        if vo.selected and not days:
            unplaced.append(f"visit {vo.visit.name}: assigned by encounter, no study day (day 0 unknown)")
        for day in days:
            measured = sum(1 for s in vo.selected.values() if s.study_day == day)
            placed.append(LaneEvent(day, "visit", vo.visit.name, f"{measured} input value(s) measured on study day {day}"))
    for e in events:
        onset_day, why = _ae_day(e, subject)
        term = e.term or e.ref
        if onset_day is None:
            unplaced.append(f"adverse event {term}: {why}")
            continue
        detail = f"{e.severity or 'severity not given'}, {'serious' if e.serious else 'non-serious'}, onset {e.onset}"
        placed.append(LaneEvent(onset_day, "adverse-event", term, detail, e.severity, e.serious))
    placed.sort(key=lambda ev: (ev.day, ev.kind, ev.label))
    return Lane(subject.code, subject.treated, tuple(placed), tuple(unplaced))


def lanes(d: Derivation) -> tuple[Lane, ...]:
    """One swimmer lane per subject: infusions, visits (days with selected inputs), adverse events."""
    by_patient: dict[Optional[str], list[AdverseEventRow]] = defaultdict(list)
    for e in d.safety.events:
        by_patient[e.patient].append(e)
    return tuple(_lane(r, by_patient.get(r.subject.patient, [])) for r in d.results)


def _input_change(code: str, label: str, measure: str, key: str, unit: str, results: Sequence[SubjectOutputs]) -> ChangeSeries:
    baseline: dict[str, Optional[Decimal]] = {}
    changes: dict[str, tuple[Optional[Decimal], ...]] = {}
    for r in results:
        bl = _input(r.visits[0], measure, key) if r.visits else None
        baseline[r.subject.code] = bl
        after = [_input(vo, measure, key) for vo in r.visits[1:]]
        changes[r.subject.code] = tuple(None if bl is None or v is None else _EXACT.subtract(v, bl) for v in after)
    return ChangeSeries(code, label, unit, baseline, changes, f"{label} input selected for each visit, in {unit}; change = visit − BL")


def _ratio_change(results: Sequence[SubjectOutputs]) -> ChangeSeries:
    decimals = BY_CODE[RATIO_CODE].decimals or 0
    baseline: dict[str, Optional[Decimal]] = {}
    changes: dict[str, tuple[Optional[Decimal], ...]] = {}
    for r in results:
        bl = r.visits[0].outputs.get(RATIO_CODE) if r.visits else None
        baseline[r.subject.code] = reported(bl)
        values = [vo.outputs.get(RATIO_CODE) for vo in r.visits[1:]]
        changes[r.subject.code] = tuple(
            round_half_away(_EXACT.subtract(v.value, bl.value), decimals)  # type: ignore[arg-type]
            if bl is not None and bl.value is not None and v is not None and v.value is not None
            else None
            for v in values
        )
    return ChangeSeries(
        RATIO_CODE, "Treg/Th17", "ratio", baseline, changes,
        f"derived output {RATIO_CODE}; change = visit − BL on the unrounded ratios, rounded to {decimals} decimals",
    )


def biomarkers(d: Derivation) -> tuple[ChangeSeries, ...]:
    """ESR, CRP, IL-10, IL-17A, TNF-α and Treg/Th17: baseline and change per subject.

    The schedule is ordered by target day and its baseline comes first (contract §3: every
    schedule has ``BL``, and no visit before it carries change endpoints)."""
    assert not d.results or d.results[0].visits[0].visit.name == d.schedule.baseline.name, "baseline must be the first visit"
    series = [_input_change(*spec, d.results) for spec in BIOMARKER_INPUTS]
    series.append(_ratio_change(d.results))
    return tuple(series)


def completeness(d: Derivation) -> Completeness:
    """Per subject × visit × input measure: selected, set aside (placed as the derivation places it), or missing."""
    measures = tuple(CONVERTERS)
    aside: dict[str, list[SetAside]] = defaultdict(list)
    for s in d.data.set_aside:
        aside[s.patient or ""].append(s)
    cells: dict[tuple[str, str], tuple[str, ...]] = {}
    for r in d.results:
        set_aside: set[tuple[str, str]] = set()
        for s in aside.get(r.subject.patient, ()):
            where = place(s.day, s.encounter, r.subject.day0, d.schedule, d.data.encounter_visits)
            if where.visit is not None and s.measure is not None:
                set_aside.add((where.visit.name, s.measure))
        for vo in r.visits:
            present = {"haq_di" if m == "haq_di_qr" else m for m in vo.selected}
            cells[(r.subject.code, vo.visit.name)] = tuple(
                "present" if m in present else "set aside" if (vo.visit.name, m) in set_aside else "missing" for m in measures
            )
    return Completeness(tuple((m, MEASURE_LABELS.get(m, m)) for m in measures), cells)


def safety_events(d: Derivation) -> tuple[SafetyEvent, ...]:
    """Every adverse event the derivation read, with its study day."""
    subjects = {s.patient: s for s in d.data.subjects}
    infusions = {
        i.ref: f"infusion {n} (day {(i.day - s.day0).days})" if s.day0 is not None else f"infusion {n}"
        for s in d.data.subjects
        for n, i in enumerate(s.infusions, start=1)
    }
    out = []
    for e in d.safety.events:
        day, _ = _ae_day(e, subjects.get(e.patient or ""))
        out.append(SafetyEvent(
            subject=e.subject or e.patient or "",
            term=e.term or "",
            onset=e.onset or "",
            day=day,
            severity=e.severity or "",
            grade=e.grade,
            serious=e.serious,
            causality=", ".join(e.causality),
            related=e.related,
            outcome=e.outcome or "",
            infusion=infusions.get(e.infusion, e.infusion) if e.infusion else "",
            counted=e.actual,
        ))
    return tuple(out)


def _notes(d: Derivation, limit: int = 20) -> tuple[str, ...]:
    notes = list(d.data.warnings)
    for what, items in (
        ("input value set aside", [f"{s.ref}: {s.reason}" for s in d.data.set_aside]),
        ("usable value placed on no visit", [f"{ref}: {why}" for r in d.results for ref, why in r.unused]),
    ):
        notes.extend(f"{what}: {text}" for text in items[:limit])
        if len(items) > limit:
            notes.append(f"… and {len(items) - limit} more ({what}); the full list is in GET /api/studies/{d.data.study.code}/endpoints")
    return tuple(notes)


def from_derivation(d: Derivation, title: Optional[str] = None) -> ReportData:
    """The report of a computed derivation (pure: no storage, no clock)."""
    study = d.data.study
    swimmer = lanes(d)
    unplaced = tuple(f"not in the swimmer plot, {lane.subject}: {why}" for lane in swimmer for why in lane.unplaced)
    return ReportData(
        study_code=study.code,
        study_id=study.resource_id,
        title=title,
        schedule_source=study.schedule_source,
        reactant=d.rules.reactant.value,
        visits=tuple(VisitInfo(v.name, v.target_day) for v in d.schedule.visits),
        subjects=tuple(r.subject.code for r in d.results),
        cohort=d.summaries.cohort,
        trajectories=trajectories(d),
        responses=responses(d),
        lanes=swimmer,
        biomarkers=biomarkers(d),
        completeness=completeness(d),
        strata=tuple((k, d.safety.study[k]) for k in STRATA),
        safety_events=safety_events(d),
        warnings=_notes(d) + unplaced,
    )


def _title(engine: Engine, study_id: str) -> Optional[str]:
    with read_transaction(engine) as conn:
        rows = list(queries.by_ids(conn, "ResearchStudy", [study_id]))
    title = loads(rows[0].content).get("title") if rows else None
    return title if isinstance(title, str) else None


def report_data(engine: Engine, study_id: str) -> ReportData:
    """Derive the study and gather its report: 404 (FhirError) when the study does not exist
    or the caller may not see it, 403 when the caller's scopes do not allow reading what the
    page shows (:data:`REPORT_READS`; :func:`service.auth.policy.study_operation`, as ``$endpoints`` does)."""
    with study_operation(study_id, REPORT_READS, engine=engine):
        derivation = derive(engine, study_id)
        title = _title(engine, study_id)
    return from_derivation(derivation, title)


__all__ = [
    "BIOMARKER_INPUTS",
    "MEASURE_LABELS",
    "RESPONSE_CODES",
    "biomarkers",
    "completeness",
    "das28_bands",
    "from_derivation",
    "inclusive_bands",
    "lanes",
    "report_data",
    "responses",
    "safety_events",
    "trajectories",
]
