"""The domain API under ``/api``: studies, subjects, infusions, assessments, adverse events.

JSON in and out (the pydantic models of :mod:`schemas.trial`, documented with examples in
the OpenAPI document at ``/openapi.json`` and ``/docs``). Errors are RFC 9457 problem
details. Writes are idempotent on business keys: 201 when something was created, 200
otherwise; the ``X-Changed`` header says whether a new version was written.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from schemas.trial import AdverseEvent, Assessment, Infusion, Study, Subject
from service.context import RequestContext, request_context
from service.domain.csv_import import import_assessments_csv
from service.domain.service import DomainService, WriteOutcome

PROBLEM = {"content": {"application/problem+json": {}}, "description": "Problem details (RFC 9457)"}
router = APIRouter(prefix="/api", tags=["Trial domain API"], responses={404: PROBLEM, 422: PROBLEM, 400: PROBLEM})

STUDY_EXAMPLE = {
    "code": "BM-CMSC-RA",
    "identifiers": [{"system": "https://irct.behdasht.gov.ir", "value": "IRCT20080728001031N29"}],
    "title": "Allogeneic BM-derived clonal MSCs in refractory rheumatoid arthritis (phase I)",
    "phase": "phase-1",
}
SUBJECT_EXAMPLE = {"study_code": "BM-CMSC-RA", "subject_code": "S01", "sex": "female", "birth_year": 1975, "consent_date": "2024-01-08"}
INFUSION_EXAMPLE = {
    "study_code": "BM-CMSC-RA", "subject_code": "S01", "infusion_code": "W0",
    "start": "2024-01-15T09:00:00+03:30", "end": "2024-01-15T10:00:00+03:30", "dose_value": "1", "lot": "LOT-001",
}
ASSESSMENT_EXAMPLE = {
    "study_code": "BM-CMSC-RA", "subject_code": "S01", "visit_name": "W16", "effective": "2024-05-06",
    "measure": "crp", "value": "12.5", "unit": "mg/L",
}
AE_EXAMPLE = {
    "study_code": "BM-CMSC-RA", "subject_code": "S01", "ae_code": "AE1", "term": "Headache", "onset": "2024-01-16",
    "severity": "mild", "grade": 1, "serious": False, "relatedness": "Possible", "outcome": "resolved", "infusion_code": "W0",
}


def _svc(request: Request, ctx: RequestContext) -> DomainService:
    app = request.app
    return DomainService(app.state.store.engine, app.state.store, app.state.bundles, ctx.base_url)


def _written(outcome: WriteOutcome, body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=outcome.status_code, headers={"X-Changed": "true" if outcome.changed else "false"})


def _dump(model: Any) -> Any:
    if isinstance(model, list):
        return [m.model_dump(mode="json") for m in model]
    return model.model_dump(mode="json")


# --- studies -------------------------------------------------------------------------------------


@router.post("/studies", summary="Create or update a study", status_code=201)
async def put_study(request: Request, study: Study = Body(openapi_examples={"pilot": {"value": STUDY_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    """Writes the ResearchStudy, its schedule (PlanDefinition), the cohort Group and the product Medication."""
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_study(study))
    return _written(outcome, _dump(study))


@router.get("/studies", summary="List studies")
async def list_studies(request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).list_studies())))


@router.get("/studies/{study_code}", summary="Read a study")
async def get_study(study_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).get_study(study_code))))


@router.put("/studies/{study_code}", summary="Update a study")
async def update_study(study_code: str, request: Request, study: Study = Body(openapi_examples={"pilot": {"value": STUDY_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, study.code, "study code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_study(study))
    return _written(outcome, _dump(study))


def _same(url_value: str, body_value: str | None, what: str) -> None:
    from service.fhir.outcome import error

    if body_value is not None and url_value.lower() != body_value.lower():
        raise error(422, "invalid", f"The {what} in the URL ({url_value}) differs from the body ({body_value}).")


# --- subjects ------------------------------------------------------------------------------------


@router.post("/studies/{study_code}/subjects", summary="Enrol or update a subject", status_code=201)
async def put_subject(study_code: str, request: Request, subject: Subject = Body(openapi_examples={"S01": {"value": SUBJECT_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, subject.study_code, "study code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_subject(subject))
    return _written(outcome, _dump(subject))


@router.get("/studies/{study_code}/subjects", summary="List subjects")
async def list_subjects(study_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).list_subjects(study_code))))


@router.get("/studies/{study_code}/subjects/{subject_code}", summary="Read a subject")
async def get_subject(study_code: str, subject_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).get_subject(study_code, subject_code))))


@router.put("/studies/{study_code}/subjects/{subject_code}", summary="Update a subject")
async def update_subject(study_code: str, subject_code: str, request: Request, subject: Subject = Body(openapi_examples={"S01": {"value": SUBJECT_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, subject.study_code, "study code")
    _same(subject_code, subject.subject_code, "subject code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_subject(subject))
    return _written(outcome, _dump(subject))


# --- infusions -------------------------------------------------------------------------------------


@router.post("/studies/{study_code}/infusions", summary="Record or update an infusion", status_code=201)
async def put_infusion(study_code: str, request: Request, infusion: Infusion = Body(openapi_examples={"W0": {"value": INFUSION_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, infusion.study_code, "study code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_infusion(infusion))
    return _written(outcome, _dump(infusion))


@router.get("/studies/{study_code}/infusions", summary="List infusions")
async def list_infusions(study_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).list_infusions(study_code))))


@router.get("/studies/{study_code}/subjects/{subject_code}/infusions/{infusion_code}", summary="Read an infusion")
async def get_infusion(study_code: str, subject_code: str, infusion_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).get_infusion(study_code, subject_code, infusion_code))))


@router.put("/studies/{study_code}/subjects/{subject_code}/infusions/{infusion_code}", summary="Update an infusion")
async def update_infusion(study_code: str, subject_code: str, infusion_code: str, request: Request, infusion: Infusion = Body(openapi_examples={"W0": {"value": INFUSION_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, infusion.study_code, "study code")
    _same(subject_code, infusion.subject_code, "subject code")
    _same(infusion_code, infusion.infusion_code, "infusion code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_infusion(infusion))
    return _written(outcome, _dump(infusion))


# --- assessments ---------------------------------------------------------------------------------


@router.post("/studies/{study_code}/assessments", summary="Record or correct an assessment", status_code=201)
async def put_assessment(study_code: str, request: Request, assessment: Assessment = Body(openapi_examples={"crp": {"value": ASSESSMENT_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    """Idempotent on study + subject + visit + measure: the same value again changes nothing
    (200, ``X-Changed: false``); a corrected value makes a new version of the same Observation."""
    _same(study_code, assessment.study_code, "study code")
    if assessment.study_code is None:
        assessment = assessment.model_copy(update={"study_code": study_code})
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_assessment(assessment))
    return _written(outcome, _dump(assessment))


@router.get("/studies/{study_code}/assessments", summary="List assessments (incl. hospital-pushed FHIR Observations)")
async def list_assessments(study_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).list_assessments(study_code))))


@router.get("/studies/{study_code}/subjects/{subject_code}/assessments/{visit}/{measure}", summary="Read an assessment")
async def get_assessment(study_code: str, subject_code: str, visit: str, measure: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).get_assessment(study_code, subject_code, visit, measure))))


@router.post(
    "/studies/{study_code}/assessments:import",
    summary="Import assessments from CSV",
    openapi_extra={"requestBody": {"content": {"text/csv": {"example": "subject,visit,date,tjc28,sjc28,crp [mg/L],esr [mm/h]\nS01,BL,2024-01-15,12,9,14.2,38\n"}}}},
)
async def import_csv(
    study_code: str,
    request: Request,
    dry_run: bool = Query(False, description="validate only, write nothing"),
    partial: bool = Query(False, description="write the valid rows even when others are invalid"),
    ctx: RequestContext = Depends(request_context),
) -> JSONResponse:
    """One row per subject × visit, a column per measure, units in the header (``crp [mg/L]``).
    Nothing is written when any row is invalid unless ``partial=true``; the report names
    row, column and reason."""
    from service.rest.router import read_body

    text = (await read_body(request)).decode("utf-8-sig", "replace")
    report = await to_thread.run_sync(lambda: import_assessments_csv(_svc(request, ctx), study_code, text, dry_run=dry_run, partial=partial))
    status = 200 if report["valid"] or partial or dry_run else 422
    return JSONResponse(report, status_code=status)


# --- adverse events -------------------------------------------------------------------------------


@router.post("/studies/{study_code}/adverse-events", summary="Record or update an adverse event", status_code=201)
async def put_adverse_event(study_code: str, request: Request, ae: AdverseEvent = Body(openapi_examples={"headache": {"value": AE_EXAMPLE}}), ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    _same(study_code, ae.study_code, "study code")
    outcome = await to_thread.run_sync(lambda: _svc(request, ctx).put_adverse_event(ae))
    return _written(outcome, _dump(ae))


@router.get("/studies/{study_code}/adverse-events", summary="List adverse events")
async def list_adverse_events(study_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).list_adverse_events(study_code))))


@router.get("/studies/{study_code}/subjects/{subject_code}/adverse-events/{ae_code}", summary="Read an adverse event")
async def get_adverse_event(study_code: str, subject_code: str, ae_code: str, request: Request, ctx: RequestContext = Depends(request_context)) -> JSONResponse:
    return JSONResponse(_dump(await to_thread.run_sync(lambda: _svc(request, ctx).get_adverse_event(study_code, subject_code, ae_code))))


__all__ = ["router", "Response"]
