"""Cohort summaries per visit (contract §4 "Cohort summaries per visit").

The cohort is the subjects with ≥ 1 completed infusion of the study product. For each
binary output × visit: evaluable subjects, responders, the observed proportion and the
non-responder-imputed proportion (denominator = the whole cohort), each with its exact
Clopper–Pearson 95 % CI (:func:`service.endpoints.statistics.binary_summary`). For each
continuous output × visit: n, mean, SD, median, min, max of the value and, for the scores
and the summarised inputs (:data:`.catalog.INPUT_ENDPOINTS`), of the change from baseline
(visit − BL, exact, for subjects with both) plus how many went down, up or stayed.
Statistics run on the unrounded values; a change output (``pain-change``,
``haq-di-change``) is itself a change, so only its value is summarised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Context, Decimal
from typing import Optional

from schemas.trial import Visit
from service.derivation.catalog import INPUT_ENDPOINTS, OUTPUTS, Summary
from service.derivation.engine import Rules, SubjectOutputs
from service.derivation.visits import Schedule
from service.endpoints.statistics import BinarySummary, ContinuousSummary, binary_summary, continuous_summary

_EXACT = Context(prec=60)


@dataclass(frozen=True, slots=True)
class BinaryRow:
    code: str
    visit: Visit
    summary: BinarySummary


@dataclass(frozen=True, slots=True)
class ChangeCounts:
    decreased: int
    increased: int
    unchanged: int


@dataclass(frozen=True, slots=True)
class ContinuousRow:
    code: str
    visit: Visit
    unit: str
    cohort: int
    value: ContinuousSummary
    change: Optional[ContinuousSummary]
    """``None`` for BL, before BL, and for outputs that are changes themselves."""
    directions: Optional[ChangeCounts]


@dataclass(frozen=True, slots=True)
class Summaries:
    cohort: tuple[str, ...]
    """Subject codes of the cohort."""
    binary: tuple[BinaryRow, ...]
    continuous: tuple[ContinuousRow, ...]
    periods: dict[str, tuple[date, date]]
    """visit name → (first, last) calendar date of the cohort's windows for that visit."""


def _changes(pairs: Sequence[tuple[Decimal, Decimal]]) -> tuple[list[Decimal], ChangeCounts]:
    diffs = [_EXACT.subtract(v, b) for b, v in pairs]
    return diffs, ChangeCounts(sum(d < 0 for d in diffs), sum(d > 0 for d in diffs), sum(d == 0 for d in diffs))


def _continuous(code: str, unit: str, visit: Visit, cohort: int, values: dict[str, Decimal], baseline: Optional[dict[str, Decimal]]) -> ContinuousRow:
    change, directions = None, None
    if baseline is not None:
        diffs, directions = _changes([(baseline[s], v) for s, v in sorted(values.items()) if s in baseline])
        change = continuous_summary(diffs)
    return ContinuousRow(code, visit, unit, cohort, continuous_summary(values.values()), change, directions)


def summarise(results: Sequence[SubjectOutputs], schedule: Schedule, rules: Rules) -> Summaries:
    """Every summary of contract §4 over the cohort (module docstring)."""
    cohort = [r for r in results if r.subject.treated]
    n = len(cohort)
    binary: list[BinaryRow] = []
    continuous: list[ContinuousRow] = []
    by_visit = [{v.visit.name: v for v in r.visits} for r in cohort]
    codes = [o for o in OUTPUTS if o.code in rules.codes]
    for visit in schedule.visits:
        after = schedule.after_baseline(visit)
        for out in codes:
            if out.change and not after:
                continue
            got = {r.subject.patient: vo[visit.name].outputs.get(out.code) for r, vo in zip(cohort, by_visit)}
            computed = {s: o.value for s, o in got.items() if o is not None and o.value is not None}
            if out.summary is Summary.BINARY:
                binary.append(BinaryRow(out.code, visit, binary_summary(sum(1 for v in computed.values() if v is True), len(computed), n)))
            elif out.summary is Summary.CONTINUOUS:
                base = None
                if after and not out.change:
                    base_outputs = {r.subject.patient: vo[schedule.baseline.name].outputs.get(out.code) for r, vo in zip(cohort, by_visit)}
                    base = {s: o.value for s, o in base_outputs.items() if o is not None and o.value is not None}
                continuous.append(_continuous(out.code, out.unit or "1", visit, n, computed, base))  # type: ignore[arg-type]
        for endpoint in INPUT_ENDPOINTS:
            values = {
                r.subject.patient: s.value.canon["pg_ml"]
                for r, vo in zip(cohort, by_visit)
                if (s := vo[visit.name].selected.get(endpoint.measure)) is not None
            }
            base = None
            if after:
                base = {
                    r.subject.patient: s.value.canon["pg_ml"]
                    for r, vo in zip(cohort, by_visit)
                    if (s := vo[schedule.baseline.name].selected.get(endpoint.measure)) is not None
                }
            continuous.append(_continuous(endpoint.code, endpoint.unit, visit, n, values, base))  # type: ignore[arg-type]
    periods = {}
    anchors = [r.subject.day0 for r in cohort if r.subject.day0 is not None] or [r.subject.day0 for r in results if r.subject.day0 is not None]
    if anchors:
        for visit in schedule.visits:
            periods[visit.name] = (min(anchors) + timedelta(days=visit.first_day), max(anchors) + timedelta(days=visit.last_day))
    return Summaries(tuple(r.subject.code for r in cohort), tuple(binary), tuple(continuous), periods)


__all__ = ["BinaryRow", "ChangeCounts", "ContinuousRow", "Summaries", "summarise"]
