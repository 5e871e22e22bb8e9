"""Transactions and batches: https://hl7.org/fhir/R4/http.html#transaction.

A transaction is all or nothing: it runs in one database transaction (row and criteria
locks on PostgreSQL, re-run on deadlock; the write lock on SQLite). Entries are processed in the
order the spec fixes — DELETE, then POST, then PUT/PATCH, then GET/HEAD — with
``fullUrl`` placeholders and conditional references resolved and rewritten everywhere,
and all writes flushed with one statement per table. Any failure rolls everything back
and the OperationOutcome names the entry (``Bundle.entry[i]``) and why.

A batch runs each entry on its own (its own transaction); entries succeed or fail
independently and the batch-response carries each one's status or OperationOutcome.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import Connection, Engine, false, select, tuple_

from service.db.engine import lock_criteria_many, run_in_transaction
from service.db.schema import resource as resource_table
from service.fhir import jsonio
from service.fhir.bundles import bundle
from service.fhir.http import etag
from service.fhir.outcome import FhirError, Issue, error, operation_outcome
from service.fhir.resource_types import RESOURCE_TYPES
from service.fhir.validation import is_valid_id, validation_issues
from service.rest.patch import apply_patch
from service.rest.service import _check_if_match, instant_text, now_us, pending_write, same_content
from service.search.matching import find_matches
from service.storage.repository import ResourceRepository, StoredVersion
from service.transactions.gcpause import gc_paused
from service.transactions.lookup import match_many
from service.transactions.references import Journal, is_conditional_reference, is_local_placeholder, rewrite_references, undo
from service.auth import bundles as authz

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
#: Writes handed to the repository at a time (one statement or COPY per table each).
FLUSH_SLICE = 1000


@dataclass
class Entry:
    """One parsed Bundle.entry with its request."""

    index: int
    method: str
    resource_type: str
    id: str | None = None
    version: str | None = None
    query: str | None = None
    resource: dict[str, Any] | None = None
    raw_resource: Any = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    # filled while processing
    target_id: str | None = None
    previous: StoredVersion | None = None
    result: StoredVersion | None = None
    status: str = ""
    skip_write: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"Bundle.entry[{self.index}]"

    def fresh(self) -> "Entry":
        """The entry as parsed, for one attempt: what processing fills in starts empty.

        The resource is shared, not copied: the attempt's reference rewrites are
        journaled and undone before a re-run (see :meth:`BundleProcessor._attempt`)."""
        return Entry(
            self.index, self.method, self.resource_type, self.id, self.version, self.query, self.resource,
            self.raw_resource, self.full_url, self.if_none_exist, self.if_match, self.if_none_match,
        )


def _fail(entry: Entry, status: int, code: str, text: str) -> FhirError:
    return FhirError(status, [Issue(code, f"{entry.label} ({entry.method} {entry.resource_type}): {text}", expression=(entry.label,))])


def _with_entry(entry: Entry, exc: FhirError) -> FhirError:
    issues = [Issue(i.code, f"{entry.label} ({entry.method} {entry.resource_type}): {i.diagnostics}", i.severity, i.expression or (entry.label,)) for i in exc.issues]
    return FhirError(exc.status, issues, exc.headers)


def parse_entry(index: int, raw: Any, base_url: str) -> Entry:
    """Read one entry's request (method, url, conditional headers) and resource."""
    if not isinstance(raw, dict):
        raise _fail(Entry(index, "?", "?"), 400, "structure", "an entry must be a JSON object.")
    request = raw.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) or not isinstance(request.get("url"), str):
        raise _fail(Entry(index, "?", "?"), 400, "required", "every entry needs request.method and request.url.")
    method = request["method"].upper()
    if method not in _ORDER:
        raise _fail(Entry(index, "?", "?"), 400, "value", f"request.method {request['method']} is not one of GET, HEAD, POST, PUT, PATCH, DELETE.")
    url = request["url"].strip()
    if base_url and url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    elif "://" in url.split("?", 1)[0]:
        raise _fail(Entry(index, "?", "?"), 400, "not-supported", f"request.url {url} is not on this server ({base_url}).")
    url = url.lstrip("/")
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _fail(Entry(index, "?", "?"), 400, "not-supported", "request.url names no resource type; system-level requests are not allowed inside a Bundle.")
    rtype = parts[0]
    if rtype not in RESOURCE_TYPES:
        raise _fail(Entry(index, method, rtype), 404, "not-supported", f"'{rtype}' is not an R4 resource type.")
    if any(p.startswith("$") for p in parts):
        raise _fail(Entry(index, method, rtype), 400, "not-supported", f"operations ({url}) are not supported inside a Bundle.")
    entry = Entry(index, method, rtype, full_url=raw.get("fullUrl"))
    entry.if_none_exist = request.get("ifNoneExist")
    entry.if_match = request.get("ifMatch")
    entry.if_none_match = request.get("ifNoneMatch")
    if len(parts) >= 2:
        entry.id = parts[1]
        if not is_valid_id(entry.id):
            raise _fail(entry, 400, "value", f"'{entry.id}' is not a valid id.")
    if len(parts) == 4 and parts[2] == "_history":
        entry.version = parts[3]
    elif len(parts) > 2:
        raise _fail(entry, 400, "not-supported", f"request.url {url} is not a resource or version URL.")
    entry.query = query or None
    body = raw.get("resource")
    if method in ("POST", "PUT", "PATCH"):
        if not isinstance(body, dict):
            raise _fail(entry, 400, "required", "a POST, PUT or PATCH entry needs a resource.")
        entry.raw_resource = body
        if method == "PATCH":
            return entry
        if body.get("resourceType") != rtype:
            raise _fail(entry, 400, "invalid", f"the resource is a {body.get('resourceType')}, the url is for {rtype}.")
        if method == "PUT" and entry.id is not None and body.get("id") != entry.id:
            raise _fail(entry, 400, "invalid", f"the resource's id '{body.get('id')}' does not match the url's id '{entry.id}'.")
        if method == "PUT" and entry.id is None and entry.query is None:
            raise _fail(entry, 400, "invalid", "PUT needs Type/id or Type?criteria.")
        if method == "POST" and (entry.id is not None):
            raise _fail(entry, 400, "invalid", "POST goes to the type (e.g. Patient), not to an id.")
        entry.resource = body
    elif method == "DELETE" and entry.id is None and entry.query is None:
        raise _fail(entry, 400, "invalid", "DELETE needs Type/id or Type?criteria.")
    return entry


def _patch_document(entry: Entry) -> tuple[Any, str]:
    body = entry.raw_resource
    if body.get("resourceType") == "Binary":
        ctype = (body.get("contentType") or "").split(";")[0].strip()
        try:
            doc = jsonio.loads(base64.b64decode(body.get("data") or ""))
        except (ValueError, jsonio.JsonSyntaxError) as exc:
            raise _fail(entry, 400, "structure", f"the Binary's data is not a JSON patch: {exc}") from None
        return doc, ctype or "application/json-patch+json"
    raise _fail(entry, 415, "not-supported", "PATCH in a Bundle takes a Binary holding a JSON Patch (FHIRPath Patch is not supported).")


def _criteria(text: str, resource_type: str) -> str:
    if "?" in text:
        head, _, rest = text.partition("?")
        head = head.rstrip("/").rsplit("/", 1)[-1]
        if head and head != resource_type:
            raise error(400, "invalid", f"the condition '{text}' is for {head}, not {resource_type}.")
        return rest
    return text


class BundleProcessor:
    """Runs transaction and batch Bundles against one database."""

    def __init__(self, engine: Engine, *, max_retries: int = 8, max_entries: int = 10_000) -> None:
        self.engine = engine
        self.max_retries = max_retries
        self.max_entries = max_entries

    # --- entry point -----------------------------------------------------------------------

    def process(self, body: Any, base_url: str, *, return_pref: str = "representation") -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise error(400, "invalid", "POST to the base takes a Bundle of type transaction or batch.")
        btype = body.get("type")
        if btype not in ("transaction", "batch"):
            raise error(400, "invalid", f"Bundle.type is '{btype}'; the base accepts transaction or batch (store other Bundles with POST /fhir/Bundle).")
        raw_entries = body.get("entry") or []
        if not isinstance(raw_entries, list):
            raise error(400, "structure", "Bundle.entry must be an array.")
        if len(raw_entries) > self.max_entries:
            raise error(413, "too-costly", f"The Bundle has {len(raw_entries)} entries; this server accepts at most {self.max_entries} per request (TRIALFHIR_MAX_BUNDLE_ENTRIES). Split it.")
        with gc_paused():  # see gcpause.py
            if btype == "batch":
                return self._batch(raw_entries, base_url, return_pref)
            return self._transaction_bundle(raw_entries, base_url, return_pref)

    def _transaction_bundle(self, raw_entries: list[Any], base_url: str, return_pref: str) -> dict[str, Any]:
        entries = [parse_entry(i, e, base_url) for i, e in enumerate(raw_entries)]
        authz.authorize_entries(entries)  # one forbidden entry: 403, nothing written
        self._validate(entries)
        done = run_in_transaction(self.engine, self._attempt(entries, base_url), max_retries=self.max_retries)
        return self._response("transaction-response", done, base_url, return_pref)

    def _attempt(self, entries: list[Entry], base_url: str) -> Callable[[Connection], list[Entry]]:
        """The unit of work :func:`run_in_transaction` may run more than once.

        Each attempt starts from the entries as parsed: fresh :class:`Entry` copies, and
        the reference rewrites of a failed attempt undone (a re-run must not see them).
        """
        journal: Journal = []

        def attempt(conn: Connection) -> list[Entry]:
            undo(journal)
            return self._transaction(conn, [e.fresh() for e in entries], base_url, journal)

        return attempt

    # --- validation (before any database work) ------------------------------------------

    @staticmethod
    def _validate(entries: list[Entry]) -> None:
        problems: list[Issue] = []
        for entry in entries:
            if entry.resource is None:
                continue
            for issue in validation_issues(entry.resource):
                problems.append(Issue(issue.code, f"{entry.label}: {issue.diagnostics}", expression=(f"{entry.label}.resource",)))
            if len(problems) >= 50:
                break
        if problems:
            raise FhirError(400, problems)

    # --- transaction -------------------------------------------------------------------------

    def _transaction(self, conn: Connection, entries: list[Entry], base_url: str, journal: Journal | None = None) -> list[Entry]:
        repo = ResourceRepository(conn)
        ordered = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
        mapping: dict[str, str] = {}
        touched: dict[tuple[str, str], Entry] = {}

        def touch(entry: Entry, rtype: str, rid: str) -> None:
            other = touched.get((rtype, rid))
            if other is not None:
                raise _fail(entry, 400, "business-rule", f"{rtype}/{rid} is also changed by {other.label}; a resource may be touched once per transaction.")
            touched[(rtype, rid)] = entry

        stamp_us = now_us()
        criteria: list[tuple[str, str, str]] = []
        for e in entries:
            for text in (e.query if e.method in ("PUT", "PATCH", "DELETE") else None, e.if_none_exist if e.method == "POST" else None):
                if text:
                    criteria.extend((e.resource_type, k, v) for k, v in parse_qsl(_criteria(text, e.resource_type), keep_blank_values=True))
        lock_criteria_many(conn, criteria)
        # 1. deletes
        deletes = [e for e in ordered if e.method == "DELETE"]
        for e in deletes:
            try:
                if e.query is not None:
                    keys = find_matches(conn, e.resource_type, _criteria(e.query, e.resource_type), base_url=base_url, lock=True)
                    if len(keys) > 1:
                        raise _fail(e, 412, "multiple-matches", f"the criteria '{e.query}' match more than one resource.")
                    e.previous = repo.current_by_keys(keys)[0] if keys else None
                else:
                    e.previous = repo.current(e.resource_type, e.id or "", for_update=True)
                    _check_if_match(e.previous, e.if_match, e.resource_type, e.id or "")
            except FhirError as exc:
                raise _with_entry(e, exc) from None
            if e.previous is None or e.previous.deleted:
                e.skip_write, e.status = True, "204 No Content"
                if e.id is not None:
                    touch(e, e.resource_type, e.id)
                continue
            e.target_id = e.previous.id
            touch(e, e.resource_type, e.previous.id)
        self._flush(conn, [e for e in deletes if not e.skip_write], stamp_us, "DELETE")
        for e in deletes:
            e.status = e.status or "204 No Content"

        # 2. creates and 3. updates: resolve ids (conditional matches) before rewriting references
        writes = [e for e in ordered if e.method in ("POST", "PUT", "PATCH")]
        known = repo.current_many([(e.resource_type, e.id) for e in writes if e.id is not None], for_update=True)
        # conditional creates in the common token form, matched all at once (lookup.py)
        matched = match_many(conn, [(e.resource_type, _criteria(e.if_none_exist, e.resource_type)) for e in writes if e.method == "POST" and e.if_none_exist])
        same_create: dict[tuple[str, str], Entry] = {}
        for e in writes:
            if e.method == "POST" and e.if_none_exist:
                key = (e.resource_type, _criteria(e.if_none_exist, e.resource_type))
                first = same_create.get(key)
                if first is not None:  # the same conditional create twice: one resource
                    e.target_id, e.skip_write, e.status = first.target_id, True, "200 OK"
                    e.extra["same_as"] = first
                    if e.full_url and e.target_id:
                        mapping[e.full_url] = f"{e.resource_type}/{e.target_id}"
                    continue
                same_create[key] = e
            try:
                self._resolve_target(conn, repo, e, base_url, known, matched)
            except FhirError as exc:
                raise _with_entry(e, exc) from None
            if e.full_url and e.target_id:
                mapping[e.full_url] = f"{e.resource_type}/{e.target_id}"
            if not e.skip_write:
                touch(e, e.resource_type, e.target_id or "")

        cache: dict[str, str] = {}
        deferred: set[int] = set()

        def lookup(ref: str, entry: Entry, final: bool) -> str | None:
            if ref not in cache:
                rtype, _, query = ref.partition("?")
                if rtype not in RESOURCE_TYPES:
                    raise _fail(entry, 400, "invalid", f"conditional reference {ref} names no R4 resource type.")
                keys = find_matches(conn, rtype, query, base_url=base_url)
                if len(keys) > 1:
                    raise _fail(entry, 412, "multiple-matches", f"the conditional reference {ref} matches more than one resource.")
                if not keys:
                    if not final:
                        deferred.add(entry.index)
                        return None
                    raise _fail(entry, 404, "not-found", f"the conditional reference {ref} matches no resource.")
                found = repo.current_by_keys(keys)[0]
                cache[ref] = f"{found.resource_type}/{found.id}"
            return cache[ref]

        def resolve(ref: str, entry: Entry, final: bool = False) -> str | None:
            if ref in mapping:
                return mapping[ref]
            if is_local_placeholder(ref):
                raise _fail(entry, 400, "not-found", f"{ref} is not the fullUrl of any entry in this transaction.")
            if is_conditional_reference(ref):
                return lookup(ref, entry, final)
            return None

        for e in writes:
            if e.resource is not None and not e.skip_write:
                rewrite_references(e.resource, lambda ref, e=e: resolve(ref, e), mapping, journal)
        for e in writes:
            # an update that changes nothing makes no new version (idempotent resends)
            if e.method == "PUT" and not e.skip_write and e.index not in deferred and e.previous is not None and same_content(e.previous, e.resource or {}):
                e.result, e.skip_write = e.previous, True
                e.extra["unchanged"] = True
        creates = [e for e in writes if e.method == "POST" and not e.skip_write]
        updates = [e for e in writes if e.method in ("PUT", "PATCH") and not e.skip_write]
        self._flush(conn, creates + updates, stamp_us, None)
        # Conditional references to resources this transaction itself creates resolve
        # only now that those rows exist; the few entries concerned are amended in place.
        for e in writes:
            if e.index in deferred and e.resource is not None and e.result is not None:
                rewrite_references(e.resource, lambda ref, e=e: resolve(ref, e, final=True), None, journal)
                amended = pending_write(e.resource_type, e.target_id or "", e.resource, e.method, e.previous, at_us=e.result.last_updated_us)
                e.result = repo.amend(e.result, amended)

        for e in writes:
            if "same_as" in e.extra:
                e.result = e.extra.pop("same_as").result
        authz.after_writes(conn, ordered)  # studies of what was written, and its AuditEvent
        # 4. reads
        for e in ordered:
            if e.method in ("GET", "HEAD"):
                self._read(conn, repo, e, base_url)
        return entries

    def _resolve_target(
        self,
        conn: Connection,
        repo: ResourceRepository,
        e: Entry,
        base_url: str,
        known: dict[tuple[str, str], StoredVersion],
        matched: dict[tuple[str, str], list[StoredVersion]],
    ) -> None:
        """Decide the id each write lands on, and whether it writes at all (``matched``:
        conditional creates already matched by :func:`service.transactions.lookup.match_many`)."""
        if e.method == "POST":
            if e.if_none_exist:
                criteria = _criteria(e.if_none_exist, e.resource_type)
                found = matched.get((e.resource_type, criteria))
                several = found is not None and len(found) > 1
                if found is None:
                    keys = find_matches(conn, e.resource_type, criteria, base_url=base_url, lock=True)
                    several = len(keys) > 1
                    found = repo.current_by_keys(keys[:1]) if keys and not several else []
                if several:
                    raise error(412, "multiple-matches", f"ifNoneExist '{e.if_none_exist}' matches more than one resource.")
                if found:
                    e.result = found[0]
                    e.target_id, e.skip_write, e.status = e.result.id, True, "200 OK"
                    return
            e.target_id = str(uuid.uuid4())
            e.status = "201 Created"
            return
        if e.query is not None:
            keys = find_matches(conn, e.resource_type, _criteria(e.query, e.resource_type), base_url=base_url, lock=True)
            if len(keys) > 1:
                raise error(412, "multiple-matches", f"the criteria '{e.query}' match more than one resource.")
            if keys:
                e.previous = repo.current_by_keys(keys)[0]
                body_id = e.resource.get("id") if e.resource else None
                if body_id is not None and body_id != e.previous.id:
                    raise error(400, "invalid", f"the resource's id '{body_id}' differs from the match {e.resource_type}/{e.previous.id}.")
                e.target_id = e.previous.id
            elif e.method == "PATCH":
                raise error(404, "not-found", f"no {e.resource_type} matches '{e.query}'.")
            else:
                e.target_id = (e.resource or {}).get("id") or str(uuid.uuid4())
                e.previous = repo.current(e.resource_type, e.target_id, for_update=True)
        else:
            e.target_id = e.id
            e.previous = known.get((e.resource_type, e.id or ""))
        _check_if_match(e.previous, e.if_match, e.resource_type, e.target_id or "")
        if e.if_none_match and e.if_none_match.strip() == "*" and e.previous is not None and not e.previous.deleted:
            raise error(412, "conflict", f"ifNoneMatch * — {e.resource_type}/{e.target_id} already exists.")
        if e.method == "PATCH":
            if e.previous is None or e.previous.deleted or e.previous.content is None:
                raise error(404, "not-found", f"{e.resource_type}/{e.target_id} does not exist; it cannot be patched.")
            doc, media = _patch_document(e)
            patched = apply_patch(jsonio.loads(e.previous.content), doc, media)
            if not isinstance(patched, dict) or patched.get("resourceType") != e.resource_type or patched.get("id") != e.target_id:
                raise error(422, "processing", "the patch may not change resourceType or id.")
            issues = validation_issues(patched)
            if issues:
                raise FhirError(400, issues)
            e.resource = patched
        created = e.previous is None or e.previous.deleted
        e.status = "201 Created" if created else "200 OK"


    @staticmethod
    def _flush(conn: Connection, entries: list[Entry], at_us: int, method: str | None) -> None:
        if not entries:
            return
        authz.before_flush(conn, entries)
        # In slices: a slice's index rows (as dicts and as row tuples) are garbage once
        # written, so a 10,000-entry Bundle never holds all of them at once.
        with ResourceRepository(conn).writing() as write:
            for start in range(0, len(entries), FLUSH_SLICE):
                part = entries[start : start + FLUSH_SLICE]
                pending = [
                    pending_write(e.resource_type, e.target_id or "", None if e.method == "DELETE" else e.resource, method or e.method, e.previous, at_us=at_us)
                    for e in part
                ]
                for e, stored in zip(part, write(pending)):
                    e.result = stored

    def _read(self, conn: Connection, repo: ResourceRepository, e: Entry, base_url: str) -> None:
        if e.id is None:
            from service.search.service import SearchRequest, run_search

            req = SearchRequest(e.resource_type, parse_qsl(e.query or "", keep_blank_values=True), base_url, False, 50, 1000, now_us())
            e.extra["bundle"] = run_search(self.engine, req, conn=conn)
            e.status = "200 OK"
            return
        found = repo.version(e.resource_type, e.id, int(e.version)) if (e.version and e.version.isdigit()) else (None if e.version else repo.current(e.resource_type, e.id))
        if found is None:
            raise _fail(e, 404, "not-found", f"{e.resource_type}/{e.id} does not exist.")
        authz.check_read(conn, found)
        if found.deleted:
            raise _fail(e, 410, "deleted", f"{e.resource_type}/{e.id} was deleted.")
        if e.if_none_match is not None and e.if_none_match.strip() in (etag(found.version_id), f'"{found.version_id}"'):
            e.result, e.status = found, "304 Not Modified"
            e.skip_write = True
            return
        e.result, e.status = found, "200 OK"

    # --- batch -----------------------------------------------------------------------------

    def _batch(self, raw_entries: list[Any], base_url: str, return_pref: str) -> dict[str, Any]:
        done: list[Entry] = []
        for i, raw in enumerate(raw_entries):
            try:
                entry = parse_entry(i, raw, base_url)
                authz.authorize_entries([entry])
                self._validate([entry])
                (entry,) = run_in_transaction(self.engine, self._attempt([entry], base_url), max_retries=self.max_retries)
            except FhirError as exc:
                authz.entry_failed(i, exc.status, "; ".join(x.diagnostics for x in exc.issues))
                failed = Entry(i, "?", "?")
                failed.status = f"{exc.status} {_REASONS.get(exc.status, 'Error')}"
                failed.extra["outcome"] = operation_outcome(exc.issues)
                done.append(failed)
                continue
            done.append(entry)
        return self._response("batch-response", done, base_url, return_pref)

    # --- response ------------------------------------------------------------------------------

    @staticmethod
    def _response(btype: str, entries: list[Entry], base_url: str, return_pref: str) -> dict[str, Any]:
        out = []
        for e in sorted(entries, key=lambda x: x.index):
            item: dict[str, Any] = {}
            response: dict[str, Any] = {"status": e.status}
            v = e.result
            if "outcome" in e.extra:  # a failed batch entry
                response["outcome"] = e.extra["outcome"]
            elif "bundle" in e.extra:  # a search entry
                item["resource"] = e.extra["bundle"]
            elif v is not None:
                if e.method in ("POST", "PUT", "PATCH", "DELETE") and not v.deleted:
                    response["location"] = f"{v.resource_type}/{v.id}/_history/{v.version_id}"
                response["etag"] = etag(v.version_id)
                response["lastModified"] = instant_text(v.last_updated_us)
                if e.extra.get("unchanged"):
                    response["outcome"] = operation_outcome(
                        [Issue("informational", "Unchanged: the resource already had this content; no new version.", "information")]
                    )
                wants_body = e.method in ("GET", "HEAD") or return_pref == "representation"
                if v.content is not None and not v.deleted and e.status != "304 Not Modified" and wants_body:
                    item["fullUrl"] = f"{base_url}/{v.resource_type}/{v.id}"
                    item["resource"] = jsonio.fragment(v.content)
            item["response"] = response
            out.append(item)
        return bundle(btype, out, [], total=None, now_us=now_us())


_REASONS = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 410: "Gone", 412: "Precondition Failed", 413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity"}


__all__ = ["BundleProcessor", "parse_entry", "select", "tuple_", "false", "resource_table", "urlencode"]
