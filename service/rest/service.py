"""The FHIR RESTful interactions, composed on top of the repository primitives.

https://hl7.org/fhir/R4/http.html. Every write runs inside one database transaction
(:func:`service.db.engine.run_in_transaction`): the conditional interactions search and
write in that same transaction, so N concurrent conditional creates with the same
criteria leave exactly one resource (criteria locks and row locks on PostgreSQL, the
write lock on SQLite; see :mod:`service.db.engine`), and index rows commit with their version or not at all.

Authorization (:mod:`service.auth.policy`) is checked here, not in the router, so every
caller — REST routes, the domain API, transactions — gets the same rules: the scope letter
each interaction needs, and for a client bound to studies the visibility of what it reads
(404 otherwise) and of what it replaces and writes (403, inside the write's transaction).
Each committed change carries its AuditEvent (:func:`service.auth.audit.record_writes`).

This module knows FHIR semantics, not HTTP: it returns :class:`WriteResult` /
:class:`StoredVersion` and raises :class:`FhirError`; the router turns them into
responses.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Connection, Engine

from service.auth import audit, policy
from service.db.engine import run_in_transaction, single_read
from service.fhir import jsonio
from service.fhir.http import instant
from service.fhir.outcome import FhirError, error
from service.fhir.resource_types import RESOURCE_TYPES
from service.fhir.validation import is_valid_id, validate
from service.rest.patch import apply_patch
from service.search.indexing import index_resource
from service.search.matching import find_matches
from service.search.query import normalise_condition
from service.storage.repository import PendingWrite, ResourceRepository, StoredVersion


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a write interaction."""

    status: int  # 200, 201 or 204
    version: StoredVersion | None
    #: True when nothing was written (a conditional create that matched, a repeated delete).
    unchanged: bool = False
    message: str = ""


def now_us() -> int:
    return time.time_ns() // 1000


def check_type(resource_type: str) -> None:
    """404 for a type that is not an R4 resource type (R4B/R5-only types included)."""
    if resource_type not in RESOURCE_TYPES:
        raise error(
            404,
            "not-supported",
            f"'{resource_type}' is not a FHIR R4 (4.0.1) resource type; see GET /fhir/metadata for the types served.",
        )


def check_id(id: str) -> None:
    if not is_valid_id(id):
        raise error(400, "value", f"'{id}' is not a valid resource id (1-64 characters of A-Z a-z 0-9 - .)")


_last_second: tuple[int, str] = (-1, "")


def instant_text(us: int) -> str:
    """:func:`instant`, with the text up to the second remembered: writes in the same
    second (all of a transaction's, most of a busy feed's) only format their microseconds."""
    global _last_second
    second, micro = divmod(us, 1_000_000)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, instant(second * 1_000_000)[:-8])  # without ".000000Z"
    return f"{last[1]}.{micro:06d}Z"


def stamp(resource: dict[str, Any], id: str, version_id: int, last_updated_us: int) -> bytes:
    """The stored bytes: the client's JSON with id and meta.versionId/lastUpdated set.

    Key order is resourceType, id, meta, then the client's own order; every other byte
    of meaning (decimals included) is what the client sent.
    """
    meta: dict[str, Any] = {"versionId": str(version_id), "lastUpdated": instant_text(last_updated_us)}
    client_meta = resource.get("meta")
    if isinstance(client_meta, dict):
        for key, value in client_meta.items():
            if key not in ("versionId", "lastUpdated"):
                meta[key] = value
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": id, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return jsonio.dumps(out)


def pending_write(
    resource_type: str, id: str, resource: dict[str, Any] | None, method: str, previous: StoredVersion | None, *, at_us: int | None = None
) -> PendingWrite:
    """The next version of ``resource_type/id`` as stored bytes plus its index rows."""
    version_id = previous.version_id + 1 if previous else 1
    lu = at_us if at_us is not None else now_us()
    if previous is not None and lu <= previous.last_updated_us:
        lu = previous.last_updated_us + 1
    content = stamp(resource, id, version_id, lu) if resource is not None else None
    index = index_resource(resource_type, resource).tables() if resource is not None else None
    return PendingWrite(resource_type, id, version_id, lu, method, content, previous, index)


def _without_version_meta(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k not in ("meta", "id")}
    meta = {k: v for k, v in (doc.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def same_content(current: StoredVersion | None, resource: dict[str, Any]) -> bool:
    """True when an update would store what is already current (so no new version is made).

    Decimals compare by value and text (1.50 vs 1.5 is a change: FHIR keeps precision).
    """
    if current is None or current.deleted or current.content is None:
        return False
    return jsonio.dumps(_without_version_meta(jsonio.loads(current.content))) == jsonio.dumps(_without_version_meta(resource))


def _require_resource(body: Any, resource_type: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise error(400, "structure", "The body must be a JSON object holding one FHIR resource.")
    found = body.get("resourceType")
    if found is None:
        raise error(400, "structure", "The body has no resourceType.", expression=("resourceType",))
    if found != resource_type:
        raise error(
            400,
            "invalid",
            f"The body is a {found} but the URL is for {resource_type}; send it to /fhir/{found}.",
            expression=("resourceType",),
        )
    return body


def _check_if_match(current: StoredVersion | None, if_match: str | None, resource_type: str, id: str) -> None:
    if if_match is None:
        return
    from service.fhir.http import parse_etag

    wanted = parse_etag(if_match)
    if wanted is None:
        raise error(400, "invalid", f"If-Match: {if_match} is not an ETag like W/\"3\".")
    if current is None or current.deleted:
        raise error(
            412,
            "conflict",
            f"If-Match: {if_match} — {resource_type}/{id} has no current version to match.",
        )
    if current.version_id != wanted:
        raise error(
            412,
            "conflict",
            f"If-Match: {if_match} does not match the current version W/\"{current.version_id}\" of "
            f"{resource_type}/{id}; read it again and re-apply your change.",
        )


class FhirStore:
    """The REST interactions over one database (see module docstring)."""

    def __init__(self, engine: Engine, *, max_retries: int = 8) -> None:
        self.engine = engine
        self.max_retries = max_retries

    # --- primitives (inside a transaction) ------------------------------------------------

    def _put_version(
        self,
        conn: Connection,
        resource_type: str,
        id: str,
        resource: dict[str, Any] | None,
        method: str,
        previous: StoredVersion | None,
    ) -> StoredVersion:
        """Write the next version of ``resource_type/id`` (``resource`` None = delete) and index it,
        after the authorization checks and with its AuditEvent (same transaction)."""
        policy.before_write(conn, [previous])
        stored = ResourceRepository(conn).write_many([pending_write(resource_type, id, resource, method, previous)])[0]
        policy.after_write(conn, [(stored, previous)])
        audit.record_writes(conn, [stored])
        return stored

    def _transaction(self, work: Callable[[Connection], WriteResult]) -> WriteResult:
        return run_in_transaction(self.engine, work, max_retries=self.max_retries)

    def _single_match(self, conn: Connection, resource_type: str, query: str, what: str) -> StoredVersion | None:
        keys = find_matches(conn, resource_type, query, limit=2, lock=True)
        if len(keys) > 1:
            raise error(
                412,
                "multiple-matches",
                f"{what}: the criteria '{query}' match more than one {resource_type}; make them selective "
                "(e.g. identifier=system|value).",
            )
        if not keys:
            return None
        found = ResourceRepository(conn).current_by_keys(keys)
        return found[0] if found else None

    # --- read / vread -------------------------------------------------------------------------

    def read(self, resource_type: str, id: str) -> StoredVersion:
        """https://hl7.org/fhir/R4/http.html#read — 404 unknown (or outside the caller's
        studies), 410 deleted."""
        check_type(resource_type)
        policy.require(resource_type, "r")
        with single_read(self.engine) as conn:
            found = ResourceRepository(conn).current(resource_type, id)
            if found is not None:
                policy.check_visible(conn, found)
        if found is None:
            raise error(404, "not-found", f"{resource_type}/{id} does not exist.")
        if found.deleted:
            from service.fhir.http import etag

            raise error(410, "deleted", f"{resource_type}/{id} was deleted (version {found.version_id}).", headers={"ETag": etag(found.version_id)})
        audit.note_read([found])
        return found

    def vread(self, resource_type: str, id: str, version: str) -> StoredVersion:
        """https://hl7.org/fhir/R4/http.html#vread — a deleted version answers 410."""
        check_type(resource_type)
        policy.require(resource_type, "r")
        if not version.isdigit():
            raise error(404, "not-found", f"{resource_type}/{id} has no version '{version}'.")
        policy.check_visible_by_id(self.engine, resource_type, id)
        with single_read(self.engine) as conn:
            found = ResourceRepository(conn).version(resource_type, id, int(version))
        if found is None:
            raise error(404, "not-found", f"{resource_type}/{id} has no version {version}.")
        if found.deleted:
            raise error(410, "deleted", f"Version {version} of {resource_type}/{id} is a deletion.")
        audit.note_read([found])
        return found

    # --- create ----------------------------------------------------------------------------

    def create(self, resource_type: str, body: Any, raw: bytes | None, *, if_none_exist: str | None = None) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#create, and conditional create when
        ``if_none_exist`` holds criteria (If-None-Exist header or ``POST [type]?criteria``):
        no match → create (201), one match → return it (200, nothing written),
        several → 412."""
        check_type(resource_type)
        policy.require(resource_type, "c")
        resource = _require_resource(body, resource_type)
        validate(resource, raw)
        criteria = self._criteria(if_none_exist, resource_type) if if_none_exist is not None else None

        def work(conn: Connection) -> WriteResult:
            if criteria is not None:
                existing = self._single_match(conn, resource_type, criteria, "Conditional create")
                if existing is not None:
                    return WriteResult(200, existing, unchanged=True, message=f"Matched existing {resource_type}/{existing.id}; nothing created.")
            new_id = str(uuid.uuid4())
            return WriteResult(201, self._put_version(conn, resource_type, new_id, resource, "POST", None))

        return self._transaction(work)

    @staticmethod
    def _criteria(raw: str, resource_type: str) -> str:
        query = normalise_condition(raw, resource_type)
        if "?" in raw:
            prefix = raw.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            if prefix and prefix != resource_type:
                raise error(400, "invalid", f"The condition '{raw}' is for {prefix}, not {resource_type}.")
        if not query.strip():
            raise error(400, "invalid", "The conditional criteria are empty.")
        return query

    # --- update ----------------------------------------------------------------------------

    def update(
        self,
        resource_type: str,
        id: str,
        body: Any,
        raw: bytes | None,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#update — also update-as-create with the client's id.

        If-Match is version-aware locking (412 on mismatch); ``If-None-Match: *`` only
        creates (412 if the resource exists)."""
        check_type(resource_type)
        check_id(id)
        policy.require(resource_type, "u")
        resource = _require_resource(body, resource_type)
        body_id = resource.get("id")
        if body_id is None:
            raise error(400, "required", f"The resource has no id; an update needs id '{id}' in the body.", expression=("id",))
        if body_id != id:
            raise error(400, "invalid", f"The body's id '{body_id}' does not match the URL's id '{id}'.", expression=("id",))
        validate(resource, raw)

        def work(conn: Connection) -> WriteResult:
            current = ResourceRepository(conn).current(resource_type, id, for_update=True)
            _check_if_match(current, if_match, resource_type, id)
            if if_none_match is not None and if_none_match.strip() == "*" and current is not None and not current.deleted:
                raise error(412, "conflict", f"If-None-Match: * — {resource_type}/{id} already exists.")
            created = current is None or current.deleted
            if created:
                policy.require(resource_type, "c", f"PUT {resource_type}/{id} creates it")
            if not created and same_content(current, resource):
                return WriteResult(200, current, unchanged=True, message=f"{resource_type}/{id} is unchanged; no new version.")
            stored = self._put_version(conn, resource_type, id, resource, "PUT", current)
            return WriteResult(201 if created else 200, stored)

        return self._transaction(work)

    def conditional_update(self, resource_type: str, query: str, body: Any, raw: bytes | None, *, if_match: str | None = None) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#cond-update — ``PUT [type]?criteria``:
        no match → create (with the body's id if it has one), one match → update it,
        several → 412. A body id that differs from the match is a 400."""
        check_type(resource_type)
        policy.require(resource_type, "u")
        resource = _require_resource(body, resource_type)
        body_id = resource.get("id")
        if body_id is not None:
            check_id(body_id)
        validate(resource, raw)
        criteria = self._criteria(query, resource_type)

        def work(conn: Connection) -> WriteResult:
            match = self._single_match(conn, resource_type, criteria, "Conditional update")
            if match is None:
                policy.require(resource_type, "c", "the conditional update matches nothing and would create")
                if body_id is not None:
                    current = ResourceRepository(conn).current(resource_type, body_id, for_update=True)
                    if current is not None and not current.deleted:
                        raise error(
                            409,
                            "conflict",
                            f"{resource_type}/{body_id} exists but does not match '{criteria}'; refusing to overwrite it.",
                        )
                    return WriteResult(201, self._put_version(conn, resource_type, body_id, resource, "PUT", current))
                return WriteResult(201, self._put_version(conn, resource_type, str(uuid.uuid4()), resource, "PUT", None))
            if body_id is not None and body_id != match.id:
                raise error(
                    400,
                    "invalid",
                    f"The body's id '{body_id}' differs from the matching resource {resource_type}/{match.id}.",
                    expression=("id",),
                )
            _check_if_match(match, if_match, resource_type, match.id)
            if same_content(match, resource):
                return WriteResult(200, match, unchanged=True, message=f"{resource_type}/{match.id} is unchanged; no new version.")
            return WriteResult(200, self._put_version(conn, resource_type, match.id, resource, "PUT", match))

        return self._transaction(work)

    # --- patch -----------------------------------------------------------------------------

    def patch(self, resource_type: str, id: str | None, patch_doc: Any, media_type: str, *, query: str | None = None, if_match: str | None = None) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#patch — JSON Patch (RFC 6902), or a JSON merge
        patch (RFC 7386, what fhirpy sends as ``application/json``). ``query`` makes it a
        conditional patch. The patched resource is validated like any write."""
        check_type(resource_type)
        if id is not None:
            check_id(id)
        policy.require(resource_type, "u")
        criteria = self._criteria(query, resource_type) if query is not None else None

        def work(conn: Connection) -> WriteResult:
            repo = ResourceRepository(conn)
            if criteria is not None:
                current = self._single_match(conn, resource_type, criteria, "Conditional patch")
                if current is None:
                    raise error(404, "not-found", f"No {resource_type} matches '{criteria}'.")
            else:
                assert id is not None
                current = repo.current(resource_type, id, for_update=True)
                if current is None:
                    raise error(404, "not-found", f"{resource_type}/{id} does not exist.")
                if current.deleted:
                    raise error(410, "deleted", f"{resource_type}/{id} was deleted; it cannot be patched.")
            policy.before_write(conn, [current])  # before the patch sees its content
            _check_if_match(current, if_match, resource_type, current.id)
            assert current.content is not None
            original = jsonio.loads(current.content)
            patched = apply_patch(original, patch_doc, media_type)
            if not isinstance(patched, dict) or patched.get("resourceType") != resource_type or patched.get("id") != current.id:
                raise error(422, "processing", "The patch may not change resourceType or id.")
            validate(patched)
            return WriteResult(200, self._put_version(conn, resource_type, current.id, patched, "PATCH", current))

        return self._transaction(work)

    # --- delete ----------------------------------------------------------------------------

    def delete(self, resource_type: str, id: str, *, if_match: str | None = None) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#delete — a new, deleted version; deleting
        something deleted or absent changes nothing and answers 204."""
        check_type(resource_type)
        check_id(id)
        policy.require(resource_type, "d")

        def work(conn: Connection) -> WriteResult:
            current = ResourceRepository(conn).current(resource_type, id, for_update=True)
            _check_if_match(current, if_match, resource_type, id)
            if current is None:
                return WriteResult(204, None, unchanged=True, message=f"{resource_type}/{id} does not exist; nothing to delete.")
            if current.deleted:
                return WriteResult(204, current, unchanged=True, message=f"{resource_type}/{id} was already deleted.")
            return WriteResult(204, self._put_version(conn, resource_type, id, None, "DELETE", current), message=f"Deleted {resource_type}/{id}.")

        return self._transaction(work)

    def conditional_delete(self, resource_type: str, query: str) -> WriteResult:
        """https://hl7.org/fhir/R4/http.html#cdelete — one match is deleted, none is a
        no-op (204), several is a 412 (this server deletes one resource per request)."""
        check_type(resource_type)
        policy.require(resource_type, "d")
        criteria = self._criteria(query, resource_type)

        def work(conn: Connection) -> WriteResult:
            match = self._single_match(conn, resource_type, criteria, "Conditional delete")
            if match is None:
                return WriteResult(204, None, unchanged=True, message=f"No {resource_type} matches '{criteria}'; nothing deleted.")
            return WriteResult(204, self._put_version(conn, resource_type, match.id, None, "DELETE", match), message=f"Deleted {resource_type}/{match.id}.")

        return self._transaction(work)


#: ``\u0000`` in a JSON string (an even run of backslashes before it is escaping itself)
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def body_or_error(raw: bytes) -> Any:
    """Parse a request body as FHIR JSON, or 400 naming the syntax problem."""
    if not raw.strip():
        raise error(400, "structure", "The request body is empty; send a FHIR resource as JSON.")
    if b"u0000" in raw and _NUL_ESCAPE.search(raw):
        raise error(400, "value", "The body contains a NUL character (\\u0000) in a string; FHIR strings cannot be stored with it. Remove it.")
    try:
        return jsonio.loads(raw)
    except jsonio.JsonSyntaxError as exc:
        raise error(400, "structure", f"The body is not valid JSON: {exc}") from None


__all__ = ["FhirStore", "WriteResult", "FhirError", "body_or_error", "check_type", "stamp"]
