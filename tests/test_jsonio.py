"""FHIR JSON in and out without losing a digit (https://hl7.org/fhir/R4/json.html#primitive)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.fhir import jsonio


@pytest.mark.parametrize("text", ["1.50", "0.0000001", "-1e245", "1E+2", "100.000", "-0.0", "3.14159265358979323846264338327950288"])
def test_decimal_text_survives_a_round_trip(text: str) -> None:
    doc = jsonio.loads('{"v": %s}' % text)
    assert doc["v"].raw == text
    assert jsonio.dumps(doc) == ('{"v":%s}' % text).encode()


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: format(d, "f")))
def test_any_decimal_literal_round_trips(text: str) -> None:
    if "." not in text:
        text += ".0"
    doc = jsonio.loads("[%s]" % text)
    assert Decimal(text) == doc[0]
    assert jsonio.dumps(doc) == ("[%s]" % text).encode()


def test_integers_stay_integers() -> None:
    assert jsonio.dumps(jsonio.loads('{"a": 10, "b": 12345678901234567890}')) == b'{"a":10,"b":12345678901234567890}'


@pytest.mark.parametrize(
    "bad,needle",
    [
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": ', "line 1"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "deep"),
    ],
)
def test_bad_json_is_refused_with_a_reason(bad: bytes, needle: str) -> None:
    with pytest.raises(jsonio.JsonSyntaxError) as exc:
        jsonio.loads(bad)
    assert needle in str(exc.value)


def test_bom_is_tolerated() -> None:
    assert jsonio.loads("\ufeff{}".encode()) == {}
