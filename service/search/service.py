"""Search: https://hl7.org/fhir/R4/search.html — type level, compartments, POST _search.

Builds the searchset Bundle from index hits and the stored bytes:

- filters compile to SQL (:mod:`service.search.sql`); unknown parameters are ignored and
  reported in an OperationOutcome entry (``search.mode = outcome``), or refused with 400
  under ``Prefer: handling=strict``;
- ``_sort`` (several keys, ``-`` descending) and paging by keyset cursor: the next link
  carries the last row's sort values, so pages stay correct while data changes (no OFFSET);
- ``_count``, ``_total`` (none | estimate | accurate; always when ``_count=0``),
  ``_summary`` (true | text | data | count | false), ``_elements``;
- ``_include`` / ``_revinclude`` with ``:iterate`` and ``*``.

Authorization (:mod:`service.auth.policy`): the caller needs the ``s`` scope letter on the
type; a caller bound to studies finds only what its studies may see (the condition is part
of the SQL, so totals and paging agree), and included resources are left out unless the
caller may read their type and see them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, false, func, or_, select, tuple_

from service.auth import audit, policy
from service.db.engine import active_engine, read_transaction
from service.db.schema import idx_date, idx_number, idx_quantity, idx_reference, idx_string, idx_token, idx_uri, resource
from service.fhir import jsonio
from service.fhir.bundles import bundle, page_url
from service.fhir.outcome import FhirError, error, operation_outcome
from service.search.registry import registry
from service.search.sql import QueryCompiler, strict_issues
from service.storage.repository import ResourceRepository, StoredVersion

_DEFINITIONS = Path(__file__).resolve().parent.parent / "fhir" / "definitions"
_SORT_TABLES = {
    "string": (idx_string, "norm"),
    "token": (idx_token, "value"),
    "date": (idx_date, "lo"),
    "number": (idx_number, "value"),
    "quantity": (idx_quantity, "value"),
    "reference": (idx_reference, "target_id"),
    "uri": (idx_uri, "value"),
}
MAX_INCLUDE_DEPTH = 4
MAX_INCLUDED = 1000
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "Resource encoded in summary mode"}


@lru_cache(maxsize=1)
def summary_elements() -> dict[str, dict[str, list[str]]]:
    return json.loads((_DEFINITIONS / "r4_summary_elements.json").read_text())


@lru_cache(maxsize=1)
def compartments() -> dict[str, dict[str, list[str]]]:
    return json.loads((_DEFINITIONS / "r4_compartments.json").read_text())


@dataclass(frozen=True, slots=True)
class SearchRequest:
    resource_type: str
    params: list[tuple[str, str]]
    base_url: str
    strict: bool
    default_count: int
    max_count: int
    now_us: int
    #: ("Patient", "123") for ``Patient/123/Observation``
    compartment: tuple[str, str] | None = None


def _last(params: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    return values[-1] if values else None


def _int_param(params: list[tuple[str, str]], name: str) -> int | None:
    value = _last(params, name)
    if value is None:
        return None
    if not value.isdigit():
        raise error(400, "invalid", f"{name}={value} is not a non-negative integer.")
    return int(value)


# --- sorting and cursors ------------------------------------------------------------------------


def _sort_keys(resource_type: str, params: list[tuple[str, str]]) -> list[tuple[Any, bool]]:
    """[(SQL expression, descending)] for ``_sort`` (comma-separated and/or repeated)."""
    keys: list[tuple[Any, bool]] = []
    for raw in [v for k, v in params if k == "_sort"]:
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            desc = item.startswith("-")
            code = item.lstrip("-")
            if ":" in code:  # fhirclient's legacy name:asc / name:desc
                code, _, direction = code.partition(":")
                desc = desc or direction == "desc"
            if code == "_id":
                keys.append((resource.c.id, desc))
                continue
            if code == "_lastUpdated":
                keys.append((resource.c.last_updated_us, desc))
                continue
            param = registry().get(resource_type, code)
            if param is None or param.type not in _SORT_TABLES:
                raise error(400, "not-supported", f"_sort={code}: {resource_type} has no sortable parameter '{code}'.")
            table, column = _SORT_TABLES[param.type]
            agg = func.max if (desc and param.type == "date") else func.min
            col = table.c.hi if (desc and param.type == "date") else table.c[column]
            expr = (
                select(agg(col))
                .where(table.c.res_key == resource.c.res_key, table.c.param == code)
                .scalar_subquery()
            )
            keys.append((expr, desc))
    return keys


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(text: str, n_keys: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise error(400, "invalid", "_cursor is not a cursor this server issued; follow the Bundle's next link.") from None
    if not isinstance(values, list) or len(values) != 2 * n_keys + 1:
        raise error(400, "invalid", "_cursor does not fit this query's _sort; follow the Bundle's next link.")
    return values


def _after(cols: list[tuple[Any, Any, bool]], key_col: Any, cursor: list[Any]) -> Any:
    """Rows strictly after ``cursor`` in the order (flag asc, value asc|desc)…, res_key asc."""
    ors = []
    equal_prefix: list[Any] = []
    for i, (flag_col, value_col, desc) in enumerate(cols):
        flag, value = cursor[2 * i], cursor[2 * i + 1]
        if flag == 1:
            greater = false()
            equal = flag_col == 1
        else:
            greater = or_(flag_col > 0, and_(flag_col == 0, value_col < value if desc else value_col > value))
            equal = and_(flag_col == 0, value_col == value)
        ors.append(and_(*equal_prefix, greater))
        equal_prefix.append(equal)
    ors.append(and_(*equal_prefix, key_col > cursor[-1]))
    return or_(*ors)


# --- _summary / _elements ----------------------------------------------------------------------------


def _keep_element(name: str, allowed: set[str]) -> bool:
    if name in allowed:
        return True
    for a in allowed:
        if a.endswith("[x]") and name.startswith(a[:-3]) and name[len(a) - 3 : len(a) - 2].isupper():
            return True
    return False


def shape(content: bytes, resource_type: str, summary: str | None, elements: list[str] | None) -> bytes:
    """Apply ``_summary`` / ``_elements`` to stored bytes (unchanged when neither is given)."""
    if (summary in (None, "false")) and not elements:
        return content
    doc = jsonio.loads(content)
    spec = summary_elements().get(resource_type, {"summary": [], "mandatory": []})
    if elements:
        allowed = set(elements) | {"id", "meta"} | set(spec["mandatory"])
        out = {k: v for k, v in doc.items() if k == "resourceType" or _keep_element(k, allowed)}
    elif summary == "true":
        allowed = set(spec["summary"]) | set(spec["mandatory"])
        out = {k: v for k, v in doc.items() if k == "resourceType" or _keep_element(k, allowed)}
    elif summary == "text":
        allowed = {"id", "meta", "text"} | set(spec["mandatory"])
        out = {k: v for k, v in doc.items() if k == "resourceType" or _keep_element(k, allowed)}
    elif summary == "data":
        out = {k: v for k, v in doc.items() if k != "text"}
    else:
        out = doc
    meta = dict(out.get("meta") or {})
    meta["tag"] = list(meta.get("tag") or []) + [SUBSETTED]
    out["meta"] = meta
    return jsonio.dumps(out)


# --- includes ------------------------------------------------------------------------------------


def _parse_include(value: str) -> tuple[str, str, str | None]:
    parts = value.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise error(400, "invalid", f"'{value}' is not a valid include: use Type:parameter[:targetType] or Type:*.")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else None


def _include_specs(params: list[tuple[str, str]], name: str) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str, str | None]]]:
    once, iterate = [], []
    for k, v in params:
        base, _, mod = k.partition(":")
        if base != name:
            continue
        spec = _parse_include(v)
        (iterate if mod in ("iterate", "recurse") else once).append(spec)
    return once, iterate


def _reference_params(source_type: str, code: str) -> list[str]:
    if code == "*":
        return [c for c, p in registry().for_type(source_type).items() if p.type == "reference"]
    param = registry().get(source_type, code)
    if param is None or param.type != "reference":
        raise error(400, "invalid", f"_include/_revinclude: '{code}' is not a reference parameter of {source_type}.")
    return [code]


def _includes(conn: Connection, matched: list[StoredVersion], params: list[tuple[str, str]]) -> list[StoredVersion]:
    inc_once, inc_iter = _include_specs(params, "_include")
    rev_once, rev_iter = _include_specs(params, "_revinclude")
    if not (inc_once or inc_iter or rev_once or rev_iter):
        return []
    seen = {(v.resource_type, v.id) for v in matched}
    result: list[StoredVersion] = []
    frontier = matched
    depth = 0
    while frontier and depth < MAX_INCLUDE_DEPTH and len(result) < MAX_INCLUDED:
        inc = inc_once + inc_iter if depth == 0 else inc_iter
        rev = rev_once + rev_iter if depth == 0 else rev_iter
        if not inc and not rev:
            break
        found: list[StoredVersion] = []
        keys_by_type: dict[str, list[int]] = {}
        for v in frontier:
            keys_by_type.setdefault(v.resource_type, []).append(v.res_key)
        r = idx_reference.c
        for source_type, code, target in inc:
            keys = keys_by_type.get(source_type)
            if not keys:
                continue
            stmt = select(r.target_type, r.target_id).where(
                r.resource_type == source_type, r.param.in_(_reference_params(source_type, code)), r.res_key.in_(keys), r.target_id.is_not(None), r.url.is_(None)
            )
            if target:
                stmt = stmt.where(r.target_type == target)
            pairs = {(t, i) for t, i in conn.execute(stmt).all() if t}
            if pairs:
                rows = conn.execute(
                    select(resource.c.res_key).where(tuple_(resource.c.resource_type, resource.c.id).in_(list(pairs)), resource.c.deleted == false())
                ).all()
                found.extend(ResourceRepository(conn).current_by_keys([row[0] for row in rows]))
        for source_type, code, target in rev:
            targets = [(v.resource_type, v.id) for v in frontier if target is None or v.resource_type == target]
            if not targets:
                continue
            stmt = select(r.res_key).where(
                r.resource_type == source_type,
                r.param.in_(_reference_params(source_type, code)),
                tuple_(r.target_type, r.target_id).in_(targets),
                r.url.is_(None),
            )
            found.extend(ResourceRepository(conn).current_by_keys(sorted({row[0] for row in conn.execute(stmt).all()})))
        new = []
        for v in found:
            if (v.resource_type, v.id) not in seen and not v.deleted:
                seen.add((v.resource_type, v.id))
                new.append(v)
        result.extend(new)
        frontier = new
        depth += 1
    return result[:MAX_INCLUDED]


# --- the search -----------------------------------------------------------------------------------


def _compartment_condition(compartment: tuple[str, str], resource_type: str) -> Any:
    ctype, cid = compartment
    if resource_type == ctype:
        return resource.c.id == cid
    codes = compartments().get(ctype, {}).get(resource_type)
    if not codes:
        raise error(404, "not-found", f"{resource_type} is not in the {ctype} compartment.")
    r = idx_reference.c
    return resource.c.res_key.in_(
        select(r.res_key).where(r.resource_type == resource_type, r.param.in_(codes), r.target_type == ctype, r.target_id == cid, r.url.is_(None))
    )


def run_search(engine: Engine, req: SearchRequest, conn: Connection | None = None, *, collect: list[StoredVersion] | None = None) -> dict[str, Any]:
    """Execute a search and return the searchset Bundle (resources embedded as stored bytes).

    ``conn`` runs it inside the caller's transaction (GET entries of a transaction Bundle)."""
    active_engine.set(engine)
    params = req.params
    rtype = req.resource_type
    policy.require(rtype, "s")
    compiled = QueryCompiler(req.base_url).compile(rtype, params)
    if compiled.unknown and req.strict:
        raise FhirError(400, strict_issues(compiled.unknown))
    count = _int_param(params, "_count")
    count = req.default_count if count is None else min(count, req.max_count)
    summary = _last(params, "_summary")
    if summary not in (None, "true", "false", "text", "data", "count"):
        raise error(400, "invalid", f"_summary={summary}: use true, false, text, data or count.")
    if summary == "count":
        count = 0
    total_mode = _last(params, "_total")
    if total_mode not in (None, "none", "estimate", "accurate"):
        raise error(400, "invalid", f"_total={total_mode}: use none, estimate or accurate.")
    elements_raw = _last(params, "_elements")
    elements = [e.strip() for e in elements_raw.split(",") if e.strip() and e.strip() != "resourceType"] if elements_raw else None

    where = [resource.c.resource_type == rtype, resource.c.deleted == false(), *compiled.conditions]
    if req.compartment:
        where.append(_compartment_condition(req.compartment, rtype))
    sort_keys = _sort_keys(rtype, params)
    cursor_text = _last(params, "_cursor")

    from contextlib import nullcontext

    with (nullcontext(conn) if conn is not None else read_transaction(engine)) as conn:
        visible = policy.search_condition(conn, rtype)
        if visible is not None:
            where.append(visible)
        page_keys: list[int] = []
        next_cursor: str | None = None
        if count:
            flag_cols = []
            inner_cols = [resource.c.res_key.label("k")]
            for i, (expr, desc) in enumerate(sort_keys):
                inner_cols.append(case((expr.is_(None), 1), else_=0).label(f"f{i}"))
                inner_cols.append(expr.label(f"v{i}"))
            page_where = where
            if cursor_text and not sort_keys:
                # default order: the keyset bound also goes inside the driving lookup
                after_key = _decode_cursor(cursor_text, 0)[0]
                if isinstance(after_key, int):
                    n = len(compiled.conditions)
                    page_where = [*where[:2], *compiled.after(after_key), *where[2 + n :]]
            inner = select(*inner_cols).where(*page_where).subquery()
            for i, (_, desc) in enumerate(sort_keys):
                flag_cols.append((inner.c[f"f{i}"], inner.c[f"v{i}"], desc))
            stmt = select(inner)
            if cursor_text:
                cursor = _decode_cursor(cursor_text, len(sort_keys))
                stmt = stmt.where(_after(flag_cols, inner.c.k, cursor))
            order = []
            for flag_col, value_col, desc in flag_cols:
                order.append(flag_col.asc())
                order.append(value_col.desc() if desc else value_col.asc())
            order.append(inner.c.k.asc())
            rows = conn.execute(stmt.order_by(*order).limit(count + 1)).all()
            page = rows[:count]
            page_keys = [row[0] for row in page]
            if len(rows) > count and page:
                last = page[-1]
                values: list[Any] = []
                for i in range(len(sort_keys)):
                    values.extend([last[1 + 2 * i], last[2 + 2 * i]])
                values.append(last[0])
                next_cursor = _encode_cursor(values)
        total = None
        if count == 0 or total_mode in ("accurate", "estimate"):
            total = int(conn.execute(select(func.count()).select_from(resource).where(*where)).scalar_one())
        matched = ResourceRepository(conn).current_by_keys(page_keys)
        if collect is not None:
            collect.extend(matched)
        included = policy.readable(conn, _includes(conn, matched, params)) if matched else []
    audit.note_search(rtype, params)
    audit.note_read(matched)
    audit.note_read(included)

    path = rtype if req.compartment is None else f"{req.compartment[0]}/{req.compartment[1]}/{rtype}"
    ignored = {name for issue in compiled.unknown for name in issue.expression}
    used = [(k, v) for k, v in params if k not in ignored]
    shown = [(k, v) for k, v in used if k != "_cursor"]
    links = [("self", page_url(req.base_url, path, used))]
    if next_cursor:
        links.append(("next", page_url(req.base_url, path, shown, _cursor=next_cursor)))
    entries = []
    for v in matched:
        entries.append(_entry(req.base_url, v, "match", summary, elements))
    for v in included:
        entries.append(_entry(req.base_url, v, "include", summary, None))
    if compiled.unknown:
        oo = operation_outcome(list(compiled.unknown))
        entries.append({"resource": jsonio.fragment(jsonio.dumps(oo)), "search": {"mode": "outcome"}})
    return bundle("searchset", entries, links, total=total, now_us=req.now_us)


def _entry(base_url: str, v: StoredVersion, mode: str, summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    content = shape(v.content or b"{}", v.resource_type, summary, elements)
    return {"fullUrl": f"{base_url}/{v.resource_type}/{v.id}", "resource": jsonio.fragment(content), "search": {"mode": mode}}
