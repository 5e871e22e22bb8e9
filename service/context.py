"""The request context: who is calling and with which rights, built in one place.

Every FHIR and API route receives a :class:`RequestContext` from :func:`request_context`.
Authorization (SMART Backend Services) plugs in here — it fills ``client_id``, ``scopes``
and ``studies`` — so no route has to change when it arrives. Until then every caller is
the anonymous local user with all rights.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.requests import Request

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

    def can(self, resource_type: str, interaction: str) -> bool:
        """Whether the caller's scopes allow ``interaction`` (c r u d s) on ``resource_type``."""
        return True


def fhir_base(request: Request, configured: str) -> str:
    if configured:
        return configured
    root = str(request.base_url).rstrip("/")
    return f"{root}/fhir"


async def request_context(request: Request) -> RequestContext:
    """FastAPI dependency: the context of this request (see module docstring)."""
    state = request.app.state
    rid = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    client = request.client.host if request.client else None
    return RequestContext(request_id=rid, base_url=fhir_base(request, state.settings.base_url), remote_addr=client)
