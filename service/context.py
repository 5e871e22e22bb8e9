"""The request context: who is calling and with which rights, built in one place.

Every FHIR and API route that acts for a caller receives a :class:`RequestContext` from
:func:`request_context`. With authorization on (``TRIALFHIR_AUTH=smart``, the default)
this is where the caller is identified: the ``Authorization: Bearer`` access token issued
by the token endpoint (SMART App Launch v2 Backend Services, :mod:`service.auth`) is
verified, its client, scopes and studies become the request's
:class:`service.auth.access.Access`, which the service layer checks for every interaction.
No token, or an invalid or expired one, is a 401 with ``WWW-Authenticate: Bearer``
(RFC 6750 §3). With authorization off every caller has all rights.

Public routes (``/fhir/metadata``, the SMART configuration, the token endpoint, health)
use :func:`public_context` instead.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.requests import Request

from service.auth.access import FULL, Access, set_access
from service.fhir.outcome import FhirError, Issue

#: The current request's id, for log lines written anywhere below the HTTP layer.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything below the HTTP layer may know about the caller."""

    request_id: str
    #: Absolute FHIR base the client used (``http://host:port/fhir``); links use it.
    base_url: str
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"system/*.*"}))
    #: Study ids the client is bound to; None means unrestricted.
    studies: frozenset[str] | None = None
    remote_addr: str | None = None
    access: Access = FULL

    def can(self, resource_type: str, interaction: str) -> bool:
        """Whether the caller's scopes allow ``interaction`` (c r u d s) on ``resource_type``."""
        return self.access.allows(resource_type, interaction)


def fhir_base(request: Request, configured: str) -> str:
    if configured:
        return configured
    root = str(request.base_url).rstrip("/")
    return f"{root}/fhir"


def _unauthorized(text: str, error: str | None) -> FhirError:
    challenge = 'Bearer realm="trialfhir"'
    if error:
        challenge += f', error="{error}", error_description="{text}"'
    return FhirError(401, [Issue("login", text)], {"WWW-Authenticate": challenge})


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    token_url = fhir_base(request, request.app.state.settings.base_url) + "/auth/token"
    if not header:
        raise _unauthorized(
            f"This server requires a SMART Backend Services access token: get one from {token_url} "
            "(client_credentials with a signed client assertion) and send 'Authorization: Bearer <token>'.",
            None,
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("The Authorization header must be 'Bearer <access token>'.", "invalid_request")
    return token.strip()


def public_context(request: Request) -> RequestContext:
    """The context of a public route: no caller identity is needed or resolved."""
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    client = request.client.host if request.client else None
    return RequestContext(request_id=rid, base_url=fhir_base(request, request.app.state.settings.base_url), remote_addr=client)


async def request_context(request: Request) -> RequestContext:
    """FastAPI dependency: the context of this request (see module docstring)."""
    state = request.app.state
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    client = request.client.host if request.client else None
    base = fhir_base(request, state.settings.base_url)
    if not state.settings.auth_enabled:
        set_access(FULL)
        return RequestContext(request_id=rid, base_url=base, remote_addr=client)
    from anyio import to_thread

    from service.auth import audit

    token = _bearer(request)
    grant = state.tokens.cached(token) or await to_thread.run_sync(lambda: state.tokens.verify(token))
    if grant is None:
        raise _unauthorized("The access token is invalid or has expired; request a new one from the token endpoint.", "invalid_token")
    access = Access(client_id=grant.client_id, scopes=grant.scopes, studies=grant.studies)
    set_access(access)
    trail = audit.current_trail()
    if trail is not None:
        trail.client_id = grant.client_id
    return RequestContext(
        request_id=rid,
        base_url=base,
        client_id=grant.client_id,
        scopes=frozenset(s.text for s in grant.scopes.scopes),
        studies=grant.studies,
        remote_addr=client,
        access=access,
    )
