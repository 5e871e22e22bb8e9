"""Small helpers shared by the mappers: building and reading FHIR JSON fragments."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Iterator, Optional

from mappers import codes


class MappingError(ValueError):
    """A FHIR resource cannot be mapped to a trial entity; the message says why."""


# --- building -----------------------------------------------------------------------


def coding(system: str, code: str, display: Optional[str] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(system: str, code: str, display: Optional[str] = None, text: Optional[str] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text:
        out["text"] = text
    return out


def quantity(value: Decimal, unit_code: Optional[str], unit_display: Optional[str] = None) -> dict[str, Any]:
    """A UCUM Quantity; without a unit code only the value is written."""
    out: dict[str, Any] = {"value": value}
    if unit_code is not None:
        out["unit"] = unit_display or unit_code
        out["system"] = codes.UCUM
        out["code"] = unit_code
    return out


def days(value: int) -> dict[str, Any]:
    """A UCUM quantity of days (``d``)."""
    return {"value": Decimal(value), "unit": "d", "system": codes.UCUM, "code": "d"}


def fhir_datetime(value: date) -> str:
    """FHIR ``date``/``dateTime`` text of a date or an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise MappingError("a datetime needs a time zone in FHIR")
        return value.isoformat()
    return value.isoformat()


# --- reading ------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR = re.compile(r"^(\d{4})(?:-\d{2}(?:-\d{2})?)?$")


def parse_datetime(text: Any, what: str) -> date:
    """A full FHIR date (``YYYY-MM-DD``) or dateTime with time and zone.

    Partial dates (``2024``, ``2024-03``) cannot be placed on a study day and raise
    :class:`MappingError`, as does a time without a zone.
    """
    if not isinstance(text, str):
        raise MappingError(f"{what} is missing")
    if _DATE.match(text):
        return date.fromisoformat(text)
    if "T" not in text:
        raise MappingError(f"{what} '{text}' is a partial date; a full date is needed")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MappingError(f"{what} '{text}' is not a valid dateTime") from None
    if value.tzinfo is None:
        raise MappingError(f"{what} '{text}' has a time but no time zone")
    return value


def parse_year(text: Any) -> Optional[int]:
    """The year of a FHIR date of any precision (``None`` when absent)."""
    if not isinstance(text, str):
        return None
    match = _YEAR.match(text)
    if not match:
        raise MappingError(f"birthDate '{text}' is not a FHIR date")
    return int(match.group(1))


def codings(concept_: Any) -> Iterator[dict[str, Any]]:
    """The codings of a CodeableConcept (nothing for anything else)."""
    if isinstance(concept_, dict):
        for c in concept_.get("coding") or ():
            if isinstance(c, dict):
                yield c


def code_in(concept_: Any, system: str) -> Optional[str]:
    """The first code of ``system`` in a CodeableConcept."""
    for c in codings(concept_):
        if c.get("system") == system and isinstance(c.get("code"), str):
            return c["code"]
    return None


def extensions(resource: Any, url: str) -> list[dict[str, Any]]:
    """The extensions with ``url`` on an element."""
    if not isinstance(resource, dict):
        return []
    return [e for e in resource.get("extension") or () if isinstance(e, dict) and e.get("url") == url]


def extension(resource: Any, url: str) -> Optional[dict[str, Any]]:
    """The single extension with ``url`` (the first when repeated)."""
    found = extensions(resource, url)
    return found[0] if found else None


def identifier_value(identifiers: Any, system: str) -> Optional[str]:
    """The value of the identifier with ``system`` (``identifier`` may be one or a list)."""
    items: Iterable[Any] = identifiers if isinstance(identifiers, list) else [identifiers]
    for ident in items:
        if isinstance(ident, dict) and ident.get("system") == system and isinstance(ident.get("value"), str):
            return ident["value"]
    return None


def split_key(value: Optional[str], parts: int, what: str) -> list[str]:
    """A ``|``-joined business key of exactly ``parts`` non-empty parts."""
    if value is None:
        raise MappingError(f"{what}: the business-key identifier is missing")
    pieces = value.split("|")
    if len(pieces) != parts or not all(pieces):
        raise MappingError(f"{what}: identifier value '{value}' is not {parts} '|'-separated parts")
    return pieces


def expect_type(resource: Any, resource_type: str) -> dict[str, Any]:
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        got = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
        raise MappingError(f"expected a {resource_type}, got {got}")
    return resource


def to_decimal(value: Any, what: str) -> Decimal:
    """A JSON number as Decimal, precision kept (ints and Decimals; floats via their repr)."""
    if isinstance(value, bool) or value is None:
        raise MappingError(f"{what} is not a number")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    raise MappingError(f"{what} is not a number")
