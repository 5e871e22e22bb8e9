"""Bundle assembly from stored bytes.

Entries embed each stored resource's JSON as-is (``orjson.Fragment``): nothing is
re-parsed or re-serialised on the way out, so reads, history and search cost a
database fetch plus a byte copy, and decimals stay exactly as sent.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from service.fhir import jsonio
from service.fhir.http import etag, instant
from service.storage.repository import StoredVersion


def page_url(base_url: str, path: str, params: list[tuple[str, str]], **overrides: str) -> str:
    """An absolute URL for ``path`` keeping every repeated parameter in its order."""
    kept = [(k, v) for k, v in params if k not in overrides]
    kept.extend(overrides.items())
    query = urlencode(kept, safe=":,|/$")
    return f"{base_url}/{path}" + (f"?{query}" if query else "")


def bundle(bundle_type: str, entries: list[dict[str, Any]], links: list[tuple[str, str]], *, total: int | None, now_us: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now_us)},
        "type": bundle_type,
    }
    if total is not None:
        out["total"] = total
    out["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out["entry"] = entries
    if not entries:
        del out["entry"]
    return out


_METHOD_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_entry(base_url: str, v: StoredVersion) -> dict[str, Any]:
    """One history entry: the version's bytes, the request that made it, its response."""
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{v.resource_type}/{v.id}"}
    if v.content is not None:
        entry["resource"] = jsonio.fragment(v.content)
    method = v.method or "PUT"
    url = v.resource_type if method == "POST" else f"{v.resource_type}/{v.id}"
    status = "201 Created" if v.version_id == 1 and method != "DELETE" else _METHOD_STATUS.get(method, "200 OK")
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {"status": status, "etag": etag(v.version_id), "lastModified": instant(v.last_updated_us)}
    return entry


def search_entry(base_url: str, v: StoredVersion, mode: str = "match") -> dict[str, Any]:
    return {
        "fullUrl": f"{base_url}/{v.resource_type}/{v.id}",
        "resource": jsonio.fragment(v.content or b"{}"),
        "search": {"mode": mode},
    }
