"""History: https://hl7.org/fhir/R4/http.html#history (instance, type and system level).

Newest first, paged with a keyset cursor on the global write sequence, so a page walk
stays correct while new versions are written (no OFFSET, no skipped or repeated rows).

Authorization: instance and type history need the ``r`` scope letter on the type; system
history lists only the types the caller may read. A caller bound to studies sees the history
of resources its studies may see now (:mod:`service.auth.studies`); a page may then hold
fewer entries than ``_count`` — follow ``next`` as usual.
"""

from __future__ import annotations

from sqlalchemy import Engine

from service.auth import audit, policy
from service.db.engine import read_transaction
from service.fhir.bundles import bundle, history_entry, page_url
from service.fhir.outcome import error
from service.search.dates import DateRangeError, date_range_us
from service.storage.repository import ResourceRepository

_HISTORY_PARAMS = {"_count", "_since", "_cursor", "_format", "_pretty", "_total"}


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise error(400, "invalid", f"_cursor={value} is not a cursor this server issued; follow the Bundle's next link.")
    return int(value)


def history_bundle(
    engine: Engine,
    *,
    base_url: str,
    path: str,
    params: list[tuple[str, str]],
    resource_type: str | None,
    id: str | None,
    default_count: int,
    max_count: int,
    now_us: int,
) -> dict:
    """The history Bundle for one page."""
    values: dict[str, str] = {}
    for key, value in params:
        if key not in _HISTORY_PARAMS:
            raise error(400, "not-supported", f"History does not support the parameter '{key}' (supported: _count, _since).")
        values[key] = value
    count_text = values.get("_count", str(default_count))
    if not count_text.isdigit():
        raise error(400, "invalid", f"_count={count_text} is not a non-negative integer.")
    count = min(int(count_text), max_count)
    since_us = None
    if "_since" in values:
        try:
            since_us = date_range_us(values["_since"])[0]
        except DateRangeError as exc:
            raise error(400, "invalid", f"_since: {exc}") from None
    before = _cursor(values.get("_cursor"))
    if resource_type is not None:
        policy.require(resource_type, "r")
    if id is not None and resource_type is not None:
        policy.check_visible_by_id(engine, resource_type, id)
    with read_transaction(engine) as conn:
        repo = ResourceRepository(conn)
        rows = repo.history(resource_type=resource_type, id=id, since_us=since_us, before_seq=before, limit=count + 1) if count else []
        total = None
        if count == 0 or values.get("_total") == "accurate":
            total = repo.history_count(resource_type=resource_type, id=id, since_us=since_us)
        page, more = rows[:count], len(rows) > count
        shown = _readable(conn, page)
        if not policy.current_access().unrestricted:
            total = None  # the count would include what the caller may not see
    links = [("self", page_url(base_url, path, params))]
    if more and page:
        links.append(("next", page_url(base_url, path, params, _cursor=str(page[-1].seq))))
    if id is not None and not page and before is None and total in (None, 0):
        if resource_type is not None and not rows:
            raise error(404, "not-found", f"{resource_type}/{id} has no history: it does not exist.")
    audit.note_read(shown)
    return bundle("history", [history_entry(base_url, v) for v in shown], links, total=total, now_us=now_us)


def _readable(conn, page: list) -> list:  # type: ignore[no-untyped-def]
    """The page's versions the caller may read (types in its scopes; for a study-bound
    caller, resources its studies see now)."""
    access = policy.current_access()
    if access.unrestricted:
        return page
    page = [v for v in page if access.allows(v.resource_type, "r")]
    view = policy.study_view(conn)
    if view is None or not page:
        return page
    visible = view.visible_keys(v.res_key for v in page)
    return [v for v in page if v.res_key in visible]
