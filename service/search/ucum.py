"""UCUM canonicalisation for quantity search (ucumvert, cached).

A stored ``12 mg/L`` and a searched ``1.2 mg/dL`` must meet: both are converted to
base units (``0.012 kg/m³``) and compared there, while the original value and unit
stay in the index too. Raw pint is never used on UCUM strings (it reads ``10*6/kg`` as
60/kg); ucumvert parses UCUM properly. Arbitrary units (``[IU]``, ``[arb'U]``) have no
conversion between them, so they are not canonicalised (they match by code only).
"""

from __future__ import annotations

from functools import lru_cache

UCUM_SYSTEM = "http://unitsofmeasure.org"
_ARBITRARY = ("[IU]", "[iU]", "[arb'U]", "[USP'U]", "[GPL'U]", "[MPL'U]", "[APL'U]", "[beth'U]", "[anti'Xa'U]", "[todd'U]")



def _ureg():  # type: ignore[no-untyped-def]
    """The process's one ucumvert registry (shared with the endpoint derivation)."""
    from service.endpoints.units import ucum_registry

    return ucum_registry()


def warm_up() -> None:
    """Load the UCUM registry (a few seconds) ahead of the first unusual unit."""
    compute_factor("mg/dL")


def _load_common() -> dict[str, tuple[float, str]]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "fhir" / "definitions" / "ucum_common.json"
    if not path.exists():
        return {}
    return {k: (float(v[0]), str(v[1])) for k, v in json.loads(path.read_text()).items()}


#: Precomputed factors (scripts/generate_ucum_table.py) so common units never need ucumvert.
_COMMON = _load_common()


@lru_cache(maxsize=4096)
def canonical_factor(code: str) -> tuple[float, str] | None:
    """(factor, base-unit code) such that value × factor is the value in base units.

    None when the code is not convertible UCUM (or only an annotation like ``{score}``,
    which is dimensionless: factor 1, code ``1``). Common units come from a checked-in
    table; others are computed with ucumvert (loaded on first need).
    """
    found = _COMMON.get(code)
    if found is not None:
        return found
    return compute_factor(code)


def compute_factor(code: str) -> tuple[float, str] | None:
    """The factor computed by ucumvert (see :func:`canonical_factor`)."""
    if not code or any(a in code for a in _ARBITRARY):
        return None
    stripped = code.strip()
    if stripped.startswith("{") and stripped.endswith("}") and stripped.count("{") == 1:
        return 1.0, "1"
    try:
        quantity = _ureg().from_ucum(stripped)
    except Exception:  # noqa: BLE001 - anything ucumvert cannot parse is simply not convertible
        return None
    if isinstance(quantity, str):
        return 1.0, "1"
    try:
        base = quantity.to_base_units()
    except Exception:  # noqa: BLE001
        return None
    units = str(base.units)
    return float(base.magnitude), ("1" if units == "dimensionless" else units)


def round_sig(value: float, digits: int = 12) -> float:
    """Round to ``digits`` significant digits: unit factors are binary floats, so 12 mg/L
    and 1.2 mg/dL differ in the 17th digit; both sides of a comparison are rounded alike."""
    return float(f"{value:.{digits}g}")


def canonical(value: float, system: str | None, code: str | None) -> tuple[float, str] | None:
    """The value in UCUM base units, or None when the unit is not UCUM-convertible."""
    if code is None or (system is not None and system != UCUM_SYSTEM):
        return None
    found = canonical_factor(code)
    if found is None:
        return None
    factor, base = found
    return round_sig(value * factor), base
