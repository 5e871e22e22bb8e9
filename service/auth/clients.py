"""Registered Backend Services clients (``trialfhir clients add``).

SMART App Launch v2, Backend Services, "Registering a client": the server assigns the
``client_id``; the client supplies its public keys (a JWKS file, stored inline, or a JWKS
URL fetched when needed). trialfhir also records the scopes the client may be granted
(the ceiling for every token request) and the studies it is bound to (contract §1:
``--study STUDY_ID``; none = every study).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from service.auth.jwks import JwksError, validate_jwks
from service.auth.scopes import Scope, ScopeError, parse_scopes
from service.db.schema import auth_client


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    scopes: tuple[Scope, ...]
    studies: frozenset[str] | None
    active: bool

    @property
    def scope_text(self) -> str:
        return " ".join(s.text for s in self.scopes)


class RegistrationError(ValueError):
    """The registration cannot be stored; the message says what to fix."""


def _row_to_client(row: Any) -> Client:
    studies = json.loads(row.studies) if row.studies is not None else None
    return Client(
        client_id=row.client_id,
        name=row.name,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        scopes=parse_scopes(row.scopes),
        studies=frozenset(studies) if studies is not None else None,
        active=bool(row.active),
    )


def add_client(
    engine: Engine,
    name: str,
    *,
    scopes: str,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    studies: list[str] | None = None,
) -> Client:
    """Register a client and return it (with its new ``client_id``)."""
    if not name.strip():
        raise RegistrationError("The client needs a name.")
    if (jwks is None) == (jwks_url is None):
        raise RegistrationError("Give exactly one of --jwks-file or --jwks-url.")
    try:
        parsed = parse_scopes(scopes)
    except ScopeError as exc:
        raise RegistrationError(str(exc)) from None
    if jwks is not None:
        try:
            validate_jwks(jwks)
        except JwksError as exc:
            raise RegistrationError(str(exc)) from None
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise RegistrationError("--jwks-url must be an http(s) URL.")
    study_list = sorted({s.strip() for s in studies or [] if s.strip()}) if studies else None
    client_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            insert(auth_client).values(
                client_id=client_id,
                name=name.strip(),
                jwks=json.dumps(jwks) if jwks is not None else None,
                jwks_url=jwks_url,
                scopes=" ".join(s.text for s in parsed),
                studies=json.dumps(study_list) if study_list is not None else None,
                created_us=time.time_ns() // 1000,
                active=True,
            )
        )
    found = get_client(engine, client_id)
    assert found is not None
    return found


def get_client(engine: Engine, client_id: str) -> Client | None:
    with engine.connect() as conn:
        row = conn.execute(select(auth_client).where(auth_client.c.client_id == client_id)).first()
    return _row_to_client(row) if row is not None else None


def list_clients(engine: Engine) -> list[Client]:
    with engine.connect() as conn:
        rows = conn.execute(select(auth_client).order_by(auth_client.c.name, auth_client.c.client_id)).all()
    return [_row_to_client(r) for r in rows]


def set_active(engine: Engine, client_id: str, active: bool) -> bool:
    """Enable or disable a client; False when there is no such client."""
    with engine.begin() as conn:
        done = conn.execute(update(auth_client).where(auth_client.c.client_id == client_id).values(active=active)).rowcount
    return bool(done)


__all__ = ["Client", "RegistrationError", "add_client", "get_client", "list_clients", "set_active"]
