"""The numbers behind each block of the report, as tables (pure).

One :class:`Table` per block serves both the HTML table under the chart and the block's
CSV download (:meth:`Table.to_csv`), so the page and the CSV cannot disagree. Cells are
strings formatted once here: numbers as reported by the derivation (``Decimal`` in fixed
notation, never an exponent), empty for a value that was not computed or not measured.
CSV headers are the column keys (stable, machine-friendly); the page shows the labels.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from service.report.model import ChangeSeries, Completeness, Lane, ReportData, SafetyEvent, Trajectory, VisitInfo

Cell = Union[str, int, Decimal, bool, None]

STRATUM_LABELS: dict[str, str] = {
    "subjects-with-ae": "Subjects with ≥ 1 adverse event",
    "ae": "Adverse events",
    "sae": "Serious adverse events",
    "severity-mild": "Severity: mild",
    "severity-moderate": "Severity: moderate",
    "severity-severe": "Severity: severe",
    **{f"grade-{g}": f"CTCAE grade {g}" for g in range(1, 6)},
    "related": "Related (certain, probable/likely, possible)",
    "not-related": "Not related",
    "resolved": "Outcome: resolved",
    "recovering": "Outcome: recovering",
    "ongoing": "Outcome: ongoing",
    "resolvedWithSequelae": "Outcome: resolved with sequelae",
    "fatal": "Outcome: fatal",
    "unknown": "Outcome: unknown",
}


def cell(value: Cell) -> str:
    """A value as the page and the CSV show it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    """CSV header."""
    label: str
    """Header on the page."""


@dataclass(frozen=True, slots=True)
class Table:
    """A block's numbers; the first column names the row (a row header on the page)."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in self.columns])
        writer.writerows(self.rows)
        return buffer.getvalue()


def _table(columns: list[tuple[str, str]], rows: list[list[Cell]]) -> Table:
    return Table(tuple(Column(k, label) for k, label in columns), tuple(tuple(cell(v) for v in row) for row in rows))


def trajectory_table(t: Trajectory, visits: tuple[VisitInfo, ...]) -> Table:
    """Subject × visit values of one trajectory chart."""
    columns = [("subject", "Subject")] + [(v.name, v.name) for v in visits]
    return _table(columns, [[subject, *values] for subject, values in t.values.items()])


def response_table(data: ReportData) -> Table:
    """ACR20/50/70 per visit: observed and non-responder-imputed proportions with exact 95 % CIs."""
    columns = [
        ("visit", "Visit"), ("endpoint", "Endpoint"), ("responders", "Responders"), ("evaluable", "Evaluable"), ("cohort", "Cohort"),
        ("proportion", "Proportion"), ("ci95_lower", "95 % CI lower"), ("ci95_upper", "95 % CI upper"),
        ("proportion_nri", "Proportion (NRI)"), ("ci95_nri_lower", "NRI 95 % CI lower"), ("ci95_nri_upper", "NRI 95 % CI upper"),
    ]
    rows: list[list[Cell]] = []
    for r in data.responses:
        ci = r.ci or (None, None)
        ci_nri = r.ci_nri or (None, None)
        rows.append([r.visit, r.label, r.responders, r.evaluable, r.cohort, r.proportion, *ci, r.proportion_nri, *ci_nri])
    return _table(columns, rows)


def swimmer_table(lanes: tuple[Lane, ...]) -> Table:
    """Every marker of the swimmer plot: subject, study day, kind, label, detail."""
    columns = [("subject", "Subject"), ("study_day", "Study day"), ("event", "Event"), ("label", "What"), ("detail", "Detail")]
    rows: list[list[Cell]] = [[lane.subject, e.day, e.kind, e.label, e.detail] for lane in lanes for e in lane.events]
    return _table(columns, rows)


def change_table(series: ChangeSeries, visits_after: tuple[VisitInfo, ...]) -> Table:
    """Per subject: the baseline value and the change from baseline at each later visit."""
    columns = [("subject", "Subject"), ("baseline", f"BL ({series.unit})")] + [(f"change_{v.name}", f"Δ {v.name}") for v in visits_after]
    return _table(columns, [[subject, series.baseline[subject], *changes] for subject, changes in series.changes.items()])


def completeness_table(c: Completeness) -> Table:
    """Per subject × visit, each measure's state: present, set aside or missing."""
    columns = [("subject", "Subject"), ("visit", "Visit")] + list(c.measures)
    return _table(columns, [[subject, visit, *states] for (subject, visit), states in c.cells.items()])


def strata_table(strata: tuple[tuple[str, int], ...]) -> Table:
    """The safety strata over the cohort (events, or subjects for ``subjects-with-ae``)."""
    columns = [("stratum", "Stratum"), ("description", "Description"), ("count", "Count")]
    return _table(columns, [[code, STRATUM_LABELS.get(code, code), count] for code, count in strata])


def adverse_event_table(events: tuple[SafetyEvent, ...]) -> Table:
    """Every adverse event read, with what the safety summary took from it."""
    columns = [
        ("subject", "Subject"), ("term", "Event"), ("onset", "Onset"), ("study_day", "Study day"), ("severity", "Severity"),
        ("grade", "CTCAE grade"), ("serious", "Serious"), ("causality", "Causality"), ("related", "Related"),
        ("outcome", "Outcome"), ("infusion", "After infusion"), ("counted", "Counted"),
    ]
    rows: list[list[Cell]] = [
        [e.subject, e.term, e.onset, e.day, e.severity, e.grade, e.serious, e.causality, e.related, e.outcome, e.infusion, e.counted]
        for e in events
    ]
    return _table(columns, rows)


__all__ = [
    "STRATUM_LABELS",
    "Column",
    "Table",
    "adverse_event_table",
    "cell",
    "change_table",
    "completeness_table",
    "response_table",
    "strata_table",
    "swimmer_table",
    "trajectory_table",
]
