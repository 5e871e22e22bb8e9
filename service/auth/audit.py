"""The audit trail: one FHIR AuditEvent per request, stored as an ordinary resource.

https://hl7.org/fhir/R4/auditevent.html (type ``rest`` from the DICOM audit event type
codes, subtype the RESTful interaction): who (the client_id and the source network
address), what (the action C/R/U/D/E, the request, the resources read or written, the
search query), when, and the outcome (0 success, 4 refused or invalid, 8 server failure).

- A change is recorded inside the write's own database transaction
  (:func:`record_writes`), so the change and its AuditEvent commit together or not at all;
- anything else — reads, searches, operations, token requests, and every failed or
  forbidden attempt (whose write rolled back) — is recorded when the response starts,
  before any of its body leaves the server (:func:`finish`).

AuditEvents are indexed like every resource, so an admin client searches them with
``GET /fhir/AuditEvent?...`` (a scope that names AuditEvent; wildcards do not cover it).
The trail of a request lives in a context variable; outside requests (CLI, background
jobs) there is none and nothing is recorded.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from service.storage.repository import StoredVersion

log = logging.getLogger("trialfhir.audit")

MAX_ENTITIES = 100
_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}
_LOGIN_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CLIENT_SYSTEM = "urn:trialfhir:client-id"
_OUTCOME_TEXT = {"0": "success", "4": "minor failure (refused or invalid request)", "8": "serious failure (server error)"}


@dataclass
class AuditTrail:
    """What one request did, collected while it runs."""

    request_id: str
    method: str
    path: str
    query: str
    source: str | None
    client_id: str | None = None
    #: "Type/id/_history/v" of resources read or written
    entities: list[str] = field(default_factory=list)
    more_entities: int = 0
    searches: list[str] = field(default_factory=list)
    #: problems of batch entries that failed while the request as a whole succeeded
    failures: list[str] = field(default_factory=list)
    recorded_in_transaction: bool = False

    def note(self, versions: Iterable[StoredVersion]) -> None:
        for v in versions:
            if len(self.entities) >= MAX_ENTITIES:
                self.more_entities += 1
                continue
            self.entities.append(f"{v.resource_type}/{v.id}/_history/{v.version_id}")


_trail: ContextVar[AuditTrail | None] = ContextVar("trialfhir_audit_trail", default=None)


def current_trail() -> AuditTrail | None:
    return _trail.get()


def start(trail: AuditTrail | None) -> None:
    _trail.set(trail)


def note_read(versions: Iterable[StoredVersion]) -> None:
    """Resources returned to the caller (read, vread, search matches and includes)."""
    trail = _trail.get()
    if trail is not None:
        trail.note(versions)


def note_search(resource_type: str, params: list[tuple[str, str]]) -> None:
    trail = _trail.get()
    if trail is not None and len(trail.searches) < 20:
        from urllib.parse import urlencode

        trail.searches.append(f"{resource_type}?{urlencode(params)}")


def note_failure(text: str) -> None:
    """A part of the request (a batch entry) failed although the request answers 200."""
    trail = _trail.get()
    if trail is not None and len(trail.failures) < 50:
        trail.failures.append(text)


# --- the AuditEvent ----------------------------------------------------------------------------


def _interaction(method: str, path: str) -> tuple[str, str]:
    """(restful-interaction code, AuditEvent.action) of a request."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        return ("read", "R") if method in ("GET", "HEAD") else ("update", "U")
    rest = parts[1:]
    if any(p.startswith("$") for p in rest):
        return "operation", "E"
    if method == "POST" and not rest:
        return "transaction", "E"
    if "_history" in rest:
        if len(rest) == 4:
            return "vread", "R"
        return ("history-system" if len(rest) == 1 else "history-type" if len(rest) == 2 else "history-instance"), "R"
    if method in ("GET", "HEAD"):
        return ("read", "R") if len(rest) == 2 else ("search-type", "E")
    if method == "POST" and rest[-1:] == ["_search"]:
        return "search-type", "E"
    return {"POST": ("create", "C"), "PUT": ("update", "U"), "PATCH": ("patch", "U"), "DELETE": ("delete", "D")}.get(method, ("operation", "E"))


def audit_event(trail: AuditTrail, *, outcome: str, description: str, written: list[StoredVersion] | None = None, now_us: int) -> dict[str, Any]:
    """The AuditEvent resource for ``trail`` (``written``: the versions of a committed change)."""
    from service.fhir.http import instant

    login = trail.path.endswith("/auth/token")
    code, action = ("login", "E") if login else _interaction(trail.method, trail.path)
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _ROLE, "code": "AUT" if login else "IRCP", "display": "author" if login else "information recipient"}]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": trail.client_id}} if trail.client_id else {"display": "unauthenticated caller"},
        "requestor": True,
    }
    if trail.source:
        agent["network"] = {"address": trail.source, "type": "2"}
    entities: list[dict[str, Any]] = []
    refs = [f"{v.resource_type}/{v.id}/_history/{v.version_id}" for v in written] if written is not None else trail.entities
    for ref in refs[:MAX_ENTITIES]:
        entities.append({"what": {"reference": ref}, "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}})
    for q in trail.searches:
        entities.append({"type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}, "query": base64.b64encode(q.encode()).decode(), "description": "search"})
    request = f"{trail.method} {trail.path}" + (f"?{trail.query}" if trail.query and not login else "")
    entities.append({"type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}, "description": "request", "detail": [{"type": "request", "valueString": request[:2000]}, {"type": "request-id", "valueString": trail.request_id}]})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _LOGIN_TYPE if login else _EVENT_TYPE,
        "subtype": [{"system": _INTERACTION, "code": code}] if not login else [],
        "action": action,
        "recorded": instant(now_us),
        "outcome": outcome,
        "outcomeDesc": description[:2000] or _OUTCOME_TEXT[outcome],
        "agent": [agent],
        "source": {"observer": {"display": "trialfhir"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
        "entity": entities,
    }
    if not event["subtype"]:
        del event["subtype"]
    return event


def _write(conn: Connection, event: dict[str, Any]) -> None:
    from service.rest.service import pending_write
    from service.storage.repository import ResourceRepository

    ResourceRepository(conn).write_many([pending_write("AuditEvent", str(uuid.uuid4()), event, "POST", None)])


def record_writes(conn: Connection, written: list[StoredVersion]) -> None:
    """Inside a write transaction: the AuditEvent of the versions it wrote (no trail: nothing)."""
    trail = _trail.get()
    if trail is None or not written:
        return
    from service.rest.service import now_us

    more = max(0, len(written) - MAX_ENTITIES)
    text = f"{len(written)} version(s) written" + (f"; {more} not listed" if more else "")
    _write(conn, audit_event(trail, outcome="0", description=text, written=written, now_us=now_us()))
    trail.recorded_in_transaction = True


def finish(engine: Engine, trail: AuditTrail, status: int, detail: str = "") -> None:
    """After the request: record it unless its change was recorded with it (see module docstring)."""
    if status < 400 and trail.recorded_in_transaction and not trail.failures:
        return
    from service.db.engine import run_in_transaction
    from service.rest.service import now_us

    if status >= 500:
        outcome = "8"
    elif status >= 400 or trail.failures:
        outcome = "4"
    else:
        outcome = "0"
    parts = [f"HTTP {status}"]
    if detail:
        parts.append(detail)
    if trail.failures:
        parts.append("failed entries: " + "; ".join(trail.failures))
    if trail.more_entities:
        parts.append(f"{trail.more_entities} more resources not listed")
    event = audit_event(trail, outcome=outcome, description=" — ".join(parts), now_us=now_us())
    run_in_transaction(engine, lambda conn: _write(conn, event))


__all__ = ["AuditTrail", "audit_event", "current_trail", "finish", "note_failure", "note_read", "note_search", "record_writes", "start"]
