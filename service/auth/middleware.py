"""Per-request rights default and the request's audit record (pure ASGI middleware).

For every HTTP request:

1. the caller's rights start as :data:`~service.auth.access.NO_TOKEN` when authorization
   is on (fail closed: only :func:`service.context.request_context` grants rights, after
   verifying the bearer token) and as :data:`~service.auth.access.FULL` when it is off;
2. with auditing on, an :class:`~service.auth.audit.AuditTrail` collects what the request
   does; when the response starts the AuditEvent is written (unless the request's change
   was recorded inside its own transaction) — for a success before any body byte is sent
   (if that fails the caller gets a 503 instead of unaudited data), for an error after its
   short body is known (the reason goes into ``outcomeDesc``).

Not audited: ``/fhir/metadata``, ``/fhir/.well-known/*``, health probes and the docs
(no data); everything else is.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from anyio import to_thread
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import audit
from service.auth.access import FULL, NO_TOKEN, _current
from service.config import Settings

log = logging.getLogger("trialfhir.audit")

#: Public, data-free paths; every other request is audited (FHIR, /api, the study report …).
_UNAUDITED = ("/fhir/metadata", "/fhir/.well-known/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/favicon.ico")
_MAX_ERROR_BODY = 16 * 1024


def audited_path(path: str) -> bool:
    return not path.startswith(_UNAUDITED)


def _error_text(body: bytes) -> str:
    """The human text of an error body (OperationOutcome, problem details or OAuth error)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(doc, dict):
        return ""
    if doc.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics", "")) for i in doc.get("issue") or [] if isinstance(i, dict))
    return str(doc.get("detail") or doc.get("error_description") or doc.get("error") or "")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, engine: Engine) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access_token = _current.set(NO_TOKEN if self.settings.auth_enabled else FULL)
        path = scope.get("path", "")
        trail = None
        if self.settings.audit_enabled and audited_path(path):
            client = scope.get("client")
            trail = audit.AuditTrail(
                request_id=str(scope.get("state", {}).get("request_id", "-")),
                method=scope.get("method", ""),
                path=path,
                query=scope.get("query_string", b"").decode("latin-1"),
                source=client[0] if client else None,
            )
        audit.start(trail)
        try:
            if trail is None:
                await self.app(scope, receive, send)
            else:
                await self._audited(scope, receive, send, trail)
        finally:
            audit.start(None)
            _current.reset(access_token)

    async def _record(self, trail: audit.AuditTrail, status: int, detail: str = "") -> bool:
        try:
            await to_thread.run_sync(lambda: audit.finish(self.engine, trail, status, detail))
            return True
        except Exception:  # noqa: BLE001 - reported below; the caller gets no unaudited data
            log.error("could not write the AuditEvent", exc_info=True, extra={"request_id": trail.request_id})
            return False

    async def _audited(self, scope: Scope, receive: Receive, send: Send, trail: audit.AuditTrail) -> None:
        state: dict[str, Any] = {"start": None, "body": b"", "blocked": False, "sent": False}

        async def audited_send(message: Message) -> None:
            if state["blocked"]:
                return
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status >= 400:
                    state["start"] = message  # hold it: the error's text goes into the AuditEvent
                    return
                if not await self._record(trail, status):
                    state["blocked"] = True
                    await _send_503(send)
                    return
                state["sent"] = True
                await send(message)
                return
            if message["type"] == "http.response.body" and state["start"] is not None:
                state["body"] += message.get("body", b"")
                if message.get("more_body", False) and len(state["body"]) < _MAX_ERROR_BODY:
                    return
                start, body = state["start"], state["body"]
                state["start"] = None
                await self._record(trail, int(start["status"]), _error_text(body))
                state["sent"] = True
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": message.get("more_body", False)})
                return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not state["sent"]:
                await self._record(trail, 500, "unhandled server error")
            raise


async def _send_503(send: Send) -> None:
    body = json.dumps(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient", "diagnostics": "The access could not be recorded in the audit trail, so nothing was returned; retry shortly."}]}
    ).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()), (b"retry-after", b"2")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["AccessMiddleware", "audited_path"]
