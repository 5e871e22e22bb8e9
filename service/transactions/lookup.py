"""Set-based matching of a transaction's conditional creates.

A Bundle that creates 100 Patients with ``ifNoneExist: identifier=sys|p1`` … would run 100
searches one after the other (and, on PostgreSQL, 100 row-locking reads). The common
form of criteria — one token parameter with ``[system|]code`` values, no modifier, no
chain — is answered here for all entries at once: one query per (type, parameter) over
``idx_token``, then one read of the matched resources (``FOR UPDATE`` on PostgreSQL).
Every other form is left to :func:`service.search.matching.find_matches`, one entry at a
time, as before.

The answer is the one ``find_matches(conn, type, criteria, lock=True)`` followed by
``current_by_keys`` gives: the token rule of
:meth:`service.search.sql.QueryCompiler._token_match` (code equal; ``system|code`` that
system, ``|code`` no system, ``code`` any system; comma-separated values OR), current
non-deleted resources only, only what the caller may see
(:func:`service.auth.policy.search_condition`), at most two matches in ``res_key``
order, read after they are locked. The criteria's advisory locks are taken by the caller
before (as the whole transaction does for all its criteria).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import Connection, false, select

from service.auth import policy
from service.db.schema import idx_token, resource
from service.search.indexing import indexed_params
from service.search.query import CONTROL_PARAMS, split_token, split_values
from service.search.registry import registry
from service.search.sql import _unescape
from service.storage.repository import _CURRENT_COLS, StoredVersion

#: Values per ``IN (…)`` list (SQLite allows 32,766 parameters per statement).
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class TokenCriteria:
    """``name=[system|]code,…`` for one token parameter, unescaped."""

    resource_type: str
    #: the parameter's index rows: ``idx_token.resource_type`` and ``idx_token.param``
    index_type: str
    param: str
    #: (system — None any, "" none — , code) per comma-separated value
    alternatives: tuple[tuple[str | None, str], ...]

    def matches(self, system: str | None, value: str | None) -> bool:
        for want_system, code in self.alternatives:
            if value == code and (want_system is None or (system is None if want_system == "" else system == want_system)):
                return True
        return False


def token_criteria(resource_type: str, query: str) -> TokenCriteria | None:
    """The criteria as :class:`TokenCriteria`, or None when they take another form."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in CONTROL_PARAMS]
    if len(pairs) != 1:
        return None
    name, raw = pairs[0]
    if not name or name.startswith("_") or ":" in name or "." in name:
        return None
    param = registry().get(resource_type, name)
    if param is None or param.type != "token" or name not in indexed_params(resource_type):
        return None
    alternatives = []
    for value in split_values(raw):
        system, code = split_token(value)
        if code is None:
            return None
        alternatives.append((None if system is None else _unescape(system), _unescape(code)))
    return TokenCriteria(resource_type, param.resource_type, param.code, tuple(alternatives))


def match_many(conn: Connection, criteria: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[StoredVersion]]:
    """Matches of every (type, criteria) pair in token form (at most two each, ``res_key``
    order, locked on PostgreSQL); pairs in another form are not in the result."""
    parsed = {c: t for c in dict.fromkeys(criteria) if (t := token_criteria(*c)) is not None}
    groups: dict[tuple[str, str, str], list[tuple[tuple[str, str], TokenCriteria]]] = {}
    for key, crit in parsed.items():
        groups.setdefault((crit.resource_type, crit.index_type, crit.param), []).append((key, crit))
    found: dict[tuple[str, str], list[int]] = {}
    for (rtype, index_type, param), items in groups.items():
        by_value: dict[str | None, list[tuple[int, str | None]]] = {}
        for res_key, system, value in _token_rows(conn, rtype, index_type, param, sorted({code for _, c in items for _, code in c.alternatives})):
            by_value.setdefault(value, []).append((res_key, system))
        for key, crit in items:
            keys = {k for _, code in crit.alternatives for k, system in by_value.get(code, ()) if crit.matches(system, code)}
            found[key] = sorted(keys)[:2]
    versions = _read_locked(conn, sorted({k for keys in found.values() for k in keys}))
    return {key: [versions[k] for k in keys if k in versions] for key, keys in found.items()}


def _token_rows(conn: Connection, rtype: str, index_type: str, param: str, codes: list[str]) -> list[tuple[int, str | None, str | None]]:
    """(res_key, system, value) of the token rows with one of ``codes``, of resources the
    caller may see that are current and not deleted."""
    visible = policy.search_condition(conn, rtype)
    out: list[tuple[int, str | None, str | None]] = []
    for start in range(0, len(codes), _CHUNK):
        stmt = (
            select(idx_token.c.res_key, idx_token.c.system, idx_token.c.value)
            .select_from(idx_token.join(resource, resource.c.res_key == idx_token.c.res_key))
            .where(
                idx_token.c.resource_type == index_type,
                idx_token.c.param == param,
                idx_token.c.value.in_(codes[start : start + _CHUNK]),
                resource.c.resource_type == rtype,
                resource.c.deleted == false(),
                *([visible] if visible is not None else []),
            )
        )
        out.extend((r[0], r[1], r[2]) for r in conn.execute(stmt))
    return out


def _read_locked(conn: Connection, keys: list[int]) -> dict[int, StoredVersion]:
    """Current versions of ``keys``, locked first on PostgreSQL (READ COMMITTED then reads
    the latest committed version)."""
    out: dict[int, StoredVersion] = {}
    for start in range(0, len(keys), _CHUNK):
        stmt = select(*_CURRENT_COLS).where(resource.c.res_key.in_(keys[start : start + _CHUNK]))
        if conn.dialect.name == "postgresql":
            stmt = stmt.order_by(resource.c.res_key).with_for_update()
        for row in conn.execute(stmt):
            out[row[0]] = StoredVersion(*row)
    return out


__all__ = ["TokenCriteria", "match_many", "token_criteria"]
