"""SVG building blocks for the report's charts: escaping, scales, ticks, shapes (pure strings).

The charts are inline SVG generated here so the page needs no script, no chart library
and no network at view time. Each chart has a fixed ``viewBox`` and scales to the width
of its block (``WIDTH`` ≈ the text width of an A4 page at 96 px/in). Structural styling
(axes, grid, bands, cells) is by class, defined in the page's stylesheet; data colours
are attributes so a chart keeps them wherever it is shown. Every piece of text is escaped here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

WIDTH = 720
#: Okabe–Ito colours (distinguishable with the common colour-vision deficiencies); yellow left out (too light on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt(x: float) -> str:
    """A coordinate with one decimal, without a trailing ``.0``."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True, slots=True)
class Scale:
    """Linear map of ``[d0, d1]`` onto ``[r0, r1]`` (a degenerate domain maps to the middle)."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]`` (steps of 1, 2, 2.5 or 5 × 10ⁿ)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value < hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def tick_label(value: float) -> str:
    return f"{value:g}"


def svg(chart_id: str, height: float, title: str, description: str, body: Iterable[str]) -> str:
    """An accessible chart: ``role="img"``, ``aria-label`` and ``<title>``/``<desc>`` text alternatives."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{esc(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {fmt(height)}" '
        f'role="img" aria-label="{esc(title)}. {esc(description)}">'
        f"<title>{esc(title)}</title><desc>{esc(description)}</desc>{''.join(body)}</svg>"
    )


def text(x: float, y: float, content: str, cls: str = "label", anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{fmt(x)}" y="{fmt(y)}" class="{cls}" text-anchor="{anchor}"{extra}>{esc(content)}</text>'


def line(x1: float, y1: float, x2: float, y2: float, cls: str) -> str:
    return f'<line x1="{fmt(x1)}" y1="{fmt(y1)}" x2="{fmt(x2)}" y2="{fmt(y2)}" class="{cls}"/>'


def rect(x: float, y: float, w: float, h: float, cls: str, extra: str = "", inner: str = "") -> str:
    tag = f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{fmt(max(w, 0))}" height="{fmt(max(h, 0))}" class="{cls}"{extra}'
    return f"{tag}>{inner}</rect>" if inner else f"{tag}/>"


def tooltip(content: str) -> str:
    """A ``<title>`` child: the browser shows it on hover, screen readers read it."""
    return f"<title>{esc(content)}</title>"


def polyline_path(points: Sequence[Optional[tuple[float, float]]]) -> str:
    """Path data through the points, broken where a point is ``None`` (a gap stays visible)."""
    parts: list[str] = []
    pen_down = False
    for p in points:
        if p is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{fmt(p[0])} {fmt(p[1])}")
        pen_down = True
    return " ".join(parts)


def spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Move label positions apart by at least ``gap`` (keeping their order), within ``[lo, hi]``."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [0.0] * len(ys)
    previous = lo - gap
    for i in order:
        placed[i] = max(ys[i], previous + gap)
        previous = placed[i]
    overflow = previous - hi
    if overflow > 0:  # pushed past the bottom: shift the stack up, never above lo
        for i in order:
            placed[i] = max(lo, placed[i] - overflow)
    return placed


def triangle(x: float, y: float, size: float, fill: str, extra: str = "", inner: str = "") -> str:
    d = f"M{fmt(x)} {fmt(y - size)} L{fmt(x + size)} {fmt(y + size * 0.8)} L{fmt(x - size)} {fmt(y + size * 0.8)} Z"
    return f'<path d="{d}" fill="{fill}"{extra}>{inner}</path>'


def diamond(x: float, y: float, size: float, fill: str, extra: str = "", inner: str = "") -> str:
    d = f"M{fmt(x)} {fmt(y - size)} L{fmt(x + size)} {fmt(y)} L{fmt(x)} {fmt(y + size)} L{fmt(x - size)} {fmt(y)} Z"
    return f'<path d="{d}" fill="{fill}"{extra}>{inner}</path>'


def circle(x: float, y: float, r: float, fill: str, extra: str = "", inner: str = "") -> str:
    return f'<circle cx="{fmt(x)}" cy="{fmt(y)}" r="{fmt(r)}" fill="{fill}"{extra}>{inner}</circle>'


__all__ = [
    "PALETTE",
    "WIDTH",
    "Scale",
    "circle",
    "colour",
    "diamond",
    "esc",
    "fmt",
    "line",
    "nice_ticks",
    "polyline_path",
    "rect",
    "spread",
    "svg",
    "text",
    "tick_label",
    "tooltip",
    "triangle",
]
