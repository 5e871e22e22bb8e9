"""Rounding of derived values for ``valueQuantity`` (contract §4: "half away from zero").

Only output is rounded; categories, responses and changes are decided on unrounded values.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from functools import lru_cache

from service.endpoints.inputs import Number, as_decimal


@lru_cache(maxsize=16)
def _quantum(places: int) -> Decimal:
    return Decimal(1).scaleb(-places)


@lru_cache(maxsize=256)
def _context(precision: int) -> Context:
    """A fixed context of ``precision`` digits (enough for the quantized result)."""
    return Context(prec=precision, rounding=ROUND_HALF_UP)


def round_half_away(value: Number, places: int) -> Decimal:
    """Round to ``places`` decimals, ties away from zero: −0.125 → −0.13, 2.675 → 2.68.

    Source: contract §4 (``valueQuantity`` "rounded to the stated decimals, half away from
    zero"). Works on the exact decimal value (``Decimal('2.675')`` is a tie; a float is read
    at its ``repr``, so ``2.675`` behaves like ``Decimal('2.675')``, unlike ``round()``).
    ``ROUND_HALF_UP`` is the decimal module's name for half away from zero. A result that
    rounds to zero is returned without a sign (−0.001 → 0.00). The result always carries
    exactly ``places`` decimals (5 → 5.00), as FHIR keeps trailing zeros.
    """
    if places < 0:
        raise ValueError("places must be ≥ 0")
    number = as_decimal(value)
    rounded = number.quantize(_quantum(places), rounding=ROUND_HALF_UP, context=_context(max(28, number.adjusted() + places + 2)))
    if rounded.is_zero():
        rounded = rounded.copy_abs()
    return rounded


__all__ = ["round_half_away"]
