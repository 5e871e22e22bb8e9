"""Routes of the study report (HTTP only; see :mod:`service.report`).

- ``GET /studies/{study}/report`` → the HTML page (``text/html``);
- ``GET /studies/{study}/report/{block}.csv`` → the numbers of one block (the same table
  the page shows under it), as a CSV attachment.

``{study}`` is the study code (as in ``/api/studies/{code}``) or its ResearchStudy id.
An unknown study or block is a 404 problem+json (:mod:`service.errors`), like the /api routes.
The page is self-contained and served with a Content-Security-Policy that forbids every
fetch except inline styles and ``data:`` images, so it provably works offline.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from mappers import ids
from service.context import request_context
from service.fhir.http import instant
from service.fhir.outcome import FhirError, error
from service.report.model import ReportData
from service.report.page import Block, blocks, render_page
from service.report.service import report_data
from service.rest.service import now_us

PROBLEM = {"content": {"application/problem+json": {}}, "description": "Problem details (RFC 9457)"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

#: ``request_context`` on every route: authorization plugs in there (service/context.py).
router = APIRouter(tags=["Study report"], dependencies=[Depends(request_context)], responses={404: PROBLEM, 422: PROBLEM})


def _data(request: Request, study: str) -> ReportData:
    from service.auth.policy import study_operation

    engine = request.app.state.store.engine
    try:
        # authorization: the caller must see the study and read its subjects' data (service/auth)
        with study_operation(ids.study_id(study), ("ResearchSubject", "Observation", "AdverseEvent"), engine=engine, operation="the report"):
            return report_data(engine, ids.study_id(study))
    except FhirError as exc:
        if exc.status == 404:
            raise error(404, "not-found", f"There is no study '{study}' (no ResearchStudy/{ids.study_id(study)}), so there is no report.") from None
        raise


@router.get("/studies/{study}/report", response_class=HTMLResponse, summary="Study report (HTML, printable)")
async def report_page(study: str, request: Request) -> HTMLResponse:
    """Per-subject trajectories (DAS28-ESR/CRP, SDAI, CDAI, pain) with activity bands, ACR20/50/70
    rates with exact 95 % CIs, a swimmer plot, biomarker changes from baseline, the safety
    tables and the data-completeness grid — all from the derivation ``$endpoints`` runs."""

    def run() -> str:
        data = _data(request, study)
        return render_page(data, blocks(data), generated=instant(now_us()))

    page = await to_thread.run_sync(run)
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


@router.get("/studies/{study}/report/{block}.csv", summary="The numbers of one report block (CSV)", response_class=Response)
async def report_csv(study: str, block: str, request: Request) -> Response:
    """The table under block ``{block}`` of the page (the id in its CSV link), header = column keys."""

    def run() -> tuple[ReportData, Block]:
        data = _data(request, study)
        all_blocks = blocks(data)
        found = next((b for b in all_blocks if b.id == block), None)
        if found is None:
            known = ", ".join(b.id for b in all_blocks)
            raise error(404, "not-found", f"The report has no block '{block}'; blocks: {known}.")
        return data, found

    data, found = await to_thread.run_sync(run)
    filename = f"{data.study_code}-{found.id}.csv"
    return Response(found.table.to_csv(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


__all__ = ["router"]
