"""Client JSON Web Key Sets: validation at registration, key lookup at the token endpoint.

SMART App Launch v2, Backend Services (backend-services.html, "Registering a client"):
a client registers its public keys as a JWKS, inline or at a ``jwks_uri`` the server
fetches; each assertion's ``kid`` header picks the key. This server accepts the two
algorithms the spec requires servers to support, RS384 and ES384 (RSA ≥ 2048 bits, EC
P-384), and refuses a JWKS that carries private key material.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jwt

ALGORITHMS = ("RS384", "ES384")
_KTY_FOR_ALG = {"RS384": "RSA", "ES384": "EC"}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
MAX_JWKS_BYTES = 64 * 1024
JWKS_URL_TTL_SECONDS = 300.0


class JwksError(ValueError):
    """A JWKS this server cannot use; the message says what to fix."""


def _usable(jwk: dict[str, Any]) -> list[str]:
    """The accepted algorithms this one key can verify (checked by loading it)."""
    out = []
    for alg in ALGORITHMS:
        if jwk.get("kty") != _KTY_FOR_ALG[alg] or jwk.get("alg") not in (None, alg):
            continue
        if alg == "ES384" and jwk.get("crv") != "P-384":
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if alg == "RS384" and getattr(key, "key_size", 0) < 2048:
            continue
        out.append(alg)
    return out


def validate_jwks(doc: Any) -> dict[str, Any]:
    """The JWKS, if it has at least one public RS384/ES384 key with a ``kid``; else :class:`JwksError`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise JwksError('A JWKS is a JSON object {"keys": [...]} with at least one key.')
    usable = 0
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict):
            raise JwksError(f"keys[{i}] is not a JSON object.")
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            raise JwksError(f"keys[{i}] contains private key material; register the public keys only.")
        if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            raise JwksError(f"keys[{i}] has no 'kid'; every key needs one (assertions name their key by kid).")
        if _usable(jwk):
            usable += 1
    if not usable:
        raise JwksError("The JWKS has no key usable with RS384 (RSA, 2048 bits or more) or ES384 (EC P-384).")
    return doc


def load_jwks_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return validate_jwks(json.loads(text))
    except json.JSONDecodeError as exc:
        raise JwksError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}.") from None


_url_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_url_lock = threading.Lock()


def fetch_jwks(url: str, *, force: bool = False) -> dict[str, Any]:
    """The JWKS at ``url`` (cached for five minutes; ``force`` refetches, e.g. for a new kid)."""
    now = time.monotonic()
    with _url_lock:
        cached = _url_cache.get(url)
    if cached is not None and not force and now - cached[0] < JWKS_URL_TTL_SECONDS:
        return cached[1]
    import httpx

    try:
        with httpx.Client(timeout=5.0, follow_redirects=False) as client, client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise JwksError(f"GET {url} answered {response.status_code}.")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError(f"The JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes.")
    except httpx.HTTPError as exc:
        raise JwksError(f"The JWKS at {url} could not be fetched ({type(exc).__name__}).") from None
    try:
        doc = validate_jwks(json.loads(body))
    except json.JSONDecodeError:
        raise JwksError(f"The JWKS at {url} is not JSON.") from None
    with _url_lock:
        _url_cache[url] = (now, doc)
    return doc


def find_key(jwks: dict[str, Any], kid: str, alg: str) -> Any | None:
    """The verification key with ``kid`` that fits ``alg``, or None."""
    for jwk in jwks.get("keys") or []:
        if isinstance(jwk, dict) and jwk.get("kid") == kid and alg in _usable(jwk):
            return jwt.PyJWK(jwk, algorithm=alg).key
    return None


__all__ = ["ALGORITHMS", "JwksError", "fetch_jwks", "find_key", "load_jwks_file", "validate_jwks"]
