"""UCUM unit conversion for score inputs (contract §2 "units accepted"; ra-domain.md §2).

Policy:
- Dimensioned units (mass concentration, length, length/time, per mass) convert whenever
  UCUM says they are commensurable: mg/dL ↔ mg/L, pg/mL ↔ ng/L, cm ↔ mm, ``mg{CRP}/L`` (an
  annotation does not change a unit's meaning). The factor comes from ucumvert/pint once
  per unit pair and is applied as an exact ``Decimal`` (a power of ten stays exact).
- Incommensurable units are not guessed: mg/dL ↔ mmol/L (mass vs. substance), mm[Hg] → mm.
- Annotation-only units such as ``{score}`` are dimensionless: they convert to a scale only
  where the contract fixes that scale (``{score}`` 0–10 for patient/evaluator globals and
  pain, 0–3 for HAQ-DI; ``{#}``/``1``/no unit for joint counts). ucumvert itself returns a
  bare annotation unparsed, so those codes are matched here, never through pint.
- Every failure is a :class:`NotComputable` whose reason names the unit.
"""

from __future__ import annotations

import re
import threading
from decimal import Context, Decimal
from functools import lru_cache
from typing import Any

from service.endpoints.inputs import InvalidNumber, Number, as_decimal
from service.endpoints.result import Computed, NotComputable, Result

SCORE = "{score}"
"""UCUM annotation for a numeric rating (LOINC example unit)."""

_COUNT_CODES = frozenset({"{#}", "1", ""})
_ANNOTATION_ONLY = re.compile(r"^\{[^{}]*\}$")

_registry: Any = None
_registry_lock = threading.Lock()


def ucum_registry() -> Any:
    """The process-wide ucumvert ``PintUcumRegistry``, created on first use (≈1.5 s)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                from ucumvert import PintUcumRegistry

                _registry = PintUcumRegistry()
    return _registry


@lru_cache(maxsize=512)
def _parse(ucum_code: str) -> Any:
    """Parse a UCUM code to a pint Quantity; returns a reason string on failure."""
    if _ANNOTATION_ONLY.match(ucum_code):
        return f"unit {ucum_code!r} is a bare UCUM annotation (dimensionless) with no defined scale here"
    registry = ucum_registry()
    try:
        quantity = registry.from_ucum(ucum_code)
    except Exception as exc:  # noqa: BLE001 - lark/pint raise many types; all mean "not usable"
        first_line = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return f"unit {ucum_code!r} is not a valid UCUM code ({first_line})"
    if not hasattr(quantity, "dimensionality"):
        return f"unit {ucum_code!r} is not a UCUM unit that can be converted"
    return quantity


def _factor_as_decimal(ratio: float) -> Decimal:
    """Exact decimal for a conversion factor: round the float to 12 significant digits.

    Every factor between decimal SI-prefixed units is a power of ten (or a short decimal
    such as 25.4), which 12 significant digits reproduce exactly.
    """
    return Decimal(format(ratio, ".12g"))


@lru_cache(maxsize=512)
def conversion_factor(from_code: str, to_code: str) -> Result[Decimal]:
    """Multiplier taking a value in UCUM ``from_code`` to UCUM ``to_code`` (via ucumvert/pint)."""
    if from_code == to_code:
        return Computed(Decimal(1))
    source = _parse(from_code)
    if isinstance(source, str):
        return NotComputable(f"{source}; cannot convert to {to_code!r}")
    target = _parse(to_code)
    if isinstance(target, str):
        return NotComputable(target)
    try:
        ratio = (source / target).to("dimensionless").magnitude
    except Exception:  # noqa: BLE001 - DimensionalityError, OffsetUnitCalculusError, ...
        return NotComputable(
            f"unit {from_code!r} ({source.dimensionality}) cannot be converted to "
            f"{to_code!r} ({target.dimensionality})"
        )
    if not ratio > 0:
        return NotComputable(f"unit {from_code!r} has no usable conversion to {to_code!r}")
    return Computed(_factor_as_decimal(float(ratio)))


def _value(value: Number | None, what: str) -> Result[Decimal]:
    if value is None:
        return NotComputable(f"missing: {what}")
    try:
        return Computed(as_decimal(value))
    except InvalidNumber as exc:
        return NotComputable(f"{what}: {exc}")


_SCALE_CTX = Context(prec=50)


def _scaled(value: Decimal, factor: Decimal) -> Decimal:
    """``value × factor`` at 50 digits in a fixed context (independent of the caller's)."""
    return _SCALE_CTX.multiply(value, factor)


def convert(value: Number | None, from_code: str | None, to_code: str) -> Result[Decimal]:
    """Convert a dimensioned value between commensurable UCUM units, exactly for decimal factors."""
    checked = _value(value, f"value in {from_code!r}")
    if isinstance(checked, NotComputable):
        return checked
    if from_code is None:
        return NotComputable(f"no unit given; cannot convert to {to_code!r}")
    factor = conversion_factor(from_code, to_code)
    if isinstance(factor, NotComputable):
        return factor
    return Computed(_scaled(checked.value, factor.value))


def _in_range(result: Result[Decimal], what: str, low: Decimal, high: Decimal | None) -> Result[Decimal]:
    if isinstance(result, NotComputable):
        return result
    number = result.value
    if number < low or (high is not None and number > high):
        upper = f"–{high}" if high is not None else " or more"
        return NotComputable(f"{what} {number} is outside {low}{upper}")
    return result


def to_mg_l(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """CRP in mg/L (DAS28-CRP) from any UCUM mass/volume unit (contract §2, CRP row); ≥ 0."""
    return _in_range(convert(value, ucum_code, "mg/L"), "CRP (mg/L)", Decimal(0), None)


def to_mg_dl(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """CRP in mg/dL (SDAI, Boolean remission) from any UCUM mass/volume unit; ≥ 0."""
    return _in_range(convert(value, ucum_code, "mg/dL"), "CRP (mg/dL)", Decimal(0), None)


def to_pg_ml(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """Cytokine (IL-10, TNF-α, IL-17A) in pg/mL from any UCUM mass/volume unit; ≥ 0."""
    return _in_range(convert(value, ucum_code, "pg/mL"), "concentration (pg/mL)", Decimal(0), None)


def to_mm_h(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """ESR in mm/h (contract §2: ``mm/h``; commensurable length/time units convert); ≥ 0."""
    return _in_range(convert(value, ucum_code, "mm/h"), "ESR (mm/h)", Decimal(0), None)


def to_million_per_kg(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """Cell dose in 10^6 cells/kg (UCUM ``10*6/kg``, contract §2 study product); ≥ 0."""
    return _in_range(convert(value, ucum_code, "10*6/kg"), "dose (10*6/kg)", Decimal(0), None)


def to_mm_0_100(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """A VAS (pain, or patient global for DAS28) on the 0–100 mm scale.

    Contract §2: ``mm`` as is, ``cm`` ×10 (any UCUM length converts), ``{score}`` (0–10
    rating) ×10. Any other dimensionless unit (``1``, ``%``, other annotations) is refused.
    The converted value must lie in 0–100.
    """
    if ucum_code == SCORE:
        checked = _in_range(_value(value, "VAS ({score})"), "VAS ({score})", Decimal(0), Decimal(10))
        return checked.map(lambda v: _scaled(v, Decimal(10)))
    return _in_range(convert(value, ucum_code, "mm"), "VAS (mm)", Decimal(0), Decimal(100))


def to_score_0_10(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """A global assessment (patient or evaluator) on the 0–10 scale used by SDAI/CDAI/Boolean remission.

    Contract §2: ``{score}`` (0–10) as is, ``cm`` as is, ``mm`` ÷10 (any UCUM length
    converts to cm). Other dimensionless units are refused. Must lie in 0–10.
    """
    if ucum_code == SCORE:
        return _in_range(_value(value, "global ({score})"), "global ({score})", Decimal(0), Decimal(10))
    return _in_range(convert(value, ucum_code, "cm"), "global (cm)", Decimal(0), Decimal(10))


def to_haq_di(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """HAQ-DI total (LOINC 75874-8) in ``{score}``, 0–3 (contract §2)."""
    if ucum_code != SCORE:
        return NotComputable(f"HAQ-DI must be in {SCORE!r}, got unit {ucum_code!r}")
    return _in_range(_value(value, "HAQ-DI"), "HAQ-DI", Decimal(0), Decimal(3))


def to_percent(value: Number | None, ucum_code: str | None) -> Result[Decimal]:
    """A cell-population percentage (Treg, Th17 % of CD4+) in ``%``, 0–100 (contract §2)."""
    if ucum_code != "%":
        return NotComputable(f"percentage must be in '%', got unit {ucum_code!r}")
    return _in_range(_value(value, "percentage"), "percentage", Decimal(0), Decimal(100))


def to_count(value: Number | None, ucum_code: str | None) -> Result[int]:
    """A joint count: unit ``{#}``, ``1`` or none (contract §2); a whole number ≥ 0."""
    if ucum_code is not None and ucum_code not in _COUNT_CODES:
        return NotComputable(f"a joint count must be in '{{#}}', '1' or unitless, got unit {ucum_code!r}")
    checked = _value(value, "joint count")
    if isinstance(checked, NotComputable):
        return checked
    number = checked.value
    if number != number.to_integral_value() or number < 0:
        return NotComputable(f"joint count {number} is not a whole number ≥ 0")
    return Computed(int(number))


__all__ = [
    "SCORE",
    "conversion_factor",
    "convert",
    "to_count",
    "to_haq_di",
    "to_million_per_kg",
    "to_mg_dl",
    "to_mg_l",
    "to_mm_0_100",
    "to_mm_h",
    "to_percent",
    "to_pg_ml",
    "to_score_0_10",
    "ucum_registry",
]
