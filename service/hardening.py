"""Transport hardening: security headers, slow-body timeout, CORS only when configured.

- Every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` and a ``Content-Security-Policy`` that loads nothing
  unless the route set its own (the interactive ``/docs`` page excepted: it needs its
  scripts); responses that may hold patient data (all but metadata, health and docs) are
  ``Cache-Control: no-store`` unless the route set its own.
- A request body that has not fully arrived after ``TRIALFHIR_BODY_TIMEOUT_SECONDS`` is
  answered 408 (a slow-loris upload cannot hold a worker).
- CORS is off unless ``TRIALFHIR_CORS_ORIGINS`` lists origins.

Body size and Bundle entry limits are enforced where bodies are read
(:func:`service.rest.router.read_body`, :class:`service.transactions.service.BundleProcessor`).
"""

from __future__ import annotations

import time

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.fhir.outcome import error

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS = ("/docs", "/redoc")


class HardeningMiddleware:
    def __init__(self, app: ASGIApp, body_timeout_seconds: float) -> None:
        self.app = app
        self.body_timeout = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        serving = serving_request.set(True)
        data_path = not path.startswith(("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/fhir/metadata", "/fhir/.well-known/"))
        deadline = time.monotonic() + self.body_timeout
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                with anyio.fail_after(max(remaining, 0.001)):
                    message = await receive()
            except TimeoutError:
                raise error(408, "timeout", f"The request body did not arrive within {self.body_timeout:g} s; send it faster or in smaller parts.") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if not path.startswith(_DOCS) and _CSP[0] not in names:
                    headers.append(_CSP)
                if data_path and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, timed_receive, send_with_headers)
        finally:
            serving_request.reset(serving)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the middleware (and CORS when origins are configured) to ``app``."""
    app.add_middleware(HardeningMiddleware, body_timeout_seconds=settings.body_timeout_seconds)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "accept", "prefer", "if-match", "if-none-match", "if-none-exist", "x-request-id"],
            expose_headers=["location", "content-location", "etag", "last-modified", "x-request-id", "x-progress"],
        )


__all__ = ["HardeningMiddleware", "SECURITY_HEADERS", "install"]


# --- statement timeout (PostgreSQL) ---------------------------------------------------------------

from contextvars import ContextVar  # noqa: E402

from sqlalchemy import Engine, event  # noqa: E402

#: True while serving an HTTP request (worker threads inherit it through anyio).
serving_request: ContextVar[bool] = ContextVar("trialfhir_serving_request", default=False)


def install_statement_timeout(engine: Engine, seconds: float) -> None:
    """PostgreSQL: statements run for an HTTP request are cancelled after ``seconds``
    (``statement_timeout``; the client gets a 503 and nothing is stored); background work
    (bulk export jobs) has no limit. The setting is changed only when a pooled connection
    moves between the two kinds of work, so it costs nothing per request."""
    if engine.dialect.name != "postgresql" or seconds <= 0:
        return
    limit_ms = int(seconds * 1000)

    @event.listens_for(engine, "checkout")
    def _set_timeout(dbapi_conn, record, proxy):  # type: ignore[no-untyped-def]
        wanted = limit_ms if serving_request.get() else 0
        if record.info.get("statement_timeout_ms") != wanted:
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"SET statement_timeout = {int(wanted)}")
            finally:
                cur.close()
            if not getattr(dbapi_conn, "autocommit", True):
                dbapi_conn.commit()
            record.info["statement_timeout_ms"] = wanted
