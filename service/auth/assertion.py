"""Client authentication with a signed JWT (``private_key_jwt``), SMART Backend Services.

SMART App Launch v2, backend-services.html, "Authenticating to the token endpoint" and
"Protocol details" (RFC 7523 §3): the client posts ``client_assertion_type`` =
``urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and a ``client_assertion``
signed with one of its registered keys, whose

- header has ``alg`` RS384 or ES384 (``none``, HMAC and anything else are refused: an
  HS256 token "signed" with the public key is never verified), ``kid`` naming the key,
  ``typ`` ``JWT`` when present, and no ``jku`` other than the registered JWKS URL;
- claims have ``iss`` = ``sub`` = the client_id, ``aud`` = this token endpoint's URL,
  ``exp`` in the future and no more than five minutes ahead, and a ``jti`` never used
  before by this client (kept until the assertion expires, so a replay is refused).

Every failure is an ``invalid_client`` error whose description says what to fix.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import jwt
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from service.auth.clients import Client, get_client
from service.auth.jwks import ALGORITHMS, JwksError, fetch_jwks, find_key
from service.db.schema import auth_jti

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME_SECONDS = 300
LEEWAY_SECONDS = 30


@dataclass
class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 §5.2): ``error`` code, description, HTTP status."""

    error: str
    description: str
    status: int = 400
    client_id: str | None = None


def _invalid(text: str, client_id: str | None = None) -> OAuthError:
    return OAuthError("invalid_client", text, 401, client_id)


def _key_for(client: Client, kid: str, alg: str) -> object:
    try:
        if client.jwks is not None:
            key = find_key(client.jwks, kid, alg)
        else:
            assert client.jwks_url is not None
            key = find_key(fetch_jwks(client.jwks_url), kid, alg)
            if key is None:  # the client may have rotated its keys: fetch again once
                key = find_key(fetch_jwks(client.jwks_url, force=True), kid, alg)
    except JwksError as exc:
        raise _invalid(f"The client's JWKS could not be used: {exc}", client.client_id) from None
    if key is None:
        raise _invalid(f"No {alg} key with kid '{kid}' is registered for this client; register the key or sign with a registered one.", client.client_id)
    return key


def verify_client_assertion(engine: Engine, assertion: str, token_url: str) -> Client:
    """The client the assertion authenticates, or :class:`OAuthError` (see module docstring)."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _invalid("client_assertion is not a JWT (header.payload.signature, base64url).") from None
    alg = header.get("alg")
    claimed = unverified.get("iss") if isinstance(unverified.get("iss"), str) else None
    if alg not in ALGORITHMS:
        raise _invalid(f"The assertion's alg is {alg!r}; sign it with RS384 or ES384.", claimed)
    if header.get("typ") not in (None, "JWT"):
        raise _invalid(f"The assertion's typ is {header.get('typ')!r}; use 'JWT'.", claimed)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid("The assertion header has no kid; name the registered key that signed it.", claimed)
    if claimed is None or unverified.get("sub") != claimed:
        raise _invalid("The assertion needs iss and sub, both equal to your client_id.", claimed)
    client = get_client(engine, claimed)
    if client is None:
        raise _invalid(f"No client '{claimed}' is registered here (trialfhir clients add).", None)
    if not client.active:
        raise _invalid(f"Client '{claimed}' is disabled.", claimed)
    jku = header.get("jku")
    if jku is not None and jku != client.jwks_url:
        raise _invalid("The assertion's jku is not the JWKS URL registered for this client.", claimed)
    key = _key_for(client, kid, alg)
    try:
        claims = jwt.decode(
            assertion,
            key=key,  # type: ignore[arg-type]
            algorithms=[alg],
            audience=token_url,
            issuer=client.client_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _invalid("The assertion has expired (exp is in the past); sign a new one for each token request.", claimed) from None
    except jwt.InvalidAudienceError:
        raise _invalid(f"The assertion's aud must be this token endpoint's URL: {token_url}", claimed) from None
    except jwt.InvalidIssuerError:
        raise _invalid("The assertion's iss must be your client_id.", claimed) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"The assertion lacks the '{exc.claim}' claim (iss, sub, aud, exp and jti are required).", claimed) from None
    except jwt.InvalidSignatureError:
        raise _invalid(f"The assertion's signature does not verify with the registered key '{kid}'.", claimed) from None
    except jwt.PyJWTError as exc:
        raise _invalid(f"The assertion is not valid: {type(exc).__name__}.", claimed) from None
    now = time.time()
    exp = claims["exp"]
    if not isinstance(exp, (int, float)) or exp > now + MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise _invalid(f"The assertion's exp is more than {MAX_LIFETIME_SECONDS // 60} minutes ahead; SMART Backend Services allows at most 5 minutes.", claimed)
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise _invalid("The assertion's jti must be a non-empty string, unique per assertion.", claimed)
    _remember_jti(engine, client.client_id, jti, int((exp + LEEWAY_SECONDS) * 1_000_000), int(now * 1_000_000))
    return client


def _remember_jti(engine: Engine, client_id: str, jti: str, expires_us: int, now_us: int) -> None:
    """Record the jti; an earlier identical one (not yet expired) means a replay."""
    digest = hashlib.sha256(jti.encode("utf-8")).hexdigest()
    try:
        with engine.begin() as conn:
            conn.execute(delete(auth_jti).where(auth_jti.c.expires_us < now_us))
            conn.execute(insert(auth_jti).values(client_id=client_id, jti_hash=digest, expires_us=expires_us))
    except IntegrityError:
        raise _invalid("This assertion's jti was already used; sign a new assertion with a fresh jti for every token request.", client_id) from None


__all__ = ["ASSERTION_TYPE", "OAuthError", "verify_client_assertion"]
