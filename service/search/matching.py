"""Turn parsed search clauses into SQL over the index tables.

Conditional create/update/delete and type-level search share this: a conditional
interaction is "search, then act on 0 / 1 / many matches" (https://hl7.org/fhir/R4/http.html#ccreate).
This first version covers ``_id``, ``_lastUpdated`` and every token parameter whose path
compiles; the search capability grows it to every R4 parameter type.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, ColumnElement, and_, exists, false, not_, or_, select, true

from service.db.schema import idx_token, resource
from service.fhir.outcome import Issue, error
from service.search.dates import DateRangeError, parse_date_clause
from service.search.indexing import indexed_token_params
from service.search.query import CONTROL_PARAMS, SearchClause, split_token
from service.search.registry import registry


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """SQL conditions for the resource table, plus the clauses that were not understood."""

    conditions: tuple[ColumnElement[bool], ...]
    unknown: tuple[SearchClause, ...]


def _token_condition(resource_type: str, clause: SearchClause) -> ColumnElement[bool]:
    modifier = clause.modifier
    if modifier == "missing":
        has_any = exists().where(
            idx_token.c.res_key == resource.c.res_key, idx_token.c.param == clause.name
        )
        wanted = clause.values[0].lower()
        if wanted not in ("true", "false"):
            raise error(400, "invalid", f"{clause.raw_name} takes true or false, not '{clause.values[0]}'")
        return not_(has_any) if wanted == "true" else has_any
    alternatives: list[ColumnElement[bool]] = []
    for value in clause.values:
        if clause.name == "_id":
            alternatives.append(resource.c.id == value)
            continue
        system, code = split_token(value)
        parts: list[ColumnElement[bool]] = []
        if code is not None:
            parts.append(idx_token.c.value == code)
        if system is not None:
            parts.append(idx_token.c.system.is_(None) if system == "" else idx_token.c.system == system)
        alternatives.append(and_(*parts) if parts else true())
    if clause.name == "_id":
        match: ColumnElement[bool] = or_(*alternatives) if alternatives else false()
        return not_(match) if modifier == "not" else match
    match = exists().where(
        idx_token.c.res_key == resource.c.res_key,
        idx_token.c.param == clause.name,
        or_(*alternatives),
    )
    if modifier == "not":
        return not_(match)
    return match


_TOKEN_MODIFIERS = {None, "not", "missing"}


def compile_clauses(resource_type: str, clauses: list[SearchClause]) -> CompiledQuery:
    """SQL conditions for ``clauses``; unknown or unsupported ones are returned, not dropped."""
    conditions: list[ColumnElement[bool]] = []
    unknown: list[SearchClause] = []
    indexed = indexed_token_params(resource_type)
    for clause in clauses:
        if clause.name in CONTROL_PARAMS:
            continue
        if clause.name == "_lastUpdated":
            try:
                conditions.append(parse_date_clause(clause, resource.c.last_updated_us))
            except DateRangeError as exc:
                raise error(400, "invalid", str(exc)) from None
            continue
        param = registry().get(resource_type, clause.name)
        if param is None or clause.name not in indexed or clause.modifier not in _TOKEN_MODIFIERS:
            unknown.append(clause)
            continue
        conditions.append(_token_condition(resource_type, clause))
    return CompiledQuery(tuple(conditions), tuple(unknown))


def unknown_issues(resource_type: str, unknown: tuple[SearchClause, ...]) -> list[Issue]:
    """One warning per parameter that was not applied, naming it and why."""
    issues = []
    for clause in unknown:
        param = registry().get(resource_type, clause.name)
        if param is None:
            text = f"Unknown search parameter '{clause.raw_name}' for {resource_type}; it was not applied."
        elif clause.modifier:
            text = f"Modifier ':{clause.modifier}' is not supported for '{clause.name}'; it was not applied."
        else:
            text = f"Search parameter '{clause.name}' ({param.type}) is not supported yet; it was not applied."
        issues.append(Issue("not-supported", text, severity="warning", expression=(clause.raw_name,)))
    return issues


def find_matches(conn: Connection, resource_type: str, clauses: list[SearchClause], *, limit: int = 2) -> list[int]:
    """``res_key`` of current, non-deleted resources matching every clause (at most ``limit``).

    Used by conditional interactions, so it is strict: an unknown parameter is a 400,
    because ignoring it could update or delete the wrong resource.
    """
    filters = [c for c in clauses if c.name not in CONTROL_PARAMS]
    if not filters:
        raise error(
            400,
            "invalid",
            "A conditional interaction needs search criteria (e.g. identifier=system|value); none were given.",
        )
    compiled = compile_clauses(resource_type, filters)
    if compiled.unknown:
        raise FhirStrictError(resource_type, compiled.unknown)
    stmt = (
        select(resource.c.res_key)
        .where(resource.c.resource_type == resource_type, resource.c.deleted == false(), *compiled.conditions)
        .order_by(resource.c.res_key)
        .limit(limit)
    )
    return [row[0] for row in conn.execute(stmt).all()]


def FhirStrictError(resource_type: str, unknown: tuple[SearchClause, ...]):  # noqa: N802 - factory
    issues = unknown_issues(resource_type, unknown)
    issues = [Issue("not-supported", i.diagnostics.replace("; it was not applied.", "."), expression=i.expression) for i in issues]
    from service.fhir.outcome import FhirError

    return FhirError(400, issues)
