"""Liveness and readiness: ``/healthz`` (process up) and ``/readyz`` (database reachable)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="The database answers")
async def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.store.engine

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await to_thread.run_sync(ping)
    except Exception:  # noqa: BLE001 - any failure means not ready; details stay in the log
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": engine.dialect.name})
