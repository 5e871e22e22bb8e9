"""The precomputed UCUM table agrees with ucumvert, and conversions are right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from service.search import ucum

TABLE = json.loads((Path(__file__).resolve().parents[1] / "service/fhir/definitions/ucum_common.json").read_text())


def test_table_matches_ucumvert() -> None:
    for code, (factor, base) in TABLE.items():
        computed = ucum.compute_factor(code)
        assert computed is not None, code
        assert computed[1] == base and math.isclose(computed[0], factor, rel_tol=1e-12), code


@pytest.mark.parametrize(
    "value,code,other_value,other_code",
    [(12, "mg/L", 1.2, "mg/dL"), (3, "10*6/kg", 3000, "10*3/kg"), (100, "mm", 10, "cm"), (1, "g/dL", 10, "g/L")],
)
def test_equal_quantities_have_equal_canonical_values(value: float, code: str, other_value: float, other_code: str) -> None:
    a = ucum.canonical(value, ucum.UCUM_SYSTEM, code)
    b = ucum.canonical(other_value, ucum.UCUM_SYSTEM, other_code)
    assert a is not None and b is not None and a[1] == b[1] and math.isclose(a[0], b[0], rel_tol=1e-9)


def test_traps() -> None:
    assert ucum.canonical(1, ucum.UCUM_SYSTEM, "10*6/kg")[0] == pytest.approx(1e6)  # not 60/kg as raw pint reads it
    mgdl = ucum.canonical(1, ucum.UCUM_SYSTEM, "mg/dL")
    mmol = ucum.canonical(1, ucum.UCUM_SYSTEM, "mmol/L")
    assert mgdl[1] != mmol[1]  # mass and substance concentration never compare
    assert ucum.canonical(1, ucum.UCUM_SYSTEM, "[IU]/mL") is None  # arbitrary units only match by code
    assert ucum.canonical(1, "http://example.org/units", "mg/L") is None
