"""Validation of every resource before it is stored.

Three layers, cheapest and most informative first:

1. structure and datatypes — fhirkit-rs, a FHIR R4 (4.0.1) implementation generated from
   the official specification. It knows exactly the R4 types and elements, so R4B/R5-only
   types and elements are refused, and it accepts every valid official R4 example
   (fhir.resources' R4B models refuse 61 valid ones: its ``_valueX``-in-extension bug
   #204 and the R4-only types R4B dropped; ``tests/test_examples_corpus.py`` runs the
   corpus through both and pins the difference);
2. rules fhirkit does not check: the id format (``[A-Za-z0-9\\-.]{1,64}``), empty objects
   (ele-1), and extensions with neither value nor children (ext-1);
3. required value-set bindings from the official definitions (:mod:`service.fhir.bindings`).

Every problem is reported with its FHIRPath location; nothing is stored when any is found.
"""

from __future__ import annotations

import re
from typing import Any

import fhirkit

from service.fhir import jsonio
from service.fhir.bindings import check_required_bindings
from service.fhir.outcome import FhirError, Issue
from service.fhir.resource_types import RESOURCE_TYPES

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_ISSUES = 50


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.match(value) is not None


def _empty_objects(node: Any, path: str, out: list[Issue], is_extension: bool = False) -> None:
    """ele-1 (no empty objects) and ext-1 (an extension has a value or children).

    Only objects and arrays are descended into (primitives cannot break either rule), so
    a path string is built per container, not per value.
    """
    if isinstance(node, dict):
        if not node:
            out.append(Issue("structure", f"{path}: an empty object is not allowed (ele-1); leave the element out", expression=(path,)))
            return
        if is_extension and set(node) <= {"url", "id"}:
            out.append(Issue("structure", f"{path}: an extension needs a value[x] or nested extensions (ext-1)", expression=(path,)))
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                _empty_objects(value, f"{path}.{key}", out, key in ("extension", "modifierExtension"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, (dict, list)):
                _empty_objects(item, f"{path}[{i}]", out, is_extension)


def _may_break_ele1(text: bytes) -> bool:
    """Whether the walk of :func:`_empty_objects` can find anything: only an empty object
    or an extension can break ele-1/ext-1. ``text`` must be :func:`jsonio.dumps`' output
    (orjson: compact, keys written as they are), where an empty object is always ``{}``
    and an extension key always ``extension"`` / ``Extension"``; a match inside a string
    only costs the walk."""
    return b"{}" in text or b'xtension"' in text


def _id_issues(resource: dict[str, Any], path: str, out: list[Issue]) -> None:
    rid = resource.get("id")
    if rid is not None and not is_valid_id(rid):
        out.append(Issue("value", f"{path}.id: '{rid}' is not a valid id (1-64 of A-Z a-z 0-9 - .)", expression=(f"{path}.id",)))
    for i, contained in enumerate(resource.get("contained") or []):
        if isinstance(contained, dict):
            _id_issues(contained, f"{path}.contained[{i}]", out)


def validation_issues(resource: dict[str, Any], raw: bytes | None = None) -> list[Issue]:
    """Every problem found in ``resource`` (empty when it is valid R4).

    ``raw`` is the JSON text the dict was parsed from, when the caller still has it.
    Without it the dict is serialised first (decimals keep their text): fhirkit reads
    text about 3× faster than a dict, so serialising and reading beats walking the dict.
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
        return [Issue("not-supported", f"'{rtype}' is not a FHIR R4 (4.0.1) resource type", expression=("resourceType",))]
    issues: list[Issue] = []
    try:
        text: bytes | None = jsonio.dumps(resource)
    except TypeError:  # not plain JSON data: let fhirkit read the dict as it is
        text = None
    if raw is None:
        raw = text
    for found in fhirkit.validate(raw if raw is not None else resource):
        if found.severity == "error":
            issues.append(Issue(_issue_code(found.message), f"{found.path}: {found.message}", expression=(found.path,)))
            if len(issues) >= MAX_ISSUES:
                return issues
    if issues:
        return issues
    _id_issues(resource, rtype, issues)
    if text is None or _may_break_ele1(text):
        _empty_objects(resource, rtype, issues)
    for bad in check_required_bindings(resource):
        issues.append(Issue("code-invalid", bad.message, expression=(bad.path,)))
    return issues[:MAX_ISSUES]


def _issue_code(message: str) -> str:
    if "required element missing" in message:
        return "required"
    if "unknown element" in message or "not a FHIR R4 resource type" in message:
        return "structure"
    return "value"


def validate(resource: dict[str, Any], raw: bytes | None = None) -> None:
    """Raise a 400 :class:`FhirError` listing every problem unless ``resource`` is valid R4."""
    issues = validation_issues(resource, raw)
    if issues:
        raise FhirError(400, issues)
