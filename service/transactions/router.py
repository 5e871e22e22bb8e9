"""``POST [base]`` — transaction and batch Bundles (https://hl7.org/fhir/R4/http.html#transaction).

Both ``/fhir`` and ``/fhir/`` are accepted (fhirpy and fhirclient post to the trailing slash).
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.context import RequestContext, request_context
from service.fhir import jsonio
from service.fhir.http import FhirResponse, Prefer, check_content_type, negotiate
from service.rest.router import read_body
from service.rest.service import body_or_error
from service.transactions.gcpause import gc_paused

router = APIRouter(tags=["FHIR REST"])


async def _process(request: Request, ctx: RequestContext) -> Response:
    negotiate(request.headers.get("accept"), request.query_params.get("_format"))
    check_content_type(request.headers.get("content-type"))
    raw = await read_body(request)
    prefer = Prefer.parse(request.headers.get("prefer"))
    processor = request.app.state.bundles
    pretty = request.query_params.get("_pretty", "").lower() == "true"
    with gc_paused():  # parse, process and answer without collector passes (see gcpause.py)
        body = body_or_error(raw)
        doc = await to_thread.run_sync(lambda: processor.process(body, ctx.base_url, return_pref=prefer.return_))
        out = jsonio.dumps(doc, pretty=pretty)
        # Freed before the collector resumes, so its first pass does not walk them.
        del body, doc
    return FhirResponse(out)


@router.post("/fhir", summary="Transaction or batch")
async def transaction(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Process a Bundle of type transaction (all or nothing) or batch (entry by entry)."""
    return await _process(request, ctx)


@router.post("/fhir/", include_in_schema=False)
async def transaction_slash(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    return await _process(request, ctx)
