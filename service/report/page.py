"""The report's blocks and its HTML page (pure: :class:`~service.report.model.ReportData` in, text out).

A :class:`Block` is one chart (or table-only section) with its caption and its
:class:`~service.report.tables.Table`; the page renders each block as a ``<section>``
holding a ``<figure>`` (the SVG and its ``<figcaption>``), a "download data (CSV)" link to
``report/{block id}.csv`` (relative to the page, so it works behind any prefix) and the
table with the numbers. The page is self-contained: inline CSS (package data
``static/report.css``), inline SVG, no script, no external resource — it works offline
and prints to A4 (one block per printed block, no chart cut across pages).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources
from string import Template
from typing import Optional
from urllib.parse import quote

from service.report.charts import band_rule, change_chart, completeness_grid, response_chart, swimmer_chart, trajectory_chart
from service.report.model import ReportData
from service.report.svg import esc
from service.report.tables import (
    Table,
    adverse_event_table,
    change_table,
    completeness_table,
    response_table,
    strata_table,
    swimmer_table,
    trajectory_table,
)


@dataclass(frozen=True, slots=True)
class Block:
    """One section of the report; ``id`` names its CSV (``report/{id}.csv``) and its anchor."""

    id: str
    title: str
    caption: str
    table: Table
    chart: Optional[Callable[[], str]] = None
    """Renders the SVG (called for the page only, not for a CSV download)."""


def blocks(data: ReportData) -> tuple[Block, ...]:
    """Every block of the report, in page order."""
    visits, after = data.visits, data.visits_after_baseline
    out: list[Block] = []
    for t in data.trajectories:
        shading = f" Shaded bands: activity categories ({band_rule(t.bands)})." if t.bands else ""
        out.append(Block(
            t.code, f"{t.label} per subject",
            f"{t.label} ({t.unit}) of each subject at each visit — {t.source}.{shading} "
            "A break in a line is a visit without a value; hover a point for its value.",
            trajectory_table(t, visits), partial(trajectory_chart, t, visits),
        ))
    cohort = len(data.cohort)
    out.append(Block(
        "acr-response", "ACR20/50/70 response rates per visit",
        "Bars: proportion of evaluable subjects meeting ACR20, ACR50 and ACR70 against baseline, labelled responders/evaluable; "
        f"whiskers: exact (Clopper–Pearson) 95 % confidence intervals. The table adds the non-responder-imputed (NRI) proportion "
        f"over the whole cohort ({cohort} subject(s) with ≥ 1 completed infusion). Acute-phase reactant: {data.reactant.upper()}. "
        "Proportions and limits are rounded to 4 decimals as in the $endpoints MeasureReports; n/e = nobody evaluable.",
        response_table(data), partial(response_chart, data.responses, after),
    ))
    out.append(Block(
        "swimmer", "Infusions, visits and adverse events per subject",
        "One lane per subject on the study-day axis (day 0 = start of the first completed infusion): infusions ▲, days with "
        "measured inputs ●, adverse events ◆ coloured by severity (black outline: serious).",
        swimmer_table(data.lanes), partial(swimmer_chart, data.lanes, visits),
    ))
    for s in data.biomarkers:
        out.append(Block(
            f"{s.code}-change", f"{s.label}: change from baseline",
            f"Change of {s.label} from baseline per subject ({s.source}); 0 at BL for every subject with a baseline value.",
            change_table(s, after), partial(change_chart, s, visits),
        ))
    out.append(Block(
        "completeness", "Data completeness",
        "Each row is a subject at a visit, each column an input measure: filled = a value was selected for the visit; "
        "orange = a value was recognised but set aside (unit or value unusable, contract §2); crossed = no value.",
        completeness_table(data.completeness), partial(completeness_grid, data.completeness, data.subjects, visits),
    ))
    out.append(Block(
        "safety-summary", "Safety summary",
        f"Adverse-event strata over the cohort ({cohort} subject(s)): events counted per stratum, subjects for the first row. "
        "Related = causality certain, probable/likely or possible (WHO-UMC).",
        strata_table(data.strata),
    ))
    out.append(Block(
        "adverse-events", "Adverse events",
        "Every adverse event recorded for the study, with the infusion it followed; potential events (near misses) are listed but not counted.",
        adverse_event_table(data.safety_events),
    ))
    return tuple(out)


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files("service.report").joinpath(name).read_text(encoding="utf-8")


_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _table_html(block: Block) -> str:
    columns, rows = block.table.columns, block.table.rows
    numeric = [all(not row[j] or _NUMBER.fullmatch(row[j]) for row in rows) for j in range(len(columns))]
    head = "".join(f'<th scope="col" data-key="{esc(c.key)}"{_num(numeric[j])}>{esc(c.label)}</th>' for j, c in enumerate(columns))
    body = []
    for row in rows:
        cells = "".join(f"<td{_num(numeric[j])}>{esc(v)}</td>" for j, v in enumerate(row) if j)
        body.append(f'<tr><th scope="row">{esc(row[0])}</th>{cells}</tr>')
    empty = "" if body else f'<tr><td colspan="{len(columns)}">No data.</td></tr>'
    return (
        f'<div class="table-wrap"><table class="numbers" data-block="{esc(block.id)}"><caption>Numbers behind “{esc(block.title)}”</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}{empty}</tbody></table></div>"
    )


def _num(numeric: bool) -> str:
    """Numbers are right-aligned (a column whose every cell is a number or empty)."""
    return ' class="num"' if numeric else ""


def _block_html(block: Block, study_code: str) -> str:
    download = (
        f'<p class="download"><a href="report/{esc(block.id)}.csv" download="{esc(study_code)}-{esc(block.id)}.csv" '
        f'data-csv="{esc(block.id)}">download data (CSV)</a></p>'
    )
    if block.chart is not None:
        figure = f"<figure>{block.chart()}<figcaption>{esc(block.caption)}</figcaption></figure>"
    else:
        figure = f'<p class="caption">{esc(block.caption)}</p>'
    return (
        f'<section class="block" id="block-{esc(block.id)}" data-block="{esc(block.id)}" aria-labelledby="h-{esc(block.id)}">'
        f'<h2 id="h-{esc(block.id)}">{esc(block.title)}</h2>{figure}{download}{_table_html(block)}</section>'
    )


def render_page(data: ReportData, page_blocks: tuple[Block, ...], *, generated: str) -> str:
    """The whole HTML page; ``generated`` is when the derivation ran. Links are relative to the
    page (``/studies/{code}/report``), so they work behind any path prefix."""
    sae = dict(data.strata).get("sae", 0)
    ae = dict(data.strata).get("ae", 0)
    with_ae = dict(data.strata).get("subjects-with-ae", 0)
    endpoints = f"../../fhir/ResearchStudy/{quote(data.study_id, safe='')}/$endpoints"
    api = f"../../api/studies/{quote(data.study_code, safe='')}/endpoints"
    title = f"Study report — {data.study_code}"
    header = (
        f"<header><h1>{esc(title)}</h1>"
        + (f'<p class="study-title">{esc(data.title)}</p>' if data.title else "")
        + '<dl class="facts">'
        f"<dt>Cohort</dt><dd>{len(data.cohort)} of {len(data.subjects)} subject(s) with ≥ 1 completed infusion</dd>"
        f"<dt>Visits</dt><dd>{esc(', '.join(v.name for v in data.visits))} (schedule: {esc(data.schedule_source)})</dd>"
        f"<dt>Adverse events</dt><dd>{ae} in {with_ae} subject(s); {sae} serious</dd>"
        f"<dt>Derived</dt><dd>{esc(generated)}</dd></dl>"
        '<p class="provenance">Every number on this page comes from the same derivation as '
        f'<a href="{esc(endpoints)}">$endpoints</a> (also as <a href="{esc(api)}">JSON</a>), run when the page was requested; '
        "derived values are shown as reported there. Each block links its numbers as CSV.</p></header>"
    )
    nav = '<nav aria-label="Contents"><ol>' + "".join(f'<li><a href="#block-{esc(b.id)}">{esc(b.title)}</a></li>' for b in page_blocks) + "</ol></nav>"
    notes = ""
    if data.warnings:
        notes = '<section class="notes" id="notes"><h2>Notes from the derivation</h2><ul>' + "".join(f"<li>{esc(w)}</li>" for w in data.warnings) + "</ul></section>"
    body = header + nav + "<main>" + "".join(_block_html(b, data.study_code) for b in page_blocks) + notes + "</main>"
    return Template(_asset("templates/report.html")).substitute(title=esc(title), css=_asset("static/report.css"), body=body)


__all__ = ["Block", "blocks", "render_page"]
