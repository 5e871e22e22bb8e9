"""History: https://hl7.org/fhir/R4/http.html#history (instance, type and system level).

Newest first, paged with a keyset cursor on the global write sequence, so a page walk
stays correct while new versions are written (no OFFSET, no skipped or repeated rows).
"""

from __future__ import annotations

from sqlalchemy import Engine

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
    with read_transaction(engine) as conn:
        repo = ResourceRepository(conn)
        rows = repo.history(resource_type=resource_type, id=id, since_us=since_us, before_seq=before, limit=count + 1) if count else []
        total = None
        if count == 0 or values.get("_total") == "accurate":
            total = repo.history_count(resource_type=resource_type, id=id, since_us=since_us)
    page, more = rows[:count], len(rows) > count
    links = [("self", page_url(base_url, path, params))]
    if more and page:
        links.append(("next", page_url(base_url, path, params, _cursor=str(page[-1].seq))))
    if id is not None and not page and before is None and total in (None, 0):
        if resource_type is not None and not rows:
            raise error(404, "not-found", f"{resource_type}/{id} has no history: it does not exist.")
    return bundle("history", [history_entry(base_url, v) for v in page], links, total=total, now_us=now_us)
