"""Check FHIR R4 *required* value-set bindings on a parsed resource.

Neither fhirkit-rs nor fhir.resources checks them (both accept
``Observation.status = "finalx"``), yet a required binding is part of what makes a
resource valid. This module walks a resource with the table generated into
``definitions/r4_bindings.json`` by ``scripts/generate_definitions.py``:

* the table maps each datatype, resource and backbone element (a synthetic type named
  by its path, e.g. ``Observation.component``) to the JSON properties that can lead
  to a required binding, so the walker only looks up what matters;
* ``Resource``-typed elements (``contained``, ``Bundle.entry.resource``, …) are walked
  by the embedded resource's own ``resourceType``;
* extensions may sit on any element (``_status`` siblings of primitives included) and
  their ``value[x]`` can carry bindings (``valueQuantity.comparator``), so subtrees the
  table prunes are still scanned, cheaply, for ``extension``/``modifierExtension`` only.

Codes are checked exactly. For ``Coding``/``CodeableConcept`` only codings whose
``system`` belongs to the value set are checked; codings from other systems and
text-only concepts pass. Value sets the package cannot expand (MIME types, UCUM,
currencies, …) are listed in ``r4_bindings_skipped.json`` and not enforced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["BindingIssue", "check_required_bindings"]

_TABLE_FILE = Path(__file__).resolve().parent / "definitions" / "r4_bindings.json"
_ALLOWED_SHOWN = 10
_VALUE_SHOWN = 80
_INDEX = re.compile(r"\[(\d+)\]")

# Entry kinds of the walker table (ints: compared on every visited property).
_TYPE, _RESOURCE, _CODE, _CODING, _CONCEPT = range(5)
_KINDS = {"type": _TYPE, "resource": _RESOURCE, "code": _CODE, "string": _CODE,
          "Coding": _CODING, "CodeableConcept": _CONCEPT}


@dataclass(frozen=True, slots=True)
class BindingIssue:
    """One value that is not in the value set its element is required to be bound to."""

    path: str  # FHIRPath-style, e.g. "Observation.component[1].valueQuantity.comparator"
    message: str


class _ValueSet:
    """An expanded value set: all codes, and the codes of each system."""

    __slots__ = ("url", "codes", "systems", "allowed")

    def __init__(self, url: str, systems: dict[str, list[str]]) -> None:
        self.url = url
        self.systems = {s: frozenset(c) for s, c in systems.items()}
        ordered = list(dict.fromkeys(c for codes in systems.values() for c in codes))
        self.codes = frozenset(ordered)
        shown = ", ".join(ordered[:_ALLOWED_SHOWN])
        more = len(ordered) - _ALLOWED_SHOWN
        self.allowed = f"{shown}, ... ({more} more)" if more > 0 else shown


Entry = tuple[int, Any]  # (kind, nested table | _ValueSet | None)
Table = dict[str, Entry]


def _load() -> tuple[dict[str, Table], Table]:
    """Build the walker tables; type targets are resolved to the table dicts themselves."""
    raw = json.loads(_TABLE_FILE.read_text(encoding="utf-8"))
    value_sets = {k: _ValueSet(v["url"], v["systems"]) for k, v in raw["valueSets"].items()}
    tables: dict[str, Table] = {name: {} for name in raw["types"]}
    # Extensions can hide anywhere: every table, and the "scan" table used for subtrees
    # the generated table pruned, follows extension/modifierExtension as Extension.
    extension = tables.setdefault("Extension", {})
    scan: Table = {"extension": (_TYPE, extension), "modifierExtension": (_TYPE, extension)}
    for name, props in raw["types"].items():
        table = tables[name]
        table.update(scan)
        for prop, (kind, target) in props.items():
            code = _KINDS[kind]
            if code == _TYPE:
                table[prop] = (code, tables[target])
            elif code == _RESOURCE:
                table[prop] = (code, None)
            else:
                table[prop] = (code, value_sets[target])
    extension.update(scan)
    return tables, scan


_TABLES, _SCAN = _load()


# A path is rendered only when an issue is found: while walking it is a chain of
# (parent, property, index) tuples whose root is the resource type name.
PathChain = Union[str, tuple["PathChain", str, Optional[int]]]


def _render(path: PathChain) -> str:
    """``(("Observation", "component", 1), "valueQuantity", None)`` → FHIRPath-style text."""
    parts: list[str] = []
    while isinstance(path, tuple):
        path, key, index = path
        name = key[1:] if key.startswith("_") else key  # _status holds status' extensions
        parts.append(f".{name}" if index is None else f".{name}[{index}]")
    return path + "".join(reversed(parts))


def _issue(path: str, value: str, vs: _ValueSet, system: str | None = None) -> BindingIssue:
    """The issue for ``value`` at ``path``; long values are cut so messages stay short."""
    shown = value if len(value) <= _VALUE_SHOWN else value[:_VALUE_SHOWN] + "..."
    where = f" (system {system})" if system else ""
    return BindingIssue(path, f'{path}: "{shown}"{where} is not in the required value set '
                              f"{vs.url} (allowed: {vs.allowed})")


def _check_coding(coding: Any, path: PathChain, vs: _ValueSet, out: list[BindingIssue]) -> None:
    """A coding whose system belongs to the value set must use one of its codes."""
    if not isinstance(coding, dict):
        return
    system = coding.get("system")
    codes = vs.systems.get(system) if isinstance(system, str) else None
    if codes is None:
        return  # another code system (or none): a required binding does not judge it
    code = coding.get("code")
    if isinstance(code, str) and code not in codes:
        out.append(_issue(_render((path, "code", None)), code, vs, system))


def _sort_key(issue: BindingIssue) -> list[Any]:
    """Natural order of paths (``[2]`` before ``[10]``), for a stable, readable report."""
    # split() with a capturing group alternates text, index, text, ...
    return [int(p) if n % 2 else p for n, p in enumerate(_INDEX.split(issue.path))]


def check_required_bindings(resource: dict[str, Any]) -> list[BindingIssue]:
    """Every value of ``resource`` that violates a required binding (empty if none).

    Never raises on odd shapes: values of an unexpected JSON type are skipped (shape is
    the structural validator's job). Works iteratively, so deep nesting is no problem.
    Issues are sorted by path.
    """
    if not isinstance(resource, dict):
        return []
    rtype = resource.get("resourceType")
    name = rtype if isinstance(rtype, str) else "Resource"
    out: list[BindingIssue] = []
    stack: list[tuple[dict[str, Any], Table, PathChain]] = [
        (resource, _TABLES.get(name, _SCAN), name)]
    push = stack.append
    while stack:
        node, table, path = stack.pop()
        for key, value in node.items():
            entry = table.get(key)
            if entry is None:  # pruned subtree: only extensions inside can matter
                if isinstance(value, dict):
                    push((value, _SCAN, (path, key, None)))
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        if isinstance(item, dict):
                            push((item, _SCAN, (path, key, i)))
                continue
            kind, target = entry
            if kind == _TYPE:
                if isinstance(value, dict):
                    push((value, target, (path, key, None)))
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        if isinstance(item, dict):
                            push((item, target, (path, key, i)))
            elif kind == _CODE:
                if isinstance(value, str):
                    if value not in target.codes:
                        out.append(_issue(_render((path, key, None)), value, target))
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        if isinstance(item, str) and item not in target.codes:
                            out.append(_issue(_render((path, key, i)), item, target))
            elif kind == _RESOURCE:
                items = enumerate(value) if isinstance(value, list) else ((None, value),)
                for i, item in items:
                    if isinstance(item, dict):
                        rt = item.get("resourceType")
                        sub_table = _TABLES.get(rt, _SCAN) if isinstance(rt, str) else _SCAN
                        push((item, sub_table, (path, key, i)))
            else:  # Coding / CodeableConcept: check, then scan it for extensions
                items = enumerate(value) if isinstance(value, list) else ((None, value),)
                for i, item in items:
                    if not isinstance(item, dict):
                        continue
                    sub = (path, key, i)
                    if kind == _CODING:
                        _check_coding(item, sub, target, out)
                    else:
                        codings = item.get("coding")
                        if isinstance(codings, list):
                            for j, coding in enumerate(codings):
                                _check_coding(coding, (sub, "coding", j), target, out)
                    push((item, _SCAN, sub))
    if len(out) > 1:
        out.sort(key=_sort_key)
    return out
