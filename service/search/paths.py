"""Compile the simple FHIRPath forms used by search parameters into fast extractors.

Evaluating the published expressions with a FHIRPath engine on every write costs
~2 ms per Observation (ecosystem.md §10); nearly all of them are plain paths, a
choice type narrowed with ``as``/``ofType``, or a ``where(x='y')`` filter. Those are
compiled here into a list of steps walked over the JSON dict (~µs). An expression
outside these forms returns ``None`` from :func:`compile_path`, and the caller decides
(the search capability falls back to a FHIRPath engine for those).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_AS = re.compile(r"^\((?P<path>[A-Za-z0-9_.]+) as (?P<type>[A-Za-z]+)\)$")
_DOT_AS = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\.(?:as|ofType)\((?P<type>[A-Za-z]+)\)$")
_WHERE = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\.where\((?P<field>[A-Za-z]+)\s*=\s*'(?P<value>[^']*)'\)$")
_PLAIN = re.compile(r"^[A-Za-z0-9_.]+$")

_PRIMITIVES = {
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant",
    "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid",
}


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """Steps from the resource root; a step may pick a choice type or filter on a field."""

    steps: tuple[str, ...]
    where: tuple[str, str] | None = None

    def values(self, resource: dict[str, Any]) -> Iterator[Any]:
        """Every value the path reaches, lists flattened."""
        current: list[Any] = [resource]
        for step in self.steps:
            nxt: list[Any] = []
            for node in current:
                if not isinstance(node, dict):
                    continue
                value = node.get(step)
                if value is None:
                    continue
                if isinstance(value, list):
                    nxt.extend(v for v in value if v is not None)
                else:
                    nxt.append(value)
            current = nxt
            if not current:
                return
        if self.where is None:
            yield from current
        else:
            field, expected = self.where
            for node in current:
                if isinstance(node, dict) and node.get(field) == expected:
                    yield node


def _choice_name(element: str, type_name: str) -> str:
    cap = type_name[0].upper() + type_name[1:]
    return element + cap


def compile_path(part: str, resource_type: str) -> CompiledPath | None:
    """Compile one union member (e.g. ``(Observation.value as Quantity)``) for ``resource_type``."""
    part = part.strip()
    where: tuple[str, str] | None = None
    choice_type: str | None = None
    m = _AS.match(part) or _DOT_AS.match(part)
    if m:
        path, choice_type = m.group("path"), m.group("type")
    else:
        m = _WHERE.match(part)
        if m:
            path, where = m.group("path"), (m.group("field"), m.group("value"))
        elif _PLAIN.match(part):
            path = part
        else:
            return None
    segments = path.split(".")
    if segments[0] in (resource_type, "Resource", "DomainResource"):
        segments = segments[1:]
    else:
        return None
    if not segments:
        return None
    if choice_type is not None:
        segments[-1] = _choice_name(segments[-1], choice_type if choice_type not in _PRIMITIVES else choice_type)
    return CompiledPath(tuple(segments), where)


Extractor = Callable[[dict[str, Any]], Iterator[Any]]
