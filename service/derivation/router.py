"""Routes of the derived endpoints (contract §5).

- ``GET /fhir/ResearchStudy/{id}/$endpoints`` → a ``collection`` Bundle of the derived
  Observations and MeasureReports (as stored);
- ``GET /api/studies/{code}/endpoints`` → the same content as plain JSON;
  ``?format=csv`` → one row per subject × visit, a column per output code (columns in
  :mod:`service.derivation.render`).

Both derive from the current inputs and store the outputs first (derived Observations,
MeasureReports and the Measures, through the domain write path), so
``GET /fhir/Observation?code=http://trialfhir.org/fhir/CodeSystem/ra|acr20`` and
``GET /fhir/Measure/acr20`` return them; storing is idempotent (a new version only where a
value changed). ``fhir_router`` must be included before the generic ``/fhir/{type}/{id}``
routes.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from mappers import ids
from service.context import RequestContext, request_context
from service.derivation.render import as_csv, as_json
from service.derivation.service import DerivationService, bundle
from service.domain.service import DomainService
from service.fhir import jsonio
from service.fhir.http import FhirResponse
from service.rest.router import FHIR_JSON_RESPONSES, check_format

fhir_router = APIRouter(prefix="/fhir", tags=["Derived endpoints"], dependencies=[Depends(check_format)], responses=FHIR_JSON_RESPONSES)
api_router = APIRouter(prefix="/api", tags=["Derived endpoints"])


def _service(request: Request, ctx: RequestContext) -> DerivationService:
    app = request.app
    return DerivationService(DomainService(app.state.store.engine, app.state.store, app.state.bundles, ctx.base_url))


@fhir_router.get("/ResearchStudy/{id}/$endpoints", summary="Derived endpoints of a study (Bundle)")
async def endpoints_bundle(id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Derives every output of contract §4 from the study's current inputs, stores them and
    returns a ``collection`` Bundle: one derived Observation per subject × visit × output
    code, one MeasureReport per binary/continuous output × visit, and the safety MeasureReport."""

    def run() -> bytes:
        _, res, stored = _service(request, ctx).run(id)
        return bundle(ctx.base_url, res, stored)

    body = await to_thread.run_sync(run)
    if request.query_params.get("_pretty", "").lower() == "true":
        body = jsonio.dumps(jsonio.loads(body), pretty=True)
    return FhirResponse(body)


@api_router.get("/studies/{study_code}/endpoints", summary="Derived endpoints of a study (JSON or CSV)")
async def endpoints_json(
    study_code: str,
    request: Request,
    format: str = Query("json", pattern="^(json|csv)$", description="json (default) or csv: one row per subject × visit, a column per output code"),
    ctx: RequestContext = Depends(request_context),
) -> Response:
    """The same content as ``GET /fhir/ResearchStudy/{id}/$endpoints`` as plain JSON: per
    subject × visit the selected inputs and every output (value as reported, unrounded
    value, reason, derived Observation, inputs used), the cohort summaries, the safety
    summary (per study, per subject, per event with the infusion it followed), and what was
    set aside or not placed on a visit, with reasons.

    ``?format=csv``: columns ``study, subject, visit, target_day, in_cohort`` and one per
    output code in contract §4 order; a cell is the reported value (rounded number,
    category code, ``true``/``false``), empty when not computed or not applicable."""

    def run() -> Response:
        derivation, res, stored = _service(request, ctx).run(ids.study_id(study_code))
        if format == "csv":
            filename = f"{ids.study_id(study_code)}-endpoints.csv"
            return Response(as_csv(derivation), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return Response(jsonio.dumps(as_json(derivation, res, stored)), media_type="application/json")

    return await to_thread.run_sync(run)


__all__ = ["api_router", "fhir_router"]
