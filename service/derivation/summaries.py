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
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Context, Decimal
from typing import Optional

from schemas.trial import Visit
from service.derivation.catalog import INPUT_ENDPOINTS, OUTPUTS, Summary
from service.derivation.engine import Rules, SubjectOutputs
from service.derivation.visits import Schedule
from service.endpoints.statistics import BinarySummary, ContinuousSummary, binary_summary, continuous_summary

_EXACT = Context(prec=60)
_ZERO = Decimal(0)


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


def _directions(diffs: Sequence[Decimal]) -> ChangeCounts:
    decreased, increased = sum(map(_ZERO.__gt__, diffs)), sum(map(_ZERO.__lt__, diffs))
    return ChangeCounts(decreased, increased, len(diffs) - decreased - increased)


@dataclass(slots=True)
class _Values:
    """The non-missing values of one continuous endpoint × visit over the cohort, and the
    changes from baseline of the subjects who also have a baseline value."""

    values: list[Decimal] = field(default_factory=list)
    changes: list[Decimal] = field(default_factory=list)


def _row(code: str, unit: str, visit: Visit, cohort: int, got: Optional[_Values], with_change: bool) -> ContinuousRow:
    got = got or _Values()
    if not with_change:
        return ContinuousRow(code, visit, unit, cohort, continuous_summary(got.values), None, None)
    return ContinuousRow(code, visit, unit, cohort, continuous_summary(got.values), continuous_summary(got.changes), _directions(got.changes))


def _collect(cohort: Sequence[SubjectOutputs], schedule: Schedule, binary: set[str], continuous: set[str], changed: set[str]) -> tuple[
    dict[tuple[str, str], tuple[int, int]], dict[tuple[str, str], _Values]
]:
    """One pass over the cohort's outputs: (evaluable, responders) per binary output × visit,
    values (and changes from BL for the codes in ``changed``) per continuous one × visit."""
    counts = {v.name: defaultdict(lambda: [0, 0]) for v in schedule.visits}
    found = {v.name: defaultdict(_Values) for v in schedule.visits}
    baseline = schedule.baseline
    inputs = [(e.code, e.measure) for e in INPUT_ENDPOINTS]
    for r in cohort:
        base: dict[str, Decimal] = {}
        for vo in r.visits:
            visit = vo.visit
            is_baseline = visit is baseline or visit.name == baseline.name
            with_change = schedule.after_baseline(visit)
            visit_counts, visit_found = counts[visit.name], found[visit.name]

            def add(code: str, value: Decimal) -> None:
                acc = visit_found[code]
                acc.values.append(value)
                if is_baseline:
                    base[code] = value
                elif with_change and code in changed and code in base:
                    acc.changes.append(_EXACT.subtract(value, base[code]))

            for code, o in vo.outputs.items():
                value = o.value
                if value is None:
                    continue
                if code in binary:
                    pair = visit_counts[code]
                    pair[0] += 1
                    pair[1] += value is True
                elif code in continuous:
                    add(code, value)  # type: ignore[arg-type]
            for code, measure in inputs:
                s = vo.selected.get(measure)
                if s is not None:
                    add(code, s.value.canon["pg_ml"])  # type: ignore[arg-type]
    return (
        {(visit, code): (c[0], c[1]) for visit, by_code in counts.items() for code, c in by_code.items()},
        {(visit, code): v for visit, by_code in found.items() for code, v in by_code.items()},
    )


def summarise(results: Sequence[SubjectOutputs], schedule: Schedule, rules: Rules) -> Summaries:
    """Every summary of contract §4 over the cohort (module docstring), in one pass over
    the outputs; rows in schedule order, then output order (binary and continuous apart)."""
    cohort = [r for r in results if r.subject.treated]
    n = len(cohort)
    codes = [o for o in OUTPUTS if o.code in rules.codes]
    binary_codes = {o.code for o in codes if o.summary is Summary.BINARY}
    continuous_codes = {o.code for o in codes if o.summary is Summary.CONTINUOUS} | {e.code for e in INPUT_ENDPOINTS}
    changed = {o.code for o in codes if o.summary is Summary.CONTINUOUS and not o.change} | {e.code for e in INPUT_ENDPOINTS}
    counts, found = _collect(cohort, schedule, binary_codes, continuous_codes, changed)
    binary: list[BinaryRow] = []
    continuous: list[ContinuousRow] = []
    for visit in schedule.visits:
        after = schedule.after_baseline(visit)
        for out in codes:
            if out.change and not after:
                continue
            key = (visit.name, out.code)
            if out.summary is Summary.BINARY:
                evaluable, responders = counts.get(key, (0, 0))
                binary.append(BinaryRow(out.code, visit, binary_summary(responders, evaluable, n)))
            elif out.summary is Summary.CONTINUOUS:
                continuous.append(_row(out.code, out.unit or "1", visit, n, found.get(key), after and not out.change))
        for endpoint in INPUT_ENDPOINTS:
            continuous.append(_row(endpoint.code, endpoint.unit, visit, n, found.get((visit.name, endpoint.code)), after))
    periods = {}
    anchors = [r.subject.day0 for r in cohort if r.subject.day0 is not None] or [r.subject.day0 for r in results if r.subject.day0 is not None]
    if anchors:
        first, last = min(anchors), max(anchors)
        for visit in schedule.visits:
            periods[visit.name] = (first + timedelta(days=visit.first_day), last + timedelta(days=visit.last_day))
    return Summaries(tuple(r.subject.code for r in cohort), tuple(binary), tuple(continuous), periods)


__all__ = ["BinaryRow", "ChangeCounts", "ContinuousRow", "Summaries", "summarise"]
