"""HTTP routes of Bulk Data export and ``$everything`` under ``/fhir``.

- kick-off: ``GET|POST /fhir/$export``, ``/fhir/Patient/$export``, ``/fhir/Group/{id}/$export``
  with ``Prefer: respond-async`` → 202 + ``Content-Location`` (the status URL);
- status: ``GET /fhir/$export-status/{job}`` → 202 (``X-Progress``, ``Retry-After``) while
  running, 200 + manifest when complete, 4xx/5xx OperationOutcome when it failed;
  ``DELETE`` cancels (202), after which the URL answers 404;
- files: ``GET /fhir/$export-file/{job}/{name}`` → ``application/fhir+ndjson``, streamed
  from disk (410 once the job's files expired);
- ``GET|POST /fhir/Patient/{id}/$everything`` and ``/fhir/ResearchStudy/{id}/$everything``.

The app includes this router before the generic REST routes, so ``/fhir/Patient/$export``
is never taken for a read of Patient "$export".
"""

from __future__ import annotations

from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from service.bulk import jobs
from service.bulk.everything import everything
from service.bulk.files import NAME_RE, job_dir, read_limited, remove_job_files
from service.bulk.service import BulkExports, find_part, manifest_document, parse_kickoff, progress_text
from service.context import RequestContext, request_context
from service.fhir import jsonio
from service.fhir.http import FhirResponse, Prefer, http_date, negotiate
from service.fhir.outcome import error, info
from service.rest.router import read_body
from service.rest.service import body_or_error, now_us

NDJSON = "application/fhir+ndjson"

router = APIRouter(prefix="/fhir", tags=["FHIR Bulk Data"])


def _bulk(request: Request) -> BulkExports:
    return request.app.state.bulk


def _accept_json(request: Request) -> None:
    negotiate(request.headers.get("accept"), request.query_params.get("_format"))


def _lenient(prefer: str | None) -> bool:
    """``Prefer: handling=lenient`` given explicitly (for $export the default is strict)."""
    tokens = [p.strip().replace(" ", "").lower() for part in (prefer or "").split(",") for p in part.split(";")]
    return "handling=lenient" in tokens


async def _kick_off(request: Request, ctx: RequestContext, level: str, group_id: str | None = None) -> Response:
    _accept_json(request)
    prefer = Prefer.parse(request.headers.get("prefer"))
    if not prefer.respond_async:
        raise error(400, "invalid", "$export runs asynchronously: send the header 'Prefer: respond-async'.")
    body = None
    if request.method == "POST":
        raw = await read_body(request)
        if raw.strip():
            body = body_or_error(raw)
    query = list(request.query_params.multi_items())
    bulk = _bulk(request)

    def work() -> jobs.Job:
        ko = parse_kickoff(level, group_id, query, body, lenient=_lenient(request.headers.get("prefer")), base_url=ctx.base_url)
        return bulk.kick_off(ko, request_url=str(request.url), base_url=ctx.base_url, client_id=ctx.client_id)

    job = await to_thread.run_sync(work)
    status_url = f"{ctx.base_url}/$export-status/{job.id}"
    text = f"Export {job.id} accepted; poll {status_url} for its status."
    return FhirResponse(jsonio.dumps(info(text)), status_code=202, headers={"Content-Location": status_url})


@router.get("/$export", summary="Bulk export: whole system (kick-off)", status_code=202)
@router.post("/$export", summary="Bulk export: whole system (kick-off, Parameters body)", status_code=202)
async def export_system(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/uv/bulkdata/export.html#endpoint---system-level-export"""
    return await _kick_off(request, ctx, "system")


@router.get("/Patient/$export", summary="Bulk export: all patients (kick-off)", status_code=202)
@router.post("/Patient/$export", summary="Bulk export: all patients (kick-off, Parameters body)", status_code=202)
async def export_patients(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/uv/bulkdata/export.html#endpoint---all-patients"""
    return await _kick_off(request, ctx, "patient")


@router.get("/Group/{group_id}/$export", summary="Bulk export: one Group, e.g. a study's cohort (kick-off)", status_code=202)
@router.post("/Group/{group_id}/$export", summary="Bulk export: one Group (kick-off, Parameters body)", status_code=202)
async def export_group(group_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/uv/bulkdata/export.html#endpoint---group-of-patients"""
    return await _kick_off(request, ctx, "group", group_id)


def _job_or_404(request: Request, ctx: RequestContext, job_id: str) -> jobs.Job:
    job = _bulk(request).visible(job_id, ctx.client_id)
    if job is None or job.status == "cancelled":
        raise error(404, "not-found", f"There is no export {job_id} (never started, or cancelled).")
    if job.status == "expired" or (job.expires_us is not None and job.expires_us < now_us()):
        raise error(410, "expired", f"Export {job_id} finished and its files expired; start a new export.")
    return job


@router.get("/$export-status/{job_id}", summary="Bulk export status / manifest")
async def export_status(job_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-status-request"""
    job = await to_thread.run_sync(lambda: _job_or_404(request, ctx, job_id))
    settings = _bulk(request).settings
    if job.status in ("queued", "running"):
        return Response(status_code=202, headers={"X-Progress": progress_text(job), "Retry-After": str(settings.retry_after_seconds)})
    if job.status == "failed":
        err = job.error or {}
        raise error(int(err.get("status", 500)), err.get("code", "exception"), err.get("diagnostics", "The export failed."))
    headers = {"Expires": http_date(job.expires_us)} if job.expires_us else {}
    return JSONResponse(manifest_document(job, ctx.base_url), headers=headers, media_type="application/json")


@router.delete("/$export-status/{job_id}", summary="Cancel a bulk export (or release its files)", status_code=202)
async def export_cancel(job_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-delete-request"""
    bulk = _bulk(request)

    def work() -> None:
        job = bulk.visible(job_id, ctx.client_id)
        if job is None or job.status in ("cancelled",):
            raise error(404, "not-found", f"There is no export {job_id} (never started, or already cancelled).")
        before = jobs.cancel(bulk.engine, job_id)
        if before is not None and before.status != "running":
            remove_job_files(bulk.settings.export_dir, job_id)  # a running job's worker removes its own

    await to_thread.run_sync(work)
    return FhirResponse(jsonio.dumps(info(f"Export {job_id} cancelled; its files are deleted.")), status_code=202)


@router.get("/$export-file/{job_id}/{name}", summary="Download one NDJSON file of a bulk export")
async def export_file(job_id: str, name: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """The file, streamed from disk as ``application/fhir+ndjson``."""
    if not NAME_RE.match(name):
        raise error(404, "not-found", f"No file '{name}'.")
    bulk = _bulk(request)
    job = await to_thread.run_sync(lambda: _job_or_404(request, ctx, job_id))
    part = find_part(job, name) if job.status == "completed" else None
    if part is None:
        raise error(404, "not-found", f"Export {job_id} has no file '{name}'.")
    path: Path = job_dir(bulk.settings.export_dir, job_id) / name
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise error(410, "expired", f"The file '{name}' of export {job_id} is no longer available.") from None
    size = int(part["size"])
    if actual == size:
        return FileResponse(path, media_type=NDJSON)
    return StreamingResponse(read_limited(path, size), media_type=NDJSON, headers={"Content-Length": str(size)})


async def _everything(resource_type: str, id: str, request: Request, ctx: RequestContext) -> Response:
    _accept_json(request)
    settings = request.app.state.settings
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]
    if request.method == "POST":
        raw = await read_body(request)
        if raw.strip():
            body = body_or_error(raw)
            if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
                raise error(400, "structure", "A POST $everything body must be a Parameters resource.")
            for p in body.get("parameter") or []:
                values = [v for k, v in p.items() if k.startswith("value")] if isinstance(p, dict) else []
                if isinstance(p, dict) and isinstance(p.get("name"), str) and len(values) == 1 and isinstance(values[0], (str, int)):
                    params.append((p["name"], str(values[0])))
    doc = await to_thread.run_sync(
        lambda: everything(
            _bulk(request).engine,
            base_url=ctx.base_url,
            resource_type=resource_type,
            id=id,
            params=params,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            now_us=now_us(),
        )
    )
    pretty = request.query_params.get("_pretty", "").lower() == "true"
    return FhirResponse(jsonio.dumps(doc, pretty=pretty))


@router.get("/Patient/{id}/$everything", summary="Everything about one patient (paged Bundle)")
@router.post("/Patient/{id}/$everything", summary="Everything about one patient (paged Bundle)")
async def patient_everything(id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """https://hl7.org/fhir/R4/patient-operation-everything.html"""
    return await _everything("Patient", id, request, ctx)


@router.get("/ResearchStudy/{id}/$everything", summary="Everything about one study (paged Bundle)")
@router.post("/ResearchStudy/{id}/$everything", summary="Everything about one study (paged Bundle)")
async def study_everything(id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """The study, its cohort and everything about its patients (see :mod:`service.bulk.everything`)."""
    return await _everything("ResearchStudy", id, request, ctx)
