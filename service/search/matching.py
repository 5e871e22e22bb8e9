"""Conditional matching: "search, then act on 0 / 1 / many matches".

https://hl7.org/fhir/R4/http.html#ccreate. Conditional create, update, patch and delete
run the same SQL as search (:mod:`service.search.sql`), inside the caller's write
transaction. Matching is strict: a parameter the server cannot apply is a 400, because
ignoring it could update or delete the wrong resource. A caller bound to studies matches
only resources of its studies (:mod:`service.auth.studies`): others are absent for it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from sqlalchemy import Connection, false, select

from service.auth import policy
from service.db.engine import lock_criteria
from service.db.schema import resource
from service.fhir.outcome import FhirError, error
from service.search.query import CONTROL_PARAMS
from service.search.sql import QueryCompiler, strict_issues


def find_matches(conn: Connection, resource_type: str, query: str, *, limit: int = 2, base_url: str | None = None, lock: bool = False) -> list[int]:
    """``res_key`` of current, non-deleted resources matching ``query`` (at most ``limit``).

    ``lock`` first takes the criteria's advisory locks (a conditional write; see
    :func:`service.db.engine.lock_criteria`) and locks the matched rows."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in CONTROL_PARAMS]
    if not pairs:
        raise error(
            400,
            "invalid",
            "A conditional interaction needs search criteria (e.g. identifier=system|value); none were given.",
        )
    compiled = QueryCompiler(base_url).compile(resource_type, pairs)
    if compiled.unknown:
        raise FhirError(400, strict_issues(compiled.unknown))
    if lock:
        lock_criteria(conn, resource_type, pairs)
    visible = policy.search_condition(conn, resource_type)  # a study-bound caller matches only what it may see
    stmt = (
        select(resource.c.res_key)
        .where(resource.c.resource_type == resource_type, resource.c.deleted == false(), *compiled.conditions, *([visible] if visible is not None else []))
        .order_by(resource.c.res_key)
        .limit(limit)
    )
    keys = [row[0] for row in conn.execute(stmt).all()]
    if lock and keys and conn.dialect.name == "postgresql":
        conn.execute(select(resource.c.res_key).where(resource.c.res_key.in_(keys)).with_for_update())
    return keys
