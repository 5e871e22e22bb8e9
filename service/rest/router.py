"""HTTP routes of the FHIR RESTful API under ``/fhir`` — every interaction in one file.

https://hl7.org/fhir/R4/http.html. Each route parses HTTP (headers, body, Prefer,
conditional headers), calls :class:`service.rest.service.FhirStore` in a worker thread
(database work never blocks the event loop) and turns the result into a response with
ETag, Last-Modified and Location. Errors are raised as ``FhirError`` and rendered as
OperationOutcome by :mod:`service.errors`.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from service.context import RequestContext, request_context
from service.fhir import jsonio
from service.fhir.http import (
    FhirResponse,
    Prefer,
    check_content_type,
    etag,
    http_date,
    negotiate,
    parse_etag,
    parse_http_date,
    pretty_bytes,
)
from service.fhir.outcome import error, info
from service.rest.history import history_bundle
from service.rest.service import FhirStore, WriteResult, body_or_error, check_type, now_us
from service.search.service import SearchRequest, run_search
from service.storage.repository import StoredVersion

FHIR_JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/fhir+json": {}}, "description": "The resource or Bundle"},
    400: {"content": {"application/fhir+json": {}}, "description": "OperationOutcome: invalid request"},
    404: {"content": {"application/fhir+json": {}}, "description": "OperationOutcome: not found"},
}


async def check_format(request: Request) -> None:
    """Dependency of every FHIR route: 406 unless the client can take FHIR JSON."""
    negotiate(request.headers.get("accept"), request.query_params.get("_format"))


router = APIRouter(prefix="/fhir", tags=["FHIR REST"], dependencies=[Depends(check_format)], responses=FHIR_JSON_RESPONSES)


def _store(request: Request) -> FhirStore:
    return request.app.state.store


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _filter_params(request: Request) -> list[tuple[str, str]]:
    """Query parameters minus the ones that shape the response (_format, _pretty)."""
    return [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]


async def read_body(request: Request) -> bytes:
    """The request body, or 413 as soon as it exceeds the configured limit."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise error(413, "too-costly", f"The body is {declared} bytes; this server accepts at most {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise error(413, "too-costly", f"The body exceeds {limit} bytes, the most this server accepts.")
        chunks.append(chunk)
    return b"".join(chunks)


def _version_headers(ctx: RequestContext, v: StoredVersion) -> dict[str, str]:
    return {
        "ETag": etag(v.version_id),
        "Last-Modified": http_date(v.last_updated_us),
        "Location": f"{ctx.base_url}/{v.resource_type}/{v.id}/_history/{v.version_id}",
    }


def _resource_response(request: Request, v: StoredVersion, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = v.content or b""
    if _pretty(request):
        body = pretty_bytes(body)
    hdrs = {"ETag": etag(v.version_id), "Last-Modified": http_date(v.last_updated_us)}
    hdrs.update(headers or {})
    return FhirResponse(body, status_code=status, headers=hdrs)


def _write_response(request: Request, ctx: RequestContext, result: WriteResult) -> Response:
    prefer = Prefer.parse(request.headers.get("prefer"))
    v = result.version
    headers = _version_headers(ctx, v) if v is not None and not v.deleted else {}
    if v is not None and v.deleted:
        headers = {"ETag": etag(v.version_id)}
    if result.status == 204:
        if prefer.return_ == "OperationOutcome":
            return FhirResponse(jsonio.dumps(info(result.message or "Deleted.")), status_code=200, headers=headers)
        return Response(status_code=204, headers=headers)
    if prefer.return_ == "minimal":
        return Response(status_code=result.status, headers=headers)
    if prefer.return_ == "OperationOutcome":
        text = result.message or ("Created." if result.status == 201 else "Updated.")
        return FhirResponse(jsonio.dumps(info(text)), status_code=result.status, headers=headers)
    assert v is not None
    return _resource_response(request, v, result.status, headers)


def _bundle_response(request: Request, doc: dict) -> Response:
    return FhirResponse(jsonio.dumps(doc, pretty=_pretty(request)))


# --- whole-system --------------------------------------------------------------------------


async def _history(request: Request, ctx: RequestContext, path: str, resource_type: str | None, id: str | None) -> Response:
    settings = request.app.state.settings
    params = _filter_params(request)
    doc = await to_thread.run_sync(
        lambda: history_bundle(
            _store(request).engine,
            base_url=ctx.base_url,
            path=path,
            params=params,
            resource_type=resource_type,
            id=id,
            default_count=settings.default_page_size,
            max_count=settings.max_page_size,
            now_us=now_us(),
        )
    )
    return _bundle_response(request, doc)


@router.get("/_history", summary="System history")
async def system_history(request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """All versions of all resources, newest first, paged (https://hl7.org/fhir/R4/http.html#history)."""
    return await _history(request, ctx, "_history", None, None)


# --- type level ------------------------------------------------------------------------------


@router.get("/{resource_type}/_history", summary="Type history")
async def type_history(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """All versions of all resources of one type, newest first, paged."""
    check_type(resource_type)
    return await _history(request, ctx, f"{resource_type}/_history", resource_type, None)


async def _search(
    request: Request,
    ctx: RequestContext,
    resource_type: str,
    params: list[tuple[str, str]],
    compartment: tuple[str, str] | None = None,
) -> Response:
    check_type(resource_type)
    settings = request.app.state.settings
    prefer = Prefer.parse(request.headers.get("prefer"))
    search = SearchRequest(
        resource_type=resource_type,
        params=params,
        base_url=ctx.base_url,
        strict=prefer.handling == "strict",
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        now_us=now_us(),
        compartment=compartment,
    )
    doc = await to_thread.run_sync(lambda: run_search(_store(request).engine, search))
    return _bundle_response(request, doc)


@router.get("/{resource_type}", summary="Search")
async def search_type(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Search one resource type (https://hl7.org/fhir/R4/http.html#search)."""
    return await _search(request, ctx, resource_type, _filter_params(request))


@router.post("/{resource_type}/_search", summary="Search (POST form)")
async def search_type_post(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Search with the parameters in an ``application/x-www-form-urlencoded`` body (and the URL)."""
    from urllib.parse import parse_qsl

    body = await read_body(request)
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if body and ctype != "application/x-www-form-urlencoded":
        raise error(415, "not-supported", "POST _search takes an application/x-www-form-urlencoded body.")
    params = _filter_params(request) + parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return await _search(request, ctx, resource_type, params)


@router.post("/{resource_type}", status_code=201, summary="Create or conditional create")
async def create(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Create (https://hl7.org/fhir/R4/http.html#create). Conditional create with an
    ``If-None-Exist`` header or, as fhirpy sends it, the criteria in the query string."""
    check_type(resource_type)
    check_content_type(request.headers.get("content-type"))
    raw = await read_body(request)
    body = body_or_error(raw)
    criteria = request.headers.get("if-none-exist")
    query = [(k, v) for k, v in _filter_params(request)]
    if criteria is None and query:
        from urllib.parse import urlencode

        criteria = urlencode(query)
    result = await to_thread.run_sync(lambda: _store(request).create(resource_type, body, raw, if_none_exist=criteria))
    return _write_response(request, ctx, result)


@router.put("/{resource_type}", summary="Conditional update")
async def conditional_update(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """``PUT [type]?criteria`` (https://hl7.org/fhir/R4/http.html#cond-update)."""
    check_type(resource_type)
    check_content_type(request.headers.get("content-type"))
    query = _query_string(request)
    raw = await read_body(request)
    body = body_or_error(raw)
    if_match = request.headers.get("if-match")
    result = await to_thread.run_sync(lambda: _store(request).conditional_update(resource_type, query, body, raw, if_match=if_match))
    return _write_response(request, ctx, result)


@router.patch("/{resource_type}", summary="Conditional patch")
async def conditional_patch(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """``PATCH [type]?criteria``: patch the one resource the criteria match."""
    check_type(resource_type)
    media = check_content_type(request.headers.get("content-type"), allow_patch=True)
    query = _query_string(request)
    doc = body_or_error(await read_body(request))
    if_match = request.headers.get("if-match")
    result = await to_thread.run_sync(lambda: _store(request).patch(resource_type, None, doc, media, query=query, if_match=if_match))
    return _write_response(request, ctx, result)


@router.delete("/{resource_type}", summary="Conditional delete")
async def conditional_delete(resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """``DELETE [type]?criteria`` (https://hl7.org/fhir/R4/http.html#cdelete)."""
    check_type(resource_type)
    query = _query_string(request)
    result = await to_thread.run_sync(lambda: _store(request).conditional_delete(resource_type, query))
    return _write_response(request, ctx, result)


def _query_string(request: Request) -> str:
    from urllib.parse import urlencode

    params = _filter_params(request)
    if not params:
        raise error(400, "invalid", "A conditional interaction needs search criteria in the URL, e.g. ?identifier=system|value.")
    return urlencode(params)


# --- instance level ---------------------------------------------------------------------------


@router.get("/{resource_type}/{id}/_history", summary="Instance history")
async def instance_history(resource_type: str, id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Every version of one resource, newest first."""
    check_type(resource_type)
    return await _history(request, ctx, f"{resource_type}/{id}/_history", resource_type, id)


@router.get("/{resource_type}/{id}/_history/{version_id}", summary="Version read (vread)")
async def vread(resource_type: str, id: str, version_id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """One version of a resource (https://hl7.org/fhir/R4/http.html#vread)."""
    v = await to_thread.run_sync(lambda: _store(request).vread(resource_type, id, version_id))
    return _resource_response(request, v)


@router.get("/{compartment_type}/{compartment_id}/{resource_type}", summary="Compartment search")
async def compartment_search(
    compartment_type: str, compartment_id: str, resource_type: str, request: Request, ctx: RequestContext = Depends(request_context)
) -> Response:
    """Search within a compartment, e.g. ``Patient/123/Observation``
    (https://hl7.org/fhir/R4/compartmentdefinition.html)."""
    check_type(compartment_type)
    from service.search.service import compartments

    if compartment_type not in compartments():
        raise error(404, "not-found", f"{compartment_type} is not a compartment type (Patient, Encounter, Practitioner, RelatedPerson, Device).")
    return await _search(request, ctx, resource_type, _filter_params(request), (compartment_type, compartment_id))


@router.get("/{resource_type}/{id}", summary="Read")
async def read(resource_type: str, id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """The current version (https://hl7.org/fhir/R4/http.html#read); 304 when the
    client's If-None-Match / If-Modified-Since already has it."""
    v = await to_thread.run_sync(lambda: _store(request).read(resource_type, id))
    inm = request.headers.get("if-none-match")
    if inm is not None:
        if any(parse_etag(tag) == v.version_id for tag in inm.split(",")) or inm.strip() == "*":
            return Response(status_code=304, headers={"ETag": etag(v.version_id)})
    else:
        ims = request.headers.get("if-modified-since")
        since = parse_http_date(ims) if ims else None
        if since is not None and v.last_updated_us // 1_000_000 * 1_000_000 <= since:
            return Response(status_code=304, headers={"ETag": etag(v.version_id)})
    return _resource_response(request, v)


@router.put("/{resource_type}/{id}", summary="Update (or create with this id)")
async def update(resource_type: str, id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Update (https://hl7.org/fhir/R4/http.html#update); creates the resource when the
    id is new (201). ``If-Match`` guards against lost updates (412)."""
    check_type(resource_type)
    check_content_type(request.headers.get("content-type"))
    raw = await read_body(request)
    body = body_or_error(raw)
    if_match = request.headers.get("if-match")
    if_none_match = request.headers.get("if-none-match")
    result = await to_thread.run_sync(
        lambda: _store(request).update(resource_type, id, body, raw, if_match=if_match, if_none_match=if_none_match)
    )
    return _write_response(request, ctx, result)


@router.patch("/{resource_type}/{id}", summary="Patch")
async def patch(resource_type: str, id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """JSON Patch or JSON merge patch (https://hl7.org/fhir/R4/http.html#patch)."""
    check_type(resource_type)
    media = check_content_type(request.headers.get("content-type"), allow_patch=True)
    doc = body_or_error(await read_body(request))
    if_match = request.headers.get("if-match")
    result = await to_thread.run_sync(lambda: _store(request).patch(resource_type, id, doc, media, if_match=if_match))
    return _write_response(request, ctx, result)


@router.delete("/{resource_type}/{id}", summary="Delete")
async def delete(resource_type: str, id: str, request: Request, ctx: RequestContext = Depends(request_context)) -> Response:
    """Delete (https://hl7.org/fhir/R4/http.html#delete): a new, deleted version."""
    if_match = request.headers.get("if-match")
    result = await to_thread.run_sync(lambda: _store(request).delete(resource_type, id, if_match=if_match))
    return _write_response(request, ctx, result)


# --- the hot paths, tried first ---------------------------------------------------------------


class _FhirType(Convertor[str]):
    """A path segment that can be a resource type: ``metadata``, ``$export``, ``_history``
    and ``.well-known`` cannot."""

    regex = "[A-Z][A-Za-z]{1,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _FhirId(_FhirType):
    """A path segment that can be a resource id (https://hl7.org/fhir/R4/datatypes.html#id):
    ``$everything``, ``$export`` and ``_history`` cannot."""

    regex = r"[A-Za-z0-9\-\.]{1,64}"


register_url_convertor("fhirtype", _FhirType())
register_url_convertor("fhirid", _FhirId())

#: Read, search and create once more, with typed path segments that no operation or
#: literal route can match, so the app tries them before its ~70 other routes (route
#: matching was a quarter of a read's CPU). Anything they do not match (an invalid id, an
#: operation) goes on to the routes above, which also answer the errors.
hot_router = APIRouter(prefix="/fhir", dependencies=[Depends(check_format)], include_in_schema=False)
hot_router.add_api_route("/{resource_type:fhirtype}/{id:fhirid}", read, methods=["GET"], include_in_schema=False)
hot_router.add_api_route("/{resource_type:fhirtype}", search_type, methods=["GET"], include_in_schema=False)
hot_router.add_api_route("/{resource_type:fhirtype}", create, methods=["POST"], status_code=201, include_in_schema=False)
