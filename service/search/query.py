"""Parse a FHIR search query string into parameters, modifiers and OR-values.

https://hl7.org/fhir/R4/search.html: a repeated parameter means AND, a comma inside a
value means OR, and ``\\,`` ``\\|`` ``\\$`` ``\\\\`` escape those characters. The parser
keeps every repetition and its order (next links must carry them all) and never drops
a parameter silently: callers get the unknown ones back and decide (ignore and report,
or 400 under ``Prefer: handling=strict`` and for conditional interactions).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

#: Result-shaping parameters (https://hl7.org/fhir/R4/search.html#all) — not filters.
CONTROL_PARAMS = frozenset(
    {
        "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
        "_containedType", "_format", "_pretty", "_cursor", "_totalMethod", "_since", "_at",
    }
)


@dataclass(frozen=True, slots=True)
class SearchClause:
    """One ``name[:modifier]=v1,v2`` occurrence: the values are ORed."""

    name: str
    modifier: str | None
    values: tuple[str, ...]
    raw_name: str


def split_values(raw: str) -> tuple[str, ...]:
    """Split at unescaped commas (OR); ``\\,`` becomes a literal comma. Other escapes
    (``\\|`` ``\\$`` ``\\\\``) stay in place for the type-specific parsers (token
    ``system|code``, composite ``a$b``), which unescape after splitting."""
    values: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            current.append(nxt if nxt == "," else ch + nxt)
            i += 2
            continue
        if ch == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    values.append("".join(current))
    return tuple(values)


def split_token(value: str) -> tuple[str | None, str | None]:
    """``system|code`` → (system, code); ``code`` → (None, code) meaning any system;
    ``|code`` → ("", code) meaning no system; ``system|`` → (system, None).
    Both parts stay escaped (``\\|``); callers unescape them."""
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            i += 2
            continue
        if value[i] == "|":
            system = value[:i]
            code = value[i + 1 :]
            return system, (code if code != "" else None)
        i += 1
    return None, value


def parse_query(query: str | list[tuple[str, str]]) -> list[SearchClause]:
    """All clauses of a query string (or pre-split pairs), in order."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else query
    clauses: list[SearchClause] = []
    for raw_name, raw_value in pairs:
        name, _, modifier = raw_name.partition(":")
        clauses.append(SearchClause(name, modifier or None, split_values(raw_value), raw_name))
    return clauses


def normalise_condition(raw: str, resource_type: str) -> str:
    """The query part of an If-None-Exist header or conditional URL.

    Clients send ``identifier=x``, ``Patient?identifier=x`` or a full URL
    ``http://host/fhir/Patient?identifier=x``; all mean the same.
    """
    text = raw.strip()
    if "?" in text:
        prefix, _, rest = text.partition("?")
        tail = prefix.rstrip("/").rsplit("/", 1)[-1]
        if tail == resource_type or prefix == "":
            return rest
        return rest
    return text
