"""``POST /fhir/auth/token`` and ``GET /fhir/.well-known/smart-configuration``.

SMART App Launch v2: "Conformance" (conformance.html — the well-known document:
``token_endpoint``, ``token_endpoint_auth_methods_supported`` ``private_key_jwt``, the
signing algorithms, ``grant_types_supported`` ``client_credentials``, the scopes and the
capabilities ``client-confidential-asymmetric``, ``permission-v1``, ``permission-v2``) and
"Backend Services" (backend-services.html — the token request: ``grant_type`` =
``client_credentials``, ``scope``, ``client_assertion_type``, ``client_assertion``; the
response; errors per RFC 6749 §5.2 as JSON ``{"error", "error_description"}``).

Both are public: the well-known document tells a client how to get a token, and the token
endpoint authenticates the client by its assertion.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from service.auth import audit
from service.auth.assertion import ASSERTION_TYPE, OAuthError, verify_client_assertion
from service.auth.clients import Client
from service.auth.jwks import ALGORITHMS
from service.auth.scopes import ScopeError, ScopeSet, parse_scopes
from service.context import fhir_base

router = APIRouter(tags=["Authorization (SMART Backend Services)"])

TOKEN_PATH = "/auth/token"
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_url(request: Request) -> str:
    """The token endpoint's absolute URL: the ``aud`` every client assertion must carry."""
    return fhir_base(request, request.app.state.settings.base_url) + TOKEN_PATH


def smart_configuration(token_endpoint: str) -> dict[str, object]:
    return {
        "token_endpoint": token_endpoint,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.rs", "system/*.cruds", "system/*.read", "system/*.write", "system/AuditEvent.rs"],
        "response_types_supported": ["token"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration (how to get an access token)")
async def well_known(request: Request) -> JSONResponse:
    """SMART App Launch v2 discovery document for Backend Services clients."""
    return JSONResponse(smart_configuration(token_url(request)), headers={"Cache-Control": "max-age=300"})


def _oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="trialfhir", error="{exc.error}"'
    return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status, headers=headers)


def _granted(client: Client, requested: str) -> ScopeSet:
    """The requested scopes, each of which the client's registration must allow."""
    try:
        asked = parse_scopes(requested)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc), 400, client.client_id) from None
    refused = [s.text for s in asked if not any(s.within(allowed) for allowed in client.scopes)]
    if refused:
        raise OAuthError(
            "invalid_scope",
            f"Client {client.client_id} is not registered for {' '.join(refused)}; it may ask for: {client.scope_text}.",
            400,
            client.client_id,
        )
    return ScopeSet(asked)


@router.post("/fhir" + TOKEN_PATH, summary="Token endpoint (client_credentials + private_key_jwt)")
async def token(request: Request) -> Response:
    """Exchange a signed client assertion for a short-lived bearer access token."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return _oauth_error(OAuthError("invalid_request", "Send the token request as application/x-www-form-urlencoded."))
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TOKEN_REQUEST_BYTES:
            return _oauth_error(OAuthError("invalid_request", f"The token request is larger than {MAX_TOKEN_REQUEST_BYTES} bytes."))
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        return _oauth_error(OAuthError("invalid_request", "The token request is not UTF-8."))
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(OAuthError("unsupported_grant_type", "Use grant_type=client_credentials (SMART Backend Services)."))
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        return _oauth_error(OAuthError("invalid_request", f"Use client_assertion_type={ASSERTION_TYPE} with a signed client_assertion."))
    assertion = form.get("client_assertion") or ""
    if not assertion:
        return _oauth_error(OAuthError("invalid_request", "client_assertion is missing."))
    if not form.get("scope", "").strip():
        return _oauth_error(OAuthError("invalid_scope", "scope is missing; ask for e.g. system/*.rs."))
    app = request.app
    url = token_url(request)

    def work() -> dict[str, object]:
        client = verify_client_assertion(app.state.store.engine, assertion, url)
        trail = audit.current_trail()
        if trail is not None:
            trail.client_id = client.client_id
        scopes = _granted(client, form["scope"])
        access_token, grant = app.state.tokens.issue(client.client_id, scopes, client.studies)
        return {"access_token": access_token, "token_type": "bearer", "expires_in": app.state.tokens.lifetime_seconds, "scope": scopes.text}

    try:
        answer = await to_thread.run_sync(work)
    except OAuthError as exc:
        trail = audit.current_trail()
        if trail is not None and exc.client_id:
            trail.client_id = exc.client_id
        return _oauth_error(exc)
    return JSONResponse(answer, headers=_NO_STORE)


__all__ = ["router", "smart_configuration", "token_url", "TOKEN_PATH"]
