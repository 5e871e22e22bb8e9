"""Composite disease-activity scores (contract §4; formulas in ra-domain.md §1.2–§1.3).

All scores are returned unrounded as ``Decimal``; rounding for ``valueQuantity`` happens
only at output (:mod:`service.endpoints.rounding`), and categories/responses are decided on
these unrounded values.

Why DAS28 is computed in ``Decimal`` (50 significant digits) rather than ``float``: the
value is exactly rational whenever TJC28 and SJC28 are perfect squares and ESR = 1 mm/h
(DAS28-ESR) or CRP = 0 mg/L (DAS28-CRP); ``Decimal.sqrt``/``Decimal.ln`` are then exact and
the sum is exact, so a cut-point is hit exactly. In float, DAS28-CRP for TJC 16, SJC 0,
CRP 0, PtGA 100 is 4.6000000000000005 and would fall on the wrong side of the 4.6 cut-point.
In every other case the value is irrational (ln of a rational ≠ 1 is transcendental, and
the square-root terms have positive coefficients so they cannot cancel), so it never equals
a decimal cut-point and 50 digits decide the comparison.
"""

from __future__ import annotations

from decimal import Context, Decimal
from functools import lru_cache

from service.endpoints.inputs import Number, count_input, decimal_input, gather
from service.endpoints.result import Computed, NotComputable, Result

_PRECISION = 50
_CTX = Context(prec=_PRECISION)
"""Every score operation runs in this fixed context (50 digits, round-half-even), so a score
never depends on the caller's thread-local decimal context; explicit ``Context`` methods
are also ~5 µs cheaper per call than ``localcontext()``."""

_ZERO = Decimal(0)
_TEN = Decimal(10)
_HUNDRED = Decimal(100)

_W_TJC = Decimal("0.56")
_W_SJC = Decimal("0.28")
_W_LN_ESR = Decimal("0.70")
_W_LN_CRP = Decimal("0.36")
_W_PTGA = Decimal("0.014")
_CRP_CONSTANT = Decimal("0.96")


@lru_cache(maxsize=64)
def _sqrt(count: int) -> Decimal:
    """√count at 50 digits (counts are 0–28, so the cache holds every value)."""
    return _CTX.sqrt(Decimal(count))


@lru_cache(maxsize=65536)
def _ln(argument: Decimal) -> Decimal:
    """ln(argument) at 50 digits, memoised: ESR and CRP take few distinct values, and ln at
    50 digits costs ~120 µs. Equal decimals (28 and 28.0) have identical correctly-rounded
    logarithms, so keying on the value is safe."""
    return _CTX.ln(argument)


def _count(value: object) -> bool:
    """A joint count that needs no checking: an ``int`` (not a bool) in 0–28."""
    return type(value) is int and 0 <= value <= 28  # type: ignore[operator]


def _within(value: object, low: Decimal, high: Decimal | None) -> bool:
    """A ``Decimal`` that needs no checking: finite and in ``[low, high]`` (``high`` None: no upper bound).

    The score functions take this fast path when every input passes (the values the
    derivation feeds them were checked when read); anything else goes through the full
    checks of :mod:`service.endpoints.inputs`, which also word the reason."""
    return type(value) is Decimal and value.is_finite() and low <= value and (high is None or value <= high)  # type: ignore[attr-defined, operator]


_TJC_TERMS = tuple(_CTX.multiply(_W_TJC, _sqrt(n)) for n in range(29))
"""0.56·√TJC28 for every count, each product rounded to 50 digits exactly as computed inline."""
_SJC_TERMS = tuple(_CTX.multiply(_W_SJC, _sqrt(n)) for n in range(29))
"""0.28·√SJC28 for every count (same rounding)."""


def _das28(tjc28: int, sjc28: int, log_weight: Decimal, log_argument: Decimal, ptga_0_100: Decimal, constant: Decimal) -> Decimal:
    """Shared 4-variable DAS28 kernel, evaluated with 50 significant digits (left to right):
    0.56·√TJC28 + 0.28·√SJC28 + weight·ln(argument) + 0.014·PtGA + constant."""
    ctx = _CTX
    total = ctx.add(_TJC_TERMS[tjc28], _SJC_TERMS[sjc28])
    total = ctx.add(total, ctx.multiply(log_weight, _ln(log_argument)))
    total = ctx.add(total, ctx.multiply(_W_PTGA, ptga_0_100))
    return ctx.add(total, constant)


def das28_esr(
    tjc28: Number | None,
    sjc28: Number | None,
    esr_mm_h: Number | None,
    ptga_0_100: Number | None,
) -> Result[Decimal]:
    """DAS28-ESR = 0.56·√TJC28 + 0.28·√SJC28 + 0.70·ln(ESR mm/h) + 0.014·PtGA(0–100).

    Source: das-score.nl, "DAS28 — alternative validated formulae" (4-variable DAS28-ESR,
    no constant term); contract §4 ``das28-esr``. ``ptga_0_100`` is the patient global /
    general health on the 100 mm VAS. ESR ≤ 0 makes ln(ESR) undefined: not computable
    (contract §4), never clamped. Worked value: TJC 4, SJC 9, ESR 28, PtGA 60 → 5.1325….
    """
    if _count(tjc28) and _count(sjc28) and _within(esr_mm_h, _ZERO, None) and esr_mm_h > 0 and _within(ptga_0_100, _ZERO, _HUNDRED):  # type: ignore[operator]
        return Computed(_das28(tjc28, sjc28, _W_LN_ESR, esr_mm_h, ptga_0_100, _ZERO))  # type: ignore[arg-type]
    inputs = gather([
        count_input("TJC28", tjc28),
        count_input("SJC28", sjc28),
        decimal_input("ESR (mm/h)", esr_mm_h),
        decimal_input("PtGA (0–100 mm)", ptga_0_100, minimum=_ZERO, maximum=_HUNDRED),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    tjc, sjc, esr, ptga = inputs.value
    assert isinstance(esr, Decimal) and isinstance(ptga, Decimal)
    if esr <= 0:
        return NotComputable(f"ESR (mm/h) is {esr}: ln(ESR) is undefined for ESR ≤ 0")
    return Computed(_das28(tjc, sjc, _W_LN_ESR, esr, ptga, _ZERO))  # type: ignore[arg-type]


def das28_crp(
    tjc28: Number | None,
    sjc28: Number | None,
    crp_mg_l: Number | None,
    ptga_0_100: Number | None,
) -> Result[Decimal]:
    """DAS28-CRP = 0.56·√TJC28 + 0.28·√SJC28 + 0.36·ln(CRP mg/L + 1) + 0.014·PtGA(0–100) + 0.96.

    Source: das-score.nl, "DAS28 — alternative validated formulae" (4-variable DAS28-CRP;
    CRP in mg/L, as also stated by medicalalgorithms.com); contract §4 ``das28-crp``.
    CRP must be ≥ 0 mg/L. Worked values: TJC 4, SJC 9, CRP 12, PtGA 60 → 4.6834…;
    all zero → 0.96.
    """
    if _count(tjc28) and _count(sjc28) and _within(crp_mg_l, _ZERO, None) and _within(ptga_0_100, _ZERO, _HUNDRED):
        return Computed(_das28(tjc28, sjc28, _W_LN_CRP, _CTX.add(crp_mg_l, 1), ptga_0_100, _CRP_CONSTANT))  # type: ignore[arg-type]
    inputs = gather([
        count_input("TJC28", tjc28),
        count_input("SJC28", sjc28),
        decimal_input("CRP (mg/L)", crp_mg_l, minimum=_ZERO),
        decimal_input("PtGA (0–100 mm)", ptga_0_100, minimum=_ZERO, maximum=_HUNDRED),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    tjc, sjc, crp, ptga = inputs.value
    assert isinstance(crp, Decimal) and isinstance(ptga, Decimal)
    return Computed(_das28(tjc, sjc, _W_LN_CRP, _CTX.add(crp, 1), ptga, _CRP_CONSTANT))  # type: ignore[arg-type]


def _exact_sum(values: tuple[object, ...]) -> Decimal:
    """Sum decimals without rounding (precision large enough for any clinical input)."""
    total = _ZERO
    for value in values:
        total = _CTX.add(total, value)  # type: ignore[arg-type]
    return total


def sdai(
    tjc28: Number | None,
    sjc28: Number | None,
    ptga_0_10: Number | None,
    ega_0_10: Number | None,
    crp_mg_dl: Number | None,
) -> Result[Decimal]:
    """SDAI = TJC28 + SJC28 + PtGA(0–10) + EGA(0–10) + CRP (mg/dL), an exact decimal sum.

    Source: Smolen JS et al., Rheumatology 2003;42:244 (SDAI); Aletaha D, Smolen JS, Clin
    Exp Rheumatol 2005;23(5 Suppl 39):S100 (cut-points); ra-domain.md §1.3 — note CRP in
    mg/dL, not mg/L. Contract §4 ``sdai``. Worked value: TJC 4, SJC 9, PtGA 6.0, EGA 5.0,
    CRP 1.2 mg/dL → 25.2.
    """
    if _count(tjc28) and _count(sjc28) and _within(ptga_0_10, _ZERO, _TEN) and _within(ega_0_10, _ZERO, _TEN) and _within(crp_mg_dl, _ZERO, None):
        return Computed(_exact_sum((tjc28, sjc28, ptga_0_10, ega_0_10, crp_mg_dl)))
    inputs = gather([
        count_input("TJC28", tjc28),
        count_input("SJC28", sjc28),
        decimal_input("PtGA (0–10)", ptga_0_10, minimum=_ZERO, maximum=_TEN),
        decimal_input("EGA (0–10)", ega_0_10, minimum=_ZERO, maximum=_TEN),
        decimal_input("CRP (mg/dL)", crp_mg_dl, minimum=_ZERO),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    return Computed(_exact_sum(inputs.value))


def cdai(
    tjc28: Number | None,
    sjc28: Number | None,
    ptga_0_10: Number | None,
    ega_0_10: Number | None,
) -> Result[Decimal]:
    """CDAI = TJC28 + SJC28 + PtGA(0–10) + EGA(0–10), an exact decimal sum.

    Source: Aletaha D et al., Arthritis Res Ther 2005;7:R796 (CDAI); Aletaha D, Smolen JS,
    Clin Exp Rheumatol 2005;23(5 Suppl 39):S100; contract §4 ``cdai``. Worked value:
    TJC 4, SJC 9, PtGA 6.0, EGA 5.0 → 24.0.
    """
    if _count(tjc28) and _count(sjc28) and _within(ptga_0_10, _ZERO, _TEN) and _within(ega_0_10, _ZERO, _TEN):
        return Computed(_exact_sum((tjc28, sjc28, ptga_0_10, ega_0_10)))
    inputs = gather([
        count_input("TJC28", tjc28),
        count_input("SJC28", sjc28),
        decimal_input("PtGA (0–10)", ptga_0_10, minimum=_ZERO, maximum=_TEN),
        decimal_input("EGA (0–10)", ega_0_10, minimum=_ZERO, maximum=_TEN),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    return Computed(_exact_sum(inputs.value))


def treg_th17_ratio(treg_pct_cd4: Number | None, th17_pct_cd4: Number | None) -> Result[Decimal]:
    """Treg/Th17 ratio = Treg (% of CD4+) ÷ Th17 (% of CD4+) at the same visit.

    Source: contract §4 ``treg-th17-ratio`` (local definition; both percentages share the
    CD4+ denominator, ra-domain.md §2). Th17 = 0 makes the ratio undefined: not computable.
    The quotient is exact when it terminates within 50 digits.
    """
    if _within(treg_pct_cd4, _ZERO, _HUNDRED) and _within(th17_pct_cd4, _ZERO, _HUNDRED) and th17_pct_cd4 != 0:
        return Computed(_CTX.divide(treg_pct_cd4, th17_pct_cd4))  # type: ignore[arg-type]
    inputs = gather([
        decimal_input("Treg (% of CD4+)", treg_pct_cd4, minimum=_ZERO, maximum=_HUNDRED),
        decimal_input("Th17 (% of CD4+)", th17_pct_cd4, minimum=_ZERO, maximum=_HUNDRED),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    treg, th17 = inputs.value
    assert isinstance(treg, Decimal) and isinstance(th17, Decimal)
    if th17 == 0:
        return NotComputable("Th17 (% of CD4+) is 0: the Treg/Th17 ratio is undefined")
    return Computed(_CTX.divide(treg, th17))


__all__ = ["cdai", "das28_crp", "das28_esr", "sdai", "treg_th17_ratio"]
