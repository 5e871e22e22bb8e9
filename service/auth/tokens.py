"""Access tokens: short-lived opaque bearer tokens bound to a client, its scopes and studies.

SMART App Launch v2, backend-services.html, "Issuing an access token": the response holds
``access_token``, ``token_type`` ``bearer``, ``expires_in`` (this server: at most the
configured lifetime, 300 s by default) and the granted ``scope``. The token is random
(256 bits); only its SHA-256 is stored, with the grant, so every worker process can verify
it and a disabled client's tokens stop working. Verified grants are cached in-process
until they expire.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from service.auth.scopes import ScopeSet
from service.db.schema import auth_client, auth_token

_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid access token allows."""

    client_id: str
    scopes: ScopeSet
    studies: frozenset[str] | None
    expires_us: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now_us() -> int:
    return time.time_ns() // 1000


class TokenStore:
    """Issue and verify access tokens for one database."""

    def __init__(self, engine: Engine, lifetime_seconds: int = 300) -> None:
        self.engine = engine
        self.lifetime_seconds = max(1, lifetime_seconds)
        self._cache: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def issue(self, client_id: str, scopes: ScopeSet, studies: frozenset[str] | None) -> tuple[str, Grant]:
        token = "tf." + secrets.token_urlsafe(32)
        now = _now_us()
        grant = Grant(client_id, scopes, studies, now + self.lifetime_seconds * 1_000_000)
        with self.engine.begin() as conn:
            conn.execute(delete(auth_token).where(auth_token.c.expires_us < now))
            conn.execute(
                insert(auth_token).values(
                    token_hash=_digest(token),
                    client_id=client_id,
                    scopes=scopes.text,
                    studies=json.dumps(sorted(studies)) if studies is not None else None,
                    expires_us=grant.expires_us,
                )
            )
        return token, grant

    def cached(self, token: str) -> Grant | None:
        """The grant of a token verified before and not expired (no database access)."""
        with self._lock:
            grant = self._cache.get(_digest(token))
        return grant if grant is not None and grant.expires_us > _now_us() else None

    def verify(self, token: str) -> Grant | None:
        """The grant of a valid, unexpired token of an active client; None otherwise."""
        digest = _digest(token)
        now = _now_us()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_us > now:
                return cached
            with self._lock:
                self._cache.pop(digest, None)
            return None
        t = auth_token.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.client_id, t.scopes, t.studies, t.expires_us)
                .join(auth_client, auth_client.c.client_id == t.client_id)
                .where(t.token_hash == digest, t.expires_us > now, auth_client.c.active == True)  # noqa: E712
            ).first()
        if row is None:
            return None
        grant = Grant(row.client_id, ScopeSet.parse(row.scopes), frozenset(json.loads(row.studies)) if row.studies is not None else None, row.expires_us)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {k: g for k, g in self._cache.items() if g.expires_us > now}
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
            self._cache[digest] = grant
        return grant


__all__ = ["Grant", "TokenStore"]
