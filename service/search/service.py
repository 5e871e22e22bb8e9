"""Type-level search: https://hl7.org/fhir/R4/search.html.

Builds the searchset Bundle from index hits and the stored bytes. Unknown parameters
are ignored and reported in an OperationOutcome entry (``search.mode = outcome``), or
refused with 400 under ``Prefer: handling=strict``. Paging uses a keyset cursor, so the
next links stay correct while data changes.
"""

from __future__ import annotations

from sqlalchemy import Engine, false, func, select

from service.db.engine import read_transaction
from service.db.schema import resource
from service.fhir import jsonio
from service.fhir.bundles import bundle, page_url, search_entry
from service.fhir.outcome import FhirError, error, operation_outcome
from service.search.matching import compile_clauses, unknown_issues
from service.search.query import parse_query
from service.storage.repository import ResourceRepository


def _int_param(params: list[tuple[str, str]], name: str) -> int | None:
    values = [v for k, v in params if k == name]
    if not values:
        return None
    if not values[-1].isdigit():
        raise error(400, "invalid", f"{name}={values[-1]} is not a non-negative integer.")
    return int(values[-1])


def search_bundle(
    engine: Engine,
    *,
    resource_type: str,
    params: list[tuple[str, str]],
    base_url: str,
    strict: bool,
    default_count: int,
    max_count: int,
    now_us: int,
) -> dict:
    clauses = parse_query(params)
    compiled = compile_clauses(resource_type, clauses)
    issues = unknown_issues(resource_type, compiled.unknown)
    if issues and strict:
        raise FhirError(400, [type(i)(i.code, i.diagnostics, "error", i.expression) for i in issues])
    count = _int_param(params, "_count")
    count = default_count if count is None else min(count, max_count)
    cursor = _int_param(params, "_cursor")
    total_mode = next((v for k, v in reversed(params) if k == "_total"), None)
    where = [resource.c.resource_type == resource_type, resource.c.deleted == false(), *compiled.conditions]
    with read_transaction(engine) as conn:
        keys: list[int] = []
        if count:
            stmt = select(resource.c.res_key).where(*where)
            if cursor is not None:
                stmt = stmt.where(resource.c.res_key > cursor)
            keys = [r[0] for r in conn.execute(stmt.order_by(resource.c.res_key).limit(count + 1)).all()]
        total = None
        if count == 0 or total_mode in ("accurate", "estimate"):
            total = int(conn.execute(select(func.count()).select_from(resource).where(*where)).scalar_one())
        page_keys, more = keys[:count], len(keys) > count
        found = ResourceRepository(conn).current_by_keys(page_keys)
    path = resource_type
    links = [("self", page_url(base_url, path, params))]
    if more and page_keys:
        links.append(("next", page_url(base_url, path, params, _cursor=str(page_keys[-1]))))
    entries = [search_entry(base_url, v) for v in found]
    if issues:
        entries.append({"resource": jsonio.fragment(jsonio.dumps(operation_outcome(issues))), "search": {"mode": "outcome"}})
    return bundle("searchset", entries, links, total=total, now_us=now_us)
