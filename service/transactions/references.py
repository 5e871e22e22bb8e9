"""Reference rewriting inside a transaction Bundle.

https://hl7.org/fhir/R4/http.html#trules: an entry's ``fullUrl`` (``urn:uuid:…``,
``urn:oid:…`` or an absolute URL) stands for the resource the server creates or
updates; every ``Reference.reference`` that uses it — at any depth, inside extensions,
contained resources and backbone elements — is rewritten to ``Type/id``. A conditional
reference (``Patient?identifier=sys|123``) is resolved by search: exactly one match, or
the transaction fails (404 none, 412 several).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: (object, key, value before the rewrite) for every change :func:`rewrite_references` made
Journal = list[tuple[dict[str, Any], str, Any]]


def rewrite_references(
    node: Any, resolve: Callable[[str], str | None], mapping: dict[str, str] | None = None, journal: Journal | None = None
) -> Any:
    """Rewrite every ``reference`` string in ``node`` in place with ``resolve`` (None = keep).

    With ``mapping`` (fullUrl → Type/id), uri/url elements equal to a fullUrl and links to
    one in narrative ``div`` are rewritten too, as the transaction rules require. Every
    change is appended to ``journal`` (when given) so :func:`undo` can put it back: a
    transaction that is re-run after a conflict starts again from the client's resources
    without copying them all up front."""
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            ref = current.get("reference")
            if isinstance(ref, str):
                new = resolve(ref)
                if new is not None:
                    if journal is not None:
                        journal.append((current, "reference", ref))
                    current["reference"] = new
            for key, value in current.items():
                if isinstance(value, (dict, list)):
                    stack.append(value)
                elif mapping and isinstance(value, str) and key != "reference":
                    if value in mapping:
                        replaced = mapping[value]
                    elif key == "div" and ("urn:" in value or "://" in value):
                        replaced = value
                        for old, new in mapping.items():
                            if old in replaced:
                                replaced = replaced.replace(f'"{old}"', f'"{new}"')
                    else:
                        continue
                    if replaced != value:
                        if journal is not None:
                            journal.append((current, key, value))
                        current[key] = replaced
        elif isinstance(current, list):
            stack.extend(v for v in current if isinstance(v, (dict, list)))
    return node


def undo(journal: Journal) -> None:
    """Put back, newest first, every value recorded in ``journal``; leaves it empty."""
    while journal:
        obj, key, value = journal.pop()
        obj[key] = value


def is_local_placeholder(ref: str) -> bool:
    return ref.startswith("urn:uuid:") or ref.startswith("urn:oid:")


def is_conditional_reference(ref: str) -> bool:
    head = ref.split("?", 1)[0]
    return "?" in ref and "/" not in head and head[:1].isupper()
