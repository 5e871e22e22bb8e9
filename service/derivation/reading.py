"""Low-level readers for stored FHIR JSON: exact numbers, dates as written, references.

**Numbers.** Stored resources are parsed with orjson (≈6× faster than the exact parser
:func:`service.fhir.jsonio.loads`). orjson yields a ``float`` for a decimal; its shortest
round-trip text (``repr``) is the decimal that was written whenever the written number
has at most 15 significant digits (IEEE-754 doubles keep 15 decimal digits). A resource
whose bytes contain a run of 16 or more digits/dots — the only way to write a number
with more digits (found with one ``bytes.translate``, ~10× cheaper than a regex) — is
parsed with the exact parser instead, so every value reaches the
derivation exactly as stored (contract §4: decisions "on the values as stored"). False
alarms (a long identifier) only cost the slower parse. :class:`ParseStats` counts both.
The input Observations, read by the hundred thousand, take :func:`loads_observation`,
which looks only at the text of the one number the derivation reads from them.

**Dates.** Contract §3: the study day of a value is the calendar date of ``effective[x]``
*as written* (its local date) minus the calendar date of day 0, so the date is the first
ten characters of the text, never a conversion to UTC. Ties between values are broken
on the instant (a date without time counts as 00:00 UTC of that day).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Optional, Union

import orjson

from service.fhir import jsonio

_DIGITS_AND_DOTS = bytes(1 if chr(i) in "0123456789." else 0 for i in range(256))
_LONG_RUN = b"\x01" * 16
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EPOCH_DATE = date(1970, 1, 1)
_DAY_US = 86_400_000_000


@dataclass(slots=True)
class ParseStats:
    """How many stored resources took the fast and the exact JSON path."""

    fast: int = 0
    exact: int = 0


def loads(content: bytes, stats: Optional[ParseStats] = None) -> Any:
    """Parse stored JSON; numbers come back as int, float (≤ 15 digits) or exact Decimal."""
    if _LONG_RUN not in content.translate(_DIGITS_AND_DOTS):
        try:
            doc = orjson.loads(content)
            if stats is not None:
                stats.fast += 1
            return doc
        except orjson.JSONDecodeError:
            pass  # e.g. an integer beyond 64 bits: the exact parser takes it
    if stats is not None:
        stats.exact += 1
    return jsonio.loads(content)


_VALUE_QUANTITY = b'"valueQuantity":{'
_VALUE_KEY = b'"value":'
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _quantity_value_text(content: bytes) -> Optional[bytes]:
    """The text of ``valueQuantity.value`` in a stored Observation, or ``None`` when the
    layout is not the plain one (a second ``valueQuantity`` anywhere — a component, an
    extension —, or an object before ``value`` inside it): the caller then checks the whole
    document. A quoted ``"valueQuantity":{`` cannot come from inside a JSON string, whose
    quotes are escaped."""
    start = content.find(_VALUE_QUANTITY)
    if start < 0 or content.find(_VALUE_QUANTITY, start + 1) >= 0:
        return None
    key = start + len(_VALUE_QUANTITY)
    if not content.startswith(_VALUE_KEY, key):  # value not first: look further, outside any nested object
        key = content.find(_VALUE_KEY, key)
        if key < 0 or content.find(b"{", start + len(_VALUE_QUANTITY), key) >= 0:
            return None
    match = _JSON_NUMBER.match(content, key + len(_VALUE_KEY))
    return match.group() if match else None


def loads_observation(content: bytes, stats: Optional[ParseStats] = None) -> Any:
    """:func:`loads` for a stored Observation, checking only the number the derivation reads.

    Of an Observation's numbers the derivation uses ``valueQuantity.value`` (and
    ``valueInteger``, which orjson reads exactly or refuses), so instead of scanning the
    whole document for a long digit run, only that number's text is looked at: up to 15
    characters it has at most 15 significant digits and the float is exact (module
    docstring); a longer one is read from its text as a Decimal. An unusual layout falls
    back to :func:`loads`, and so does a ``valueInteger`` orjson could not read as an
    integer. Other numbers in the document may come back as floats."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return loads(content, stats)
    if type(doc) is not dict:
        return loads(content, stats)
    if "valueInteger" in doc and type(doc["valueInteger"]) is not int:  # orjson reads an integer beyond 64 bits as a float
        return loads(content, stats)
    q = doc.get("valueQuantity")
    if type(q) is dict and type(q.get("value")) is float:
        text = _quantity_value_text(content)
        if text is None:
            return loads(content, stats)
        if len(text) > 15:
            q["value"] = Decimal(text.decode("ascii"))
            if stats is not None:
                stats.exact += 1
            return doc
    if stats is not None:
        stats.fast += 1
    return doc


def number(value: Any) -> Optional[Decimal]:
    """A JSON number as an exact Decimal (see module docstring); ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return None


@dataclass(frozen=True, slots=True)
class When:
    """A FHIR date/dateTime/instant as written, with its calendar date and an instant."""

    text: str
    day: date
    """The calendar date as written (the local date for a dateTime with a zone)."""
    instant_us: int
    """Microseconds since 1970-01-01T00:00Z; a date alone counts as 00:00 UTC."""


def when(text: Any, what: str) -> Union[When, str]:
    """Parse a full date or dateTime; a reason string when it cannot be placed on a day."""
    if not isinstance(text, str):
        return f"{what} is missing"
    return when_text(text, what)


@lru_cache(maxsize=65536)
def when_text(text: str, what: str) -> Union[When, str]:
    """:func:`when` of a string, memoised: the Observations of one visit share their date text."""
    if not _FULL_DATE.match(text):
        return f"{what} '{text}' is a partial date; a full date is needed to place it on a study day"
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        return f"{what} '{text}' is not a valid date"
    if len(text) == 10:
        return When(text, day, (day - _EPOCH_DATE).days * _DAY_US)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return f"{what} '{text}' is not a valid dateTime"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # FHIR requires a zone; read as UTC
    return When(text, day, (moment - _EPOCH) // timedelta(microseconds=1))


def reference_id(ref: Any, resource_type: str) -> Optional[str]:
    """The id in a literal reference to ``resource_type`` (``Type/id``, absolute, ``/_history/n``)."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if not isinstance(text, str):
        return None
    return _reference_id(text, resource_type)


@lru_cache(maxsize=65536)
def _reference_id(text: str, resource_type: str) -> Optional[str]:
    segments = text.split("/")
    if "_history" in segments:
        segments = segments[: segments.index("_history")]
    if len(segments) >= 2 and segments[-2] == resource_type and segments[-1]:
        return segments[-1]
    return None


def extension_value(element: Any, url: str, key: str) -> Any:
    """``value[x]`` (``key``, e.g. ``valueString``) of the first extension with ``url``."""
    if isinstance(element, dict):
        for ext in element.get("extension") or ():
            if isinstance(ext, dict) and ext.get("url") == url:
                return ext.get(key)
    return None


def code_of(concept: Any, system: str) -> Optional[str]:
    """The first code of ``system`` in a CodeableConcept."""
    if isinstance(concept, dict):
        for c in concept.get("coding") or ():
            if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str):
                return c["code"]
    return None


__all__ = ["ParseStats", "When", "code_of", "extension_value", "loads", "loads_observation", "number", "reference_id", "when", "when_text"]
