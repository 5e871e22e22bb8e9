"""The report's charts as inline SVG (pure: model data in, SVG text out).

- :func:`trajectory_chart` — one measure per subject over the visits, the activity-category
  bands shaded behind the lines (a missing value breaks the line, so gaps show);
- :func:`change_chart` — a biomarker's change from baseline per subject (0 at BL);
- :func:`response_chart` — ACR20/50/70 proportions per visit with exact 95 % CI whiskers,
  each bar labelled responders/evaluable;
- :func:`swimmer_chart` — per subject, infusions (▲), visits (●) and adverse events (◆,
  coloured by severity, outlined when serious) on the study-day axis;
- :func:`completeness_grid` — subject × visit rows, one cell per input measure.

Every chart carries a text alternative (``aria-label``, ``<title>``, ``<desc>``: what is
plotted and the values in words) and per-mark ``<title>`` tooltips; the exact numbers
are in the table under each chart (:mod:`.tables`). The x axis of the visit charts is the
visits' target study day, so the spacing of the visits is true to the schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Optional

from service.report.model import Band, ChangeSeries, Completeness, Lane, ResponseRate, Trajectory, VisitInfo
from service.report.svg import (
    WIDTH,
    Scale,
    circle,
    colour,
    diamond,
    esc,
    fmt,
    line,
    nice_ticks,
    polyline_path,
    rect,
    spread,
    svg,
    text,
    tick_label,
    tooltip,
    triangle,
)
from service.report.tables import cell

RESPONSE_COLOURS = ("#9ecae1", "#4292c6", "#08519c")
SEVERITY_COLOURS = {"mild": "#E69F00", "moderate": "#D55E00", "severe": "#7f1d1d"}
UNKNOWN_SEVERITY = "#777777"
INFUSION_COLOUR = "#0072B2"
VISIT_COLOUR = "#444444"


def band_rule(bands: Sequence[Band]) -> str:
    """The cut-points in words: ``remission < 2.6, low ≤ 3.2, moderate ≤ 5.1, high > 5.1``."""
    parts = []
    previous: Optional[Band] = None
    for band in bands:
        if band.upper is not None:
            parts.append(f"{band.category} {'≤' if band.upper_inclusive else '<'} {band.upper}")
        elif previous is not None and previous.upper is not None:
            parts.append(f"{band.category} {'>' if previous.upper_inclusive else '≥'} {previous.upper}")
        previous = band
    return ", ".join(parts)


# --- line charts (trajectories and changes) ------------------------------------------------------


def _line_chart(
    chart_id: str,
    title: str,
    description: str,
    visits: tuple[VisitInfo, ...],
    series: dict[str, tuple[Optional[Decimal], ...]],
    y_ticks: list[float],
    axis_title: str,
    describe: Callable[[str, int, Decimal], str],
    bands: Sequence[Band] = (),
) -> str:
    height, left, right, top, bottom = 300.0, 56.0, 64.0, 12.0, 40.0
    x = Scale(visits[0].target_day, visits[-1].target_day, left + 14, WIDTH - right - 14)
    y = Scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    body: list[str] = []
    lower = y_ticks[0]
    for band in bands:
        upper = min(float(band.upper), y_ticks[-1]) if band.upper is not None else y_ticks[-1]
        if upper > lower:
            body.append(rect(left, y(upper), WIDTH - right - left, y(lower) - y(upper), f"band band-{band.category}"))
            body.append(text(WIDTH - right - 4, y(upper) + 11, band.category, "band-label", "end"))
        lower = max(lower, upper)
    for tick in y_ticks:
        body.append(line(left, y(tick), WIDTH - right, y(tick), "grid zero" if tick == 0 and y_ticks[0] < 0 else "grid"))
        body.append(text(left - 6, y(tick) + 4, tick_label(tick), "axis", "end"))
    body.append(line(left, height - bottom, WIDTH - right, height - bottom, "axis-line"))
    for v in visits:
        body.append(line(x(v.target_day), height - bottom, x(v.target_day), height - bottom + 4, "axis-line"))
        body.append(text(x(v.target_day), height - bottom + 17, v.name, "axis", "middle"))
    body.append(text(left + (WIDTH - right - left) / 2, height - 6, "visit (at its target study day)", "axis-title", "middle"))
    mid = top + (height - bottom - top) / 2
    body.append(text(14, mid, axis_title, "axis-title", "middle", f' transform="rotate(-90 14 {fmt(mid)})"'))
    ends: list[tuple[str, str, float]] = []
    for i, (subject, values) in enumerate(series.items()):
        c = colour(i)
        points = [None if v is None else (x(visit.target_day), y(float(v))) for visit, v in zip(visits, values)]
        marks = [
            circle(p[0], p[1], 3.5, c, ' class="point"', tooltip(describe(subject, k, v)))  # type: ignore[arg-type]
            for k, (p, v) in enumerate(zip(points, values))
            if p is not None
        ]
        body.append(f'<g class="series" data-subject="{esc(subject)}"><path d="{polyline_path(points)}" stroke="{c}" class="trace"/>{"".join(marks)}</g>')
        last = next((p for p in reversed(points) if p is not None), None)
        if last is not None:
            ends.append((subject, c, last[1]))
    for (subject, c, _), label_y in zip(ends, spread([e[2] for e in ends], 11, top + 4, height - bottom)):
        body.append(text(WIDTH - right + 6, label_y + 4, subject, "end-label", "start", f' fill="{c}"'))
    return svg(chart_id, height, title, description, body)


def _values_in_words(series: dict[str, tuple[Optional[Decimal], ...]], names: Sequence[str], unit: str) -> str:
    words = []
    for subject, values in series.items():
        present = [(name, v) for name, v in zip(names, values) if v is not None]
        if not present:
            words.append(f"{subject}: no value")
        elif len(present) == 1:
            words.append(f"{subject}: {cell(present[0][1])} at {present[0][0]}")
        else:
            (n0, v0), (n1, v1) = present[0], present[-1]
            missing = len(names) - len(present)
            gap = f", {missing} visit(s) without a value" if missing else ""
            words.append(f"{subject}: {cell(v0)} at {n0} to {cell(v1)} at {n1}{gap}")
    return f"Values in {unit}: " + "; ".join(words) + "." if words else "No subjects."


def trajectory_chart(t: Trajectory, visits: tuple[VisitInfo, ...]) -> str:
    """One line per subject over the visits, activity bands shaded (see module docstring)."""
    values = [float(v) for vs in t.values.values() for v in vs if v is not None]
    top = max(values, default=1.0)
    finite = [float(b.upper) for b in t.bands if b.upper is not None]
    if finite:
        top = max(top, finite[-1] * 1.2)
    if t.scale_max is not None:
        top = max(top, float(t.scale_max))
    names = [v.name for v in visits]

    def describe(subject: str, k: int, value: Decimal) -> str:
        category = t.categories.get(subject, ())[k] if t.categories else None
        return f"{subject} · {names[k]}: {cell(value)}" + (f" ({category})" if category else "")

    bands = f" Activity bands: {band_rule(t.bands)}." if t.bands else ""
    description = f"{t.label} of {len(t.values)} subject(s) at {', '.join(names)}. {_values_in_words(t.values, names, t.unit)}{bands}"
    return _line_chart(f"chart-{t.code}", f"{t.label} per subject over the visits", description, visits, t.values,
                       nice_ticks(0, top), f"{t.label} ({t.unit})", describe, t.bands)


def change_chart(s: ChangeSeries, visits: tuple[VisitInfo, ...]) -> str:
    """Change from baseline per subject: 0 at BL for subjects with a baseline value, then visit − BL."""
    series = {subject: (None if s.baseline[subject] is None else Decimal(0), *changes) for subject, changes in s.changes.items()}
    values = [float(v) for vs in series.values() for v in vs if v is not None] or [0.0]
    names = [v.name for v in visits]

    def describe(subject: str, k: int, value: Decimal) -> str:
        if k == 0:
            return f"{subject} · BL: {cell(s.baseline[subject])} {s.unit} (baseline)"
        return f"{subject} · {names[k]}: change {cell(value)} {s.unit} from baseline"

    changes = {subject: vs[1:] for subject, vs in series.items()}
    description = (
        f"Change of {s.label} from baseline for {len(series)} subject(s) at {', '.join(names[1:])}. "
        f"{_values_in_words(changes, names[1:], s.unit)}"
    )
    return _line_chart(f"chart-{s.code}", f"{s.label}: change from baseline per subject", description, visits, series,
                       nice_ticks(min(min(values), 0.0), max(max(values), 0.0)), f"Δ {s.label} ({s.unit})", describe)


# --- response rates -----------------------------------------------------------------------------------


def response_chart(rates: tuple[ResponseRate, ...], visits: tuple[VisitInfo, ...]) -> str:
    """ACR20/50/70 observed proportions (bars) with exact 95 % CIs (whiskers), per visit after BL."""
    height, left, right, top, bottom = 300.0, 56.0, 16.0, 34.0, 40.0
    codes = list(dict.fromkeys(r.code for r in rates))
    labels = {r.code: r.label for r in rates}
    by_key = {(r.code, r.visit): r for r in rates}
    y = Scale(0, 1, height - bottom, top)
    body: list[str] = []
    for tick in (0, 0.25, 0.5, 0.75, 1):
        body.append(line(left, y(tick), WIDTH - right, y(tick), "grid"))
        body.append(text(left - 6, y(tick) + 4, f"{tick * 100:g} %", "axis", "end"))
    mid = top + (height - bottom - top) / 2
    body.append(text(14, mid, "responders among evaluable", "axis-title", "middle", f' transform="rotate(-90 14 {fmt(mid)})"'))
    for k, code in enumerate(codes):
        lx = left + k * 90
        body.append(rect(lx, 8, 12, 12, "legend-swatch", f' fill="{RESPONSE_COLOURS[k % 3]}"'))
        body.append(text(lx + 16, 18, labels[code], "legend"))
    group = (WIDTH - right - left) / max(len(visits), 1)
    bar = group * 0.8 / max(len(codes), 1)
    words = []
    for g, visit in enumerate(visits):
        gx = left + g * group + group * 0.1
        body.append(text(left + g * group + group / 2, height - bottom + 17, visit.name, "axis", "middle"))
        for k, code in enumerate(codes):
            r = by_key.get((code, visit.name))
            bx, cx = gx + k * bar, gx + k * bar + (bar - 3) / 2
            if r is None or r.proportion is None:
                body.append(f'<g class="rate" data-endpoint="{esc(code)}" data-visit="{esc(visit.name)}">'
                            f'{text(cx, y(0) - 4, "n/e", "bar-label", "middle")}{tooltip(f"{labels.get(code, code)} at {visit.name}: no evaluable subject")}</g>')
                words.append(f"{labels.get(code, code)} at {visit.name}: not evaluable")
                continue
            p = float(r.proportion)
            lo, hi = (float(r.ci[0]), float(r.ci[1])) if r.ci else (p, p)
            ratio = f"{r.responders}/{r.evaluable}"
            ci = f"95 % CI {cell(r.ci[0])}–{cell(r.ci[1])}" if r.ci else "no CI"
            tip = f"{r.label} at {visit.name}: {ratio} evaluable responded, proportion {cell(r.proportion)} ({ci}); NRI {r.responders}/{r.cohort}"
            body.append(
                f'<g class="rate" data-endpoint="{esc(code)}" data-visit="{esc(visit.name)}">{tooltip(tip)}'
                + rect(bx, y(p), bar - 3, y(0) - y(p), "bar", f' fill="{RESPONSE_COLOURS[k % 3]}"')
                + line(cx, y(lo), cx, y(hi), "whisker")
                + line(cx - 4, y(lo), cx + 4, y(lo), "whisker")
                + line(cx - 4, y(hi), cx + 4, y(hi), "whisker")
                + text(cx, y(hi) - 4, ratio, "bar-label", "middle")
                + "</g>"
            )
            words.append(f"{r.label} at {visit.name}: {ratio} ({ci})")
    body.append(line(left, y(0), WIDTH - right, y(0), "axis-line"))
    description = "Proportion of evaluable subjects meeting each ACR response, per visit, with exact 95 % confidence intervals. " + "; ".join(words) + "."
    return svg("chart-acr-response", height, "ACR20/50/70 response rates per visit", description, body)


# --- swimmer plot -----------------------------------------------------------------------------------


def _marker(lane: Lane, kind: str, day: int, label: str, detail: str, severity: Optional[str], serious: bool, x: float, cy: float) -> str:
    tip = tooltip(f"{lane.subject} · study day {day}: {label} ({detail})")
    attrs = f' class="marker {kind}" data-kind="{kind}" data-day="{day}"'
    if kind == "infusion":
        return triangle(x, cy - 6, 5, INFUSION_COLOUR, attrs, tip)
    if kind == "visit":
        return circle(x, cy, 3.5, VISIT_COLOUR, attrs, tip)
    fill = SEVERITY_COLOURS.get(severity or "", UNKNOWN_SEVERITY)
    return diamond(x, cy + 7, 5.5, fill, f' class="marker {kind}{" serious" if serious else ""}" data-kind="{kind}" data-day="{day}"', tip)


def swimmer_chart(lanes: tuple[Lane, ...], visits: tuple[VisitInfo, ...]) -> str:
    """Per subject: infusions above the lane, visits on it, adverse events below it."""
    row, left, right, top, bottom = 30.0, 92.0, 16.0, 36.0, 40.0
    height = top + row * max(len(lanes), 1) + bottom
    days = [e.day for lane in lanes for e in lane.events] + [visits[0].target_day, visits[-1].target_day]
    x = Scale(min(days) - 3, max(days) + 3, left, WIDTH - right)
    body: list[str] = []
    legend = [
        (triangle(left + 6, 20, 5, INFUSION_COLOUR), "infusion"),
        (circle(left + 6, 18, 3.5, VISIT_COLOUR), "visit (inputs measured)"),
        *((diamond(left + 6, 18, 5.5, c), f"AE {s}") for s, c in SEVERITY_COLOURS.items()),
        (diamond(left + 6, 18, 5.5, "#ffffff", ' class="serious"'), "serious AE"),
    ]
    offset = 0.0
    for mark, label in legend:
        body.append(f'<g transform="translate({fmt(offset)} 0)">{mark}{text(left + 15, 22, label, "legend")}</g>')
        offset += 22 + len(label) * 6.2
    for v in visits:
        body.append(line(x(v.target_day), top - 4, x(v.target_day), height - bottom, "grid"))
        body.append(text(x(v.target_day), height - bottom + 17, v.name, "axis", "middle"))
    body.append(line(left, height - bottom, WIDTH - right, height - bottom, "axis-line"))
    body.append(text(left + (WIDTH - right - left) / 2, height - 6, "study day (day 0 = first infusion); ticks at the visits' target days", "axis-title", "middle"))
    words = []
    for i, lane in enumerate(lanes):
        cy = top + row * i + row / 2
        name = lane.subject if lane.in_cohort else f"{lane.subject} (not treated)"
        parts = [text(left - 8, cy + 4, name, "lane-label", "end")]
        if lane.events:
            first, last = lane.events[0].day, lane.events[-1].day
            parts.append(line(x(first), cy, x(last), cy, "lane-bar"))
            counts = {k: sum(1 for e in lane.events if e.kind == k) for k in ("infusion", "visit", "adverse-event")}
            words.append(f"{lane.subject}: days {first} to {last}, {counts['infusion']} infusion(s), {counts['visit']} visit day(s), "
                         f"{counts['adverse-event']} adverse event(s)")
        else:
            words.append(f"{lane.subject}: nothing on a study day")
        parts.extend(_marker(lane, e.kind, e.day, e.label, e.detail, e.severity, e.serious, x(e.day), cy) for e in lane.events)
        body.append(f'<g class="lane" data-subject="{esc(lane.subject)}">{"".join(parts)}</g>')
    description = "Swimmer plot of infusions, visits and adverse events per subject by study day. " + "; ".join(words) + "."
    return svg("chart-swimmer", height, "Infusions, visits and adverse events per subject", description, body)


# --- completeness -------------------------------------------------------------------------------------

_STATE_CLASS = {"present": "present", "set aside": "set-aside", "missing": "missing"}


def completeness_grid(c: Completeness, subjects: tuple[str, ...], visits: tuple[VisitInfo, ...]) -> str:
    """Rows subject × visit, one cell per measure: filled = present, orange = set aside, crossed = missing."""
    row, left, right, top = 14.0, 92.0, 8.0, 46.0
    rows = [(s, v.name) for s in subjects for v in visits]
    height = top + row * len(rows) + 8
    col = (WIDTH - left - right) / max(len(c.measures), 1)
    body: list[str] = []
    legend_x = left
    for state, label in (("present", "present"), ("set aside", "set aside (unusable unit or value)"), ("missing", "missing")):
        body.append(rect(legend_x, 6, 12, 10, f"cell {_STATE_CLASS[state]}"))
        if state == "missing":
            body.append(line(legend_x, 16, legend_x + 12, 6, "cross"))
        body.append(text(legend_x + 16, 15, label, "legend"))
        legend_x += 30 + len(label) * 6.2
    for j, (_, label) in enumerate(c.measures):
        body.append(text(left + j * col + col / 2, top - 6, label, "axis", "middle"))
    gaps = {state: 0 for state in _STATE_CLASS}
    for i, (subject, visit) in enumerate(rows):
        cy = top + i * row
        states = c.cells.get((subject, visit), ("missing",) * len(c.measures))
        parts = [text(left - 8, cy + row - 3, f"{subject} {visit}" if visit == visits[0].name else visit, "grid-label", "end")]
        for j, ((measure, label), state) in enumerate(zip(c.measures, states)):
            gaps[state] += 1
            cx = left + j * col
            tip = tooltip(f"{subject} · {visit} · {label}: {state}")
            extra = f' data-measure="{esc(measure)}" data-state="{esc(state)}"'
            parts.append(rect(cx + 1, cy + 1, col - 2, row - 2, f"cell {_STATE_CLASS[state]}", extra, tip))
            if state == "missing":
                parts.append(line(cx + 1, cy + row - 1, cx + col - 1, cy + 1, "cross"))
        body.append(f'<g class="grid-row" data-subject="{esc(subject)}" data-visit="{esc(visit)}">{"".join(parts)}</g>')
        if visit == visits[-1].name:
            body.append(line(left - 40, cy + row, WIDTH - right, cy + row, "subject-sep"))
    description = (
        f"Data completeness: {len(subjects)} subject(s) × {len(visits)} visit(s) × {len(c.measures)} measure(s); "
        f"{gaps['present']} present, {gaps['set aside']} set aside, {gaps['missing']} missing."
    )
    return svg("chart-completeness", height, "Which subject has which measure at which visit", description, body)


__all__ = ["band_rule", "change_chart", "completeness_grid", "response_chart", "swimmer_chart", "trajectory_chart"]
