"""Index rows for a resource, written in the same transaction as its version.

Split into small column builders, one per parameter type (Medplum's approach): each
takes the values a parameter's path reaches and returns index rows. This module holds
the token builder; the search capability adds the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from service.search.paths import CompiledPath, compile_path
from service.search.registry import SearchParam, registry
from service.storage.repository import TokenRow

_CONTACT_SYSTEMS = {"phone", "fax", "email", "pager", "url", "sms", "other"}


def token_values(value: Any) -> Iterator[tuple[str | None, str | None]]:
    """(system, code) pairs a token parameter indexes for one element.

    Handles CodeableConcept (each coding), Coding, Identifier (system|value),
    ContactPoint (value only: its ``system`` is phone/email…, not a URI), and
    primitives (code, id, string, uri, boolean).
    """
    if isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and (coding.get("code") is not None or coding.get("system")):
                    yield coding.get("system"), _text(coding.get("code"))
            return
        if "value" in value and not isinstance(value.get("value"), dict):
            system = value.get("system")
            # A ContactPoint's system is phone/email/…, not a URI: only its value is a token.
            yield (None if system in _CONTACT_SYSTEMS else system), _text(value.get("value"))
            return
        if "code" in value or "system" in value:
            yield value.get("system"), _text(value.get("code"))
        return
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, (str, int)):
        yield None, str(value)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@lru_cache(maxsize=None)
def _token_params(resource_type: str) -> tuple[tuple[str, tuple[CompiledPath, ...]], ...]:
    """The token parameters of a type whose paths compile, with their compiled paths."""
    out: list[tuple[str, tuple[CompiledPath, ...]]] = []
    for code, param in sorted(registry().for_type(resource_type).items()):
        if param.type != "token" or code in ("_id",):
            continue
        compiled = tuple(c for c in (compile_path(p, resource_type) for p in param.paths) if c is not None)
        if compiled:
            out.append((code, compiled))
    return tuple(out)


def token_rows(resource_type: str, resource: dict[str, Any]) -> list[TokenRow]:
    """All token index rows for ``resource`` (deduplicated)."""
    seen: set[tuple[str, str | None, str | None]] = set()
    rows: list[TokenRow] = []
    for code, paths in _token_params(resource_type):
        for path in paths:
            for value in path.values(resource):
                for system, token in token_values(value):
                    key = (code, system, token)
                    if key not in seen:
                        seen.add(key)
                        rows.append(TokenRow(code, system, token))
    return rows


def indexed_token_params(resource_type: str) -> frozenset[str]:
    """Token parameter codes that are indexed for ``resource_type`` (plus ``_id``)."""
    return frozenset([c for c, _ in _token_params(resource_type)] + ["_id"])


def supported(param: SearchParam) -> bool:
    return param.code in indexed_token_params(param.resource_type)

