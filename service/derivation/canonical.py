"""Each input value in the units the scores need (contract §2 "units accepted"; §4).

A value is converted once, when it is read, to every scale an output needs — PtGA to the
0–100 mm VAS (DAS28) *and* the 0–10 scale (SDAI, CDAI, Boolean remission, ACR), CRP to
mg/L (DAS28-CRP, ACR) *and* mg/dL (SDAI, Boolean remission). The conversions are those
of :mod:`service.endpoints.units` (UCUM via ucumvert; ``{score}`` only where the contract
fixes its scale). When any conversion fails — a unit that cannot be converted, or a value
off the scale — the value is **set aside before visit selection** with the reason
(contract §2): it counts as absent for every rule.

Conversions are memoised per (measure, written number, unit): lab values repeat a lot,
and the written number (with its type, so ``18``, ``18.0`` and ``Decimal('18.00')`` stay
apart) fully determines the result, representation included.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, Optional, Union

from service.derivation.reading import number
from service.endpoints import units
from service.endpoints.result import Computed, NotComputable, Result

#: Canonical values of one input, e.g. ``{"mg_l": Decimal("18.4"), "mg_dl": Decimal("1.84")}``.
Canon = dict[str, Union[Decimal, int]]


def _one(key: str, fn: Callable[[Decimal, Optional[str]], Result[Any]]) -> Callable[[Decimal, Optional[str]], Result[Canon]]:
    def convert(value: Decimal, unit: Optional[str]) -> Result[Canon]:
        return fn(value, unit).map(lambda v: {key: v})

    return convert


def _two(a: tuple[str, Callable[..., Result[Any]]], b: tuple[str, Callable[..., Result[Any]]]) -> Callable[[Decimal, Optional[str]], Result[Canon]]:
    def convert(value: Decimal, unit: Optional[str]) -> Result[Canon]:
        first, second = a[1](value, unit), b[1](value, unit)
        if isinstance(first, NotComputable):
            return first
        if isinstance(second, NotComputable):
            return second
        return Computed({a[0]: first.value, b[0]: second.value})

    return convert


#: measure key → converter. Keys: ``count`` (joint count, int), ``mm`` (0–100 VAS),
#: ``score10`` (0–10), ``haq`` (0–3), ``mm_h``, ``mg_l``, ``mg_dl``, ``pg_ml``, ``pct``.
#: Anti-CCP and RF (contract §2) feed no output of §4 and are not read.
CONVERTERS: Final[dict[str, Callable[[Decimal, Optional[str]], Result[Canon]]]] = {
    "tjc28": _one("count", units.to_count),
    "sjc28": _one("count", units.to_count),
    "ptga": _two(("mm", units.to_mm_0_100), ("score10", units.to_score_0_10)),
    "ega": _one("score10", units.to_score_0_10),
    "pain": _one("mm", units.to_mm_0_100),
    "haq_di": _one("haq", units.to_haq_di),
    "esr": _one("mm_h", units.to_mm_h),
    "crp": _two(("mg_l", units.to_mg_l), ("mg_dl", units.to_mg_dl)),
    "il10": _one("pg_ml", units.to_pg_ml),
    "tnf_alpha": _one("pg_ml", units.to_pg_ml),
    "il17a": _one("pg_ml", units.to_pg_ml),
    "treg_pct": _one("pct", units.to_percent),
    "th17_pct": _one("pct", units.to_percent),
}

_MEMO: dict[tuple[str, type, Any, Optional[str]], Result[Canon]] = {}
_MEMO_MAX = 200_000


_NUMBER_TYPES = (int, float, Decimal)


def canonical_of(measure: str, written: Any, unit: Optional[str]) -> Result[Canon]:
    """The canonical values of the JSON value ``written`` (as parsed, :func:`.reading.loads`)
    in ``unit``, or why there are none (not a number, or a conversion that fails)."""
    if type(written) in _NUMBER_TYPES:  # memo first: the Decimal is only needed on a miss
        found = _MEMO.get((measure, type(written), written if type(written) is not Decimal else str(written), unit))
        if found is not None:
            return found
    value = number(written)
    if value is None or not value.is_finite():
        return NotComputable(f"value {written!r} is not a number")
    return canonical(measure, written, value, unit)


def canonical(measure: str, written: Any, value: Decimal, unit: Optional[str]) -> Result[Canon]:
    """The canonical values of ``value`` (``written`` = the JSON number as parsed) in ``unit``."""
    key = (measure, type(written), written if not isinstance(written, Decimal) else str(written), unit)
    found = _MEMO.get(key)
    if found is None:
        found = CONVERTERS[measure](value, unit)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = found
    return found


__all__ = ["CONVERTERS", "Canon", "canonical", "canonical_of"]
