"""FHIR JSON in and out, without losing a digit.

FHIR requires decimals to keep their precision (``1.50`` is not ``1.5``). Parsing goes
through the standard library with every non-integer number kept as :class:`JsonDecimal`,
which remembers the exact text it was read from; dumping goes through orjson and writes
that text back verbatim (``orjson.Fragment``). Duplicate object keys, ``NaN`` and
``Infinity`` are refused: they are not JSON that FHIR allows, and silently taking the
last duplicate would store something the client did not mean.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class JsonDecimal(Decimal):
    """A ``Decimal`` that remembers the exact JSON text it was parsed from."""

    __slots__ = ("raw",)

    raw: str

    def __new__(cls, text: str) -> "JsonDecimal":
        obj = super().__new__(cls, text)
        obj.raw = text
        return obj


class JsonSyntaxError(ValueError):
    """The body is not acceptable JSON; the message says where and why."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonSyntaxError(f'duplicate key "{key}" in a JSON object')
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise JsonSyntaxError(f"{name} is not a valid JSON number")


_decoder = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=JsonDecimal, parse_constant=_no_constant
)


def loads(data: bytes | str) -> Any:
    """Parse JSON text, keeping decimals exact; raise :class:`JsonSyntaxError` when invalid."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonSyntaxError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return _decoder.decode(text)
    except JsonSyntaxError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JsonSyntaxError("the JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal with more digits than Python converts
        raise JsonSyntaxError(f"a value cannot be read: {str(exc).split(';')[0]}") from None


def _default(obj: Any) -> Any:
    if isinstance(obj, JsonDecimal):
        return orjson.Fragment(obj.raw)
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError("non-finite decimal")
        return orjson.Fragment(str(obj))
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON, writing decimals exactly as parsed."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(obj, default=_default, option=option)


def fragment(raw: bytes) -> orjson.Fragment:
    """Embed already-serialised JSON (a stored resource) into a document being dumped."""
    return orjson.Fragment(raw)
