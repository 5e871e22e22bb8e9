"""Exact number handling and input checks shared by the derivation modules.

Contract §4 asks for decisions "in decimal or rational arithmetic on the values as stored".
Values therefore travel as ``Decimal`` (FHIR decimals are decimal text). A ``float`` that
reaches these functions is taken at its shortest round-trip text (``repr``), i.e. ``2.6``
means the decimal 2.6, not the binary double nearest to it; ``bool`` is never a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Union

from service.endpoints.result import Computed, NotComputable, Result

Number = Union[Decimal, int, float]
"""A clinical quantity as the derivations accept it."""


class InvalidNumber(ValueError):
    """Raised by :func:`as_decimal` for NaN, infinities, booleans and non-numbers."""


def as_decimal(value: Number) -> Decimal:
    """Return ``value`` as an exact ``Decimal`` (floats through ``repr``; see module doc)."""
    if type(value) is Decimal:  # the common case first (same result as the checks below)
        if not value.is_finite():
            raise InvalidNumber(f"{value!r} is not a finite number")
        return value
    if isinstance(value, bool):
        raise InvalidNumber(f"{value!r} is a boolean, not a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, Fraction):
        raise InvalidNumber("Fraction inputs are not accepted; pass a Decimal")
    else:
        raise InvalidNumber(f"{value!r} is not a number")
    if not result.is_finite():
        raise InvalidNumber(f"{value!r} is not a finite number")
    return result


def as_fraction(value: Number) -> Fraction:
    """Return ``value`` as an exact ``Fraction`` (via :func:`as_decimal`)."""
    return Fraction(as_decimal(value))


def decimal_input(
    label: str,
    value: Number | None,
    *,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
) -> Result[Decimal]:
    """Check one continuous input: present, finite, and within ``[minimum, maximum]``.

    ``label`` names the input with its unit in reasons, e.g. ``"ESR (mm/h)"``.
    """
    if value is None:
        return NotComputable(f"missing: {label}")
    try:
        number = as_decimal(value)
    except InvalidNumber as exc:
        return NotComputable(f"{label}: {exc}")
    if minimum is not None and number < minimum:
        return NotComputable(f"{label} {number} is below {minimum}")
    if maximum is not None and number > maximum:
        return NotComputable(f"{label} {number} is above {maximum}")
    return Computed(number)


def count_input(label: str, value: Number | None, *, maximum: int = 28) -> Result[int]:
    """Check a joint count: present, a whole number, ``0 … maximum`` (28 for TJC28/SJC28).

    An integral decimal such as ``Decimal("4.0")`` is accepted as 4.
    """
    if type(value) is int and 0 <= value <= maximum:  # the common case (same result as below)
        return Computed(value)
    if value is None:
        return NotComputable(f"missing: {label}")
    try:
        number = as_decimal(value)
    except InvalidNumber as exc:
        return NotComputable(f"{label}: {exc}")
    if number != number.to_integral_value():
        return NotComputable(f"{label} {number} is not a whole number")
    count = int(number)
    if not 0 <= count <= maximum:
        return NotComputable(f"{label} {count} is outside 0–{maximum}")
    return Computed(count)


def gather(results: Sequence[Result[object]]) -> Result[tuple[object, ...]]:
    """Combine checked inputs: all values, or one ``NotComputable`` naming every problem.

    Missing inputs are listed together first ("missing: TJC28, ESR (mm/h)"), then other
    problems, separated by "; ".
    """
    missing: list[str] = []
    problems: list[str] = []
    values: list[object] = []
    for result in results:
        if isinstance(result, NotComputable):
            if result.reason.startswith("missing: "):
                missing.append(result.reason.removeprefix("missing: "))
            else:
                problems.append(result.reason)
        else:
            values.append(result.value)
    if missing or problems:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + problems
        return NotComputable("; ".join(parts))
    return Computed(tuple(values))


__all__ = [
    "InvalidNumber",
    "Number",
    "as_decimal",
    "as_fraction",
    "count_input",
    "decimal_input",
    "gather",
]
