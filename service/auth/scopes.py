"""SMART scopes: parsing and the check each FHIR interaction needs.

SMART App Launch v2, "Scopes and Launch Context" (scopes-and-launch-context.html):

- v2 form ``system/<Type|*>.<cruds>`` — the letters are a subset of ``c r u d s`` in that
  order (create, read, update, delete, search), e.g. ``system/Observation.cruds``,
  ``system/*.rs``;
- v1 form ``system/<Type|*>.<read|write|*>`` — ``read`` = ``rs``, ``write`` = ``cud``,
  ``*`` = ``cruds`` (the v2 spec keeps these working for existing clients).

Backend Services clients act on their own behalf, so only ``system/`` scopes are granted;
``patient/`` and ``user/`` scopes and granular query suffixes (``?category=…``) are refused
with a message rather than silently ignored. ``AuditEvent`` is the audit trail: a wildcard
never covers it, only a scope that names it (``system/AuditEvent.rs``) — the admin scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.fhir.resource_types import RESOURCE_TYPES

#: v2 permission letters in the order the spec fixes.
LETTERS = "cruds"
INTERACTION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")
#: Types a wildcard does not cover (reading them needs a scope that names them).
ADMIN_TYPES = frozenset({"AuditEvent"})


class ScopeError(ValueError):
    """A scope string this server cannot grant; the message says why and what to use."""


@dataclass(frozen=True, slots=True)
class Scope:
    """One ``system/<type>.<letters>`` scope, normalised to v2 letters."""

    resource_type: str  # "*" for every type
    letters: str
    text: str

    def covers(self, resource_type: str, letter: str) -> bool:
        if letter not in self.letters:
            return False
        if self.resource_type == "*":
            return resource_type not in ADMIN_TYPES
        return self.resource_type == resource_type

    def within(self, other: "Scope") -> bool:
        """True when ``other`` grants everything this scope asks for."""
        types_ok = other.resource_type == self.resource_type or (other.resource_type == "*" and self.resource_type not in ADMIN_TYPES)
        return types_ok and set(self.letters) <= set(other.letters)


def parse_scope(text: str) -> Scope:
    """One scope, or :class:`ScopeError` naming the problem."""
    m = _SCOPE.match(text)
    if not m:
        raise ScopeError(f"'{text}' is not a SMART scope; use e.g. system/Observation.rs or system/*.cruds.")
    context, rtype, perms, query = m.groups()
    if context != "system":
        raise ScopeError(f"'{text}': Backend Services clients get system/ scopes only (not {context}/).")
    if query:
        raise ScopeError(f"'{text}': granular scopes with a query (?…) are not supported; use system/{rtype}.{perms}.")
    if rtype != "*" and rtype not in RESOURCE_TYPES:
        raise ScopeError(f"'{text}': {rtype} is not a FHIR R4 resource type.")
    if perms in _V1:
        letters = _V1[perms]
    else:
        if not perms or any(ch not in LETTERS for ch in perms) or list(perms) != sorted(set(perms), key=LETTERS.index):
            raise ScopeError(f"'{text}': the permissions must be letters of 'cruds' in that order (e.g. rs, cud, cruds), or read / write / *.")
        letters = perms
    return Scope(rtype, letters, text)


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """A space-separated scope list; unknown non-resource scopes are refused."""
    scopes = [parse_scope(item) for item in text.split() if item]
    if not scopes:
        raise ScopeError("No scope given; ask for e.g. 'system/*.rs'.")
    return tuple(scopes)


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The scopes of one access token."""

    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, text: str) -> "ScopeSet":
        return cls(parse_scopes(text))

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.scopes)

    def allows(self, resource_type: str, letter: str) -> bool:
        return any(s.covers(resource_type, letter) for s in self.scopes)

    def readable_types(self, candidates: list[str] | tuple[str, ...] | set[str]) -> list[str]:
        return sorted(t for t in candidates if self.allows(t, "r"))


def needed_scope(resource_type: str, letter: str) -> str:
    """The narrowest scope that would allow ``letter`` on ``resource_type`` (for 403 texts)."""
    return f"system/{resource_type}.{letter}"


__all__ = ["ADMIN_TYPES", "INTERACTION_NAMES", "Scope", "ScopeError", "ScopeSet", "needed_scope", "parse_scope", "parse_scopes"]
