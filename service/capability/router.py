"""``GET /fhir/metadata`` — https://hl7.org/fhir/R4/http.html#capabilities."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.capability.builder import capability_statement
from service.context import RequestContext, public_context
from service.fhir import jsonio
from service.fhir.http import FhirResponse, negotiate

router = APIRouter(prefix="/fhir", tags=["FHIR REST"])


@router.get("/metadata", summary="CapabilityStatement")
def metadata(request: Request, ctx: RequestContext = Depends(public_context)) -> Response:
    """What this server implements, generated from its own tables (public: no token needed)."""
    negotiate(request.headers.get("accept"), request.query_params.get("_format"))
    from service.db.engine import active_engine
    from service.search.registry import registry

    active_engine.set(request.app.state.store.engine)
    key = (ctx.base_url, registry().generation)
    cache = request.app.state.__dict__.setdefault("_capability_cache", {})
    body = cache.get(key)
    if body is None:
        from service import __version__

        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = jsonio.dumps(capability_statement(ctx.base_url, __version__, now, smart=request.app.state.settings.auth_enabled))
        cache[key] = body
    if request.query_params.get("_pretty", "").lower() == "true":
        body = jsonio.dumps(jsonio.loads(body), pretty=True)
    return FhirResponse(body)


@router.api_route("/metadata", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def metadata_wrong_method(request: Request) -> Response:
    """Only GET reads the CapabilityStatement."""
    from service.fhir.outcome import error

    raise error(405, "not-supported", f"{request.method} is not allowed on /fhir/metadata; use GET.", headers={"Allow": "GET"})


@router.api_route("/_history", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def history_wrong_method(request: Request) -> Response:
    """System history is read-only."""
    from service.fhir.outcome import error

    raise error(405, "not-supported", f"{request.method} is not allowed on /fhir/_history; use GET.", headers={"Allow": "GET"})
