"""The baseline for :mod:`bench.rest_bench`: a bare FastAPI app with no storage.

It is served exactly like trialfhir (``uvicorn.run`` with 1 worker, ``log_level="warning"``,
``access_log=False``, ``proxy_headers=True``; uvicorn[standard] picks uvloop + httptools),
so ``trialfhir - baseline`` is what trialfhir itself costs per request:

- ``GET /r/{id}`` returns a constant FHIR JSON body (~600-byte lab Observation plus id/meta,
  the same size trialfhir's read returns) as a plain starlette Response;
- ``POST /r`` reads the request body and answers 201 with it.

Run: ``python -m bench.baseline_app --port 8001``.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request
from starlette.responses import Response

from bench.payload import stored_form

MEDIA_TYPE = "application/fhir+json; charset=utf-8"

#: Same shape and size as what trialfhir answers for a read of a benchmark Observation.
BODY = stored_form(0)

app = FastAPI(title="trialfhir bench baseline")


@app.get("/r/{id}")
async def read(id: str) -> Response:
    return Response(BODY, media_type=MEDIA_TYPE)


@app.post("/r")
async def create(request: Request) -> Response:
    body = await request.body()
    return Response(body, status_code=201, media_type=MEDIA_TYPE)


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    # The same options as ``service.cli.cmd_serve``.
    uvicorn.run(
        "bench.baseline_app:app",
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
