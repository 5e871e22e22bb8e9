"""Exception handlers: every error leaves as an OperationOutcome with the right status.

Under ``/fhir`` errors are OperationOutcome (application/fhir+json). Elsewhere (``/api``
and the rest) they are RFC 9457 problem details. A 401 carries ``WWW-Authenticate: Bearer``
(RFC 6750 §3, set by :mod:`service.context`); a 403 names the scope or study rule that
refused the request (:mod:`service.auth.access`). No handler ever puts a stack trace,
SQL or a driver message in a response; unexpected exceptions are logged with the
request id and answered with a 500 that names only that id.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from service.fhir import jsonio
from service.fhir.http import FhirResponse
from service.fhir.outcome import FhirError, Issue, operation_outcome

log = logging.getLogger("trialfhir.errors")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 406: "not-supported", 413: "too-costly", 415: "not-supported"}


def _is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


def _render(request: Request, status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    if _is_fhir(request):
        return FhirResponse(jsonio.dumps(operation_outcome(issues)), status_code=status, headers=headers)
    problem = {
        "type": "about:blank",
        "title": issues[0].code if issues else "error",
        "status": status,
        "detail": "; ".join(i.diagnostics for i in issues),
    }
    return JSONResponse(problem, status_code=status, headers=headers, media_type="application/problem+json")


async def fhir_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    return _render(request, exc.status, exc.issues, exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        text = f"No route for {request.method} {request.url.path}; the FHIR API is under /fhir (see /fhir/metadata)."
    elif exc.status_code == 405:
        text = f"{request.method} is not allowed on {request.url.path}."
    else:
        text = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, "processing")
    return _render(request, exc.status_code, [Issue(code, text)], dict(exc.headers or {}))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue("invalid", f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}") for e in exc.errors()[:20]
    ]
    return _render(request, 400 if _is_fhir(request) else 422, issues or [Issue("invalid", "invalid request")])


async def database_error_handler(request: Request, exc: Exception) -> Response:
    """The database is unreachable, restarting, full or read-only: 503, retry later.

    Only connection-level failures get here as 503; nothing was written (the transaction
    rolled back). Other database errors are bugs and fall through to the 500 handler."""
    from sqlalchemy.exc import DBAPIError

    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) == "57014":  # statement_timeout (service.hardening)
        rid = getattr(request.state, "request_id", "-")
        log.warning("statement timeout", extra={"request_id": rid})
        return _render(
            request,
            503,
            [Issue("timeout", "The request took longer than this server allows (TRIALFHIR_REQUEST_TIMEOUT_SECONDS); nothing was stored. Narrow it (e.g. fewer search results per page) or retry later.")],
            {"Retry-After": "5"},
        )
    if "NUL (0x00)" in str(exc.orig):  # PostgreSQL text cannot hold U+0000 (a search value, an id …)
        return _render(request, 400, [Issue("invalid", "The request contains a NUL character (U+0000), which this server cannot store or search for; remove it.")])
    if not _is_unavailable(exc):
        return await unexpected_error_handler(request, exc)
    rid = getattr(request.state, "request_id", "-")
    log.warning("database unavailable", extra={"request_id": rid, "error": type(exc.orig).__name__ if exc.orig else type(exc).__name__})
    return _render(request, 503, [Issue("transient", "The database is unavailable right now; nothing was stored. Retry shortly.")], {"Retry-After": "2"})


def _is_unavailable(exc: Exception) -> bool:
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    # By SQLSTATE whatever the DBAPI class: psycopg raises 25006 (read-only transaction,
    # e.g. default_transaction_read_only or a hot standby) as InternalError, not
    # OperationalError — it was a 500 (tests/test_reliability.py).
    if sqlstate.startswith(("08", "53", "57P")) or sqlstate == "25006":  # connection, insufficient resources, operator intervention, read-only
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if exc.orig is not None else ""
        return any(t in text for t in ("readonly database", "read-only", "disk i/o", "database or disk is full", "unable to open", "connection"))
    return False


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    rid = getattr(request.state, "request_id", "-")
    log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
    from service.hardening import SECURITY_HEADERS

    # Rendered outside the app's middleware: the security headers are added here.
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
    headers["X-Request-ID"] = rid
    return _render(
        request,
        500,
        [Issue("exception", f"The server failed to process the request (request id {rid}); it has been logged.")],
        headers,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(FhirError, fhir_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    from sqlalchemy.exc import DBAPIError

    app.add_exception_handler(DBAPIError, database_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
