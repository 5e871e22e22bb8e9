"""Authorization with SMART Backend Services, scopes, per-study access and the loopback rule.

Everything here runs with ``TRIALFHIR_AUTH=smart`` (the suite's other apps run with it
off): real RS384 and ES384 key pairs generated per session, JWKS files, clients registered
through ``trialfhir clients add``, signed client assertions exchanged at the token
endpoint, and the bearer tokens used against the FHIR API. Both backends.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import ROOT

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
TOKEN_URL = "http://testserver/fhir/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# --- keys, clients, tokens ---------------------------------------------------------------------


@dataclass
class Key:
    alg: str
    kid: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg == "RS384" else jwt.algorithms.ECAlgorithm
        jwk = algo.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


@pytest.fixture(scope="session")
def keys() -> dict[str, Key]:
    return {
        "RS384": Key("RS384", "rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ES384": Key("ES384", "ec-1", ec.generate_private_key(ec.SECP384R1())),
    }


def assertion(client_id: str, key: Key, **changes: Any) -> str:
    """A client assertion as SMART Backend Services wants it; ``changes`` break it on purpose."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 240, "jti": uuid.uuid4().hex}
    headers = {"kid": key.kid, "typ": "JWT"}
    for name, value in changes.items():
        if name.startswith("h_"):
            headers[name[2:]] = value
        elif value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, key.private, algorithm=key.alg, headers=headers)


def token_request(client: Any, signed: str, scope: str = "system/*.rs") -> Any:
    return client.post(
        "/fhir/auth/token",
        data={"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed},
    )


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TRIALFHIR_DATABASE_URL=database_url, TRIALFHIR_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@dataclass
class Registered:
    client_id: str
    key: Key


class Auth:
    """The auth-on app of one backend, its clients and a token cache."""

    def __init__(self, app: Any, database_url: str, jwks_file: Path, keys: dict[str, Key]) -> None:
        self.app = app
        self.database_url = database_url
        self.jwks_file = jwks_file
        self.keys = keys
        self.clients: dict[str, Registered] = {}

    def register(self, name: str, scope: str, studies: list[str] | None = None, key: str = "RS384") -> Registered:
        from service.cli import main

        args = ["clients", "add", name, "--jwks-file", str(self.jwks_file), "--scope", scope]
        if studies:
            args += ["--study", *studies]
        old = os.environ.get("TRIALFHIR_DATABASE_URL")
        os.environ["TRIALFHIR_DATABASE_URL"] = self.database_url
        import contextlib
        import io

        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                assert main(args) == 0
        finally:
            if old is None:
                os.environ.pop("TRIALFHIR_DATABASE_URL")
            else:
                os.environ["TRIALFHIR_DATABASE_URL"] = old
        reg = Registered(out.getvalue().strip(), self.keys[key])
        self.clients[name] = reg
        return reg

    def token(self, client: Any, name: str, scope: str) -> dict[str, str]:
        reg = self.clients[name]
        r = token_request(client, assertion(reg.client_id, reg.key), scope)
        assert r.status_code == 200, r.text
        return {"authorization": f"Bearer {r.json()['access_token']}", **FHIR}


@pytest.fixture(scope="module")
def auth(backend: str, databases: Any, keys: dict[str, Key], tmp_path_factory: pytest.TempPathFactory) -> Auth:
    import logging

    from service.app import create_app
    from service.config import Settings

    url = databases.url(backend, "auth")
    export_dir = tmp_path_factory.mktemp("auth-exports")
    app = create_app(
        Settings.from_env(
            database_url=url,
            auth="smart",
            extra={"TRIALFHIR_EXPORT_DIR": str(export_dir), "TRIALFHIR_EXPORT_POLL_SECONDS": "0.05"},
        )
    )
    logging.getLogger("trialfhir").setLevel(logging.WARNING)
    jwks_file = tmp_path_factory.mktemp("jwks") / "client.jwks.json"
    jwks_file.write_text(json.dumps({"keys": [k.public_jwk() for k in keys.values()]}))
    a = Auth(app, url, jwks_file, keys)
    a.register("admin", "system/*.cruds system/AuditEvent.rs")
    a.register("registry", "system/*.rs")
    a.register("narrow", "system/Observation.r system/Patient.rs system/Observation.c", key="ES384")
    a.register("feed-a", "system/*.cruds", studies=["study-a"])
    a.register("reader-a", "system/*.rs", studies=["study-a"])
    return a


@pytest.fixture()
def client(auth: Auth) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(auth.app, base_url="http://testserver") as c:
        yield c


# --- the CLI and the start-up rule --------------------------------------------------------------


def test_clients_add_prints_the_client_id_and_refuses_bad_registrations(databases: Any, backend: str, keys: dict[str, Key], tmp_path: Path) -> None:
    url = databases.url(backend, "cli")
    jwks = tmp_path / "k.json"
    jwks.write_text(json.dumps({"keys": [keys["RS384"].public_jwk()]}))
    out = cli(url, "clients", "add", "hospital-a", "--jwks-file", str(jwks), "--scope", "system/Observation.cruds system/*.rs", "--study", "study-a")
    assert out.returncode == 0, out.stderr
    client_id = out.stdout.strip()
    uuid.UUID(client_id)  # one line: the client_id, nothing else
    listed = cli(url, "clients", "list")
    assert client_id in listed.stdout and "study-a" in listed.stdout
    # a JWKS with private key material, patient/ scopes, no usable key: refused with the reason
    private = tmp_path / "private.json"
    priv = keys["RS384"].public_jwk() | {"d": "AQAB"}
    private.write_text(json.dumps({"keys": [priv]}))
    bad = cli(url, "clients", "add", "x", "--jwks-file", str(private), "--scope", "system/*.rs")
    assert bad.returncode == 2 and "private key material" in bad.stderr
    bad = cli(url, "clients", "add", "x", "--jwks-file", str(jwks), "--scope", "patient/*.rs")
    assert bad.returncode == 2 and "system/ scopes only" in bad.stderr
    small = tmp_path / "small.json"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small.write_text(json.dumps({"keys": [jwt.algorithms.RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True) | {"kid": "weak"}]}))
    bad = cli(url, "clients", "add", "x", "--jwks-file", str(small), "--scope", "system/*.rs")
    assert bad.returncode == 2 and "no key usable" in bad.stderr


def test_auth_off_is_refused_on_a_non_loopback_bind(tmp_path: Path) -> None:
    env = dict(os.environ, TRIALFHIR_AUTH="off", TRIALFHIR_DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    out = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "TRIALFHIR_AUTH=off is allowed only on a loopback address" in out.stderr
    # the app refuses it too, for a server started some other way
    from service.app import create_app
    from service.config import Settings

    with pytest.raises(RuntimeError, match="loopback"):
        create_app(Settings.from_env(database_url=f"sqlite:///{tmp_path}/y.db", auth="off", bind_host="10.1.2.3"))
    create_app(Settings.from_env(database_url=f"sqlite:///{tmp_path}/z.db", auth="off", bind_host="::1"))


def test_serve_decides_the_auth_mode_per_contract() -> None:
    from argparse import Namespace

    from service.cli import _serve_auth

    saved = os.environ.pop("TRIALFHIR_AUTH", None)
    try:
        assert _serve_auth(Namespace(host="127.0.0.1", demo=False)) == "smart"  # on by default
        assert _serve_auth(Namespace(host="127.0.0.1", demo=True)) == "off"  # --demo implies off on loopback
        assert _serve_auth(Namespace(host="0.0.0.0", demo=True)) == "smart"  # … not elsewhere
        os.environ["TRIALFHIR_AUTH"] = "off"
        assert _serve_auth(Namespace(host="0.0.0.0", demo=False)) is None
    finally:
        os.environ.pop("TRIALFHIR_AUTH", None)
        if saved is not None:
            os.environ["TRIALFHIR_AUTH"] = saved


# --- discovery ------------------------------------------------------------------------------------


def test_smart_configuration_and_capability_statement_are_public(client: Any) -> None:
    conf = client.get("/fhir/.well-known/smart-configuration")
    assert conf.status_code == 200
    doc = conf.json()
    assert doc["token_endpoint"] == TOKEN_URL
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert "client-confidential-asymmetric" in doc["capabilities"] and doc["grant_types_supported"] == ["client_credentials"]
    cs = client.get("/fhir/metadata", headers={"accept": "application/fhir+json"})
    assert cs.status_code == 200
    security = cs.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris["extension"][0] == {"url": "token", "valueUri": TOKEN_URL}


# --- the token endpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_signed_assertion_gets_a_short_lived_bearer_token(auth: Auth, client: Any, alg: str) -> None:
    reg = auth.clients["admin"]
    r = token_request(client, assertion(reg.client_id, auth.keys[alg]), "system/Patient.rs system/Observation.read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs system/Observation.read"
    assert r.headers["cache-control"] == "no-store"
    read = client.get("/fhir/Patient?_count=1", headers={"authorization": f"Bearer {body['access_token']}", **FHIR})
    assert read.status_code == 200


def _broken_assertions(auth: Auth) -> dict[str, str]:
    reg = auth.clients["admin"]
    rsa_key, ec_key = auth.keys["RS384"], auth.keys["ES384"]
    now = int(time.time())
    public_pem = rsa_key.private.public_key().public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM,
        format=__import__("cryptography.hazmat.primitives.serialization", fromlist=["PublicFormat"]).PublicFormat.SubjectPublicKeyInfo,
    )
    claims = {"iss": reg.client_id, "sub": reg.client_id, "aud": TOKEN_URL, "exp": now + 120, "jti": uuid.uuid4().hex}

    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    good = assertion(reg.client_id, rsa_key)
    head, payload, sig = good.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_claims["sub"] = tampered_claims["iss"] = auth.clients["registry"].client_id
    import hmac
    import hashlib

    hs_head = b64({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid})
    hs_body = b64(claims)
    hs_sig = base64.urlsafe_b64encode(hmac.new(public_pem, f"{hs_head}.{hs_body}".encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return {
        "expired": assertion(reg.client_id, rsa_key, exp=now - 120),
        "exp more than 5 minutes ahead": assertion(reg.client_id, rsa_key, exp=now + 3600),
        "wrong aud": assertion(reg.client_id, rsa_key, aud="http://elsewhere.example/token"),
        "wrong iss": assertion(reg.client_id, rsa_key, iss=auth.clients["registry"].client_id),
        "unknown client": assertion("no-such-client", rsa_key),
        "no jti": assertion(reg.client_id, rsa_key, jti=None),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': rsa_key.kid})}.{b64(claims)}.",
        "HS256 with the public key as secret": f"{hs_head}.{hs_body}.{hs_sig}",
        "RS256 (not accepted)": jwt.encode(claims, rsa_key.private, algorithm="RS256", headers={"kid": rsa_key.kid}),
        "unknown kid": assertion(reg.client_id, rsa_key, h_kid="not-registered"),
        "ES384 key under the RSA kid": assertion(reg.client_id, Key("ES384", rsa_key.kid, ec_key.private)),
        "tampered payload": f"{head}.{b64(tampered_claims)}.{sig}",
        "key of another client pair": assertion(reg.client_id, Key("RS384", rsa_key.kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))),
    }


def test_every_broken_assertion_is_401_invalid_client(auth: Auth, client: Any) -> None:
    for what, signed in _broken_assertions(auth).items():
        r = token_request(client, signed)
        assert r.status_code == 401, (what, r.status_code, r.text)
        body = r.json()
        assert body["error"] == "invalid_client", what
        assert body["error_description"], what
        assert "access_token" not in body
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_replayed_assertion_is_refused(auth: Auth, client: Any) -> None:
    signed = assertion(auth.clients["registry"].client_id, auth.keys["ES384"])
    assert token_request(client, signed).status_code == 200
    again = token_request(client, signed)
    assert again.status_code == 401
    assert "jti was already used" in again.json()["error_description"]


def test_token_request_errors_name_the_fix(auth: Auth, client: Any) -> None:
    reg = auth.clients["registry"]
    beyond = token_request(client, assertion(reg.client_id, auth.keys["RS384"]), "system/Observation.cruds")
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_scope"
    assert "system/Observation.cruds" in beyond.json()["error_description"]
    wrong_grant = client.post("/fhir/auth/token", data={"grant_type": "password", "scope": "system/*.rs"})
    assert wrong_grant.status_code == 400 and wrong_grant.json()["error"] == "unsupported_grant_type"
    json_body = client.post("/fhir/auth/token", json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"


# --- bearer tokens on the API ----------------------------------------------------------------------


def test_requests_without_a_valid_token_are_401_with_a_bearer_challenge(client: Any) -> None:
    for method, path in [("GET", "/fhir/Patient"), ("GET", "/fhir/Patient/x"), ("POST", "/fhir"), ("GET", "/api/studies"), ("GET", "/fhir/$export")]:
        r = client.request(method, path, headers=FHIR)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"].startswith('Bearer realm="trialfhir"')
    bad = client.get("/fhir/Patient", headers={"authorization": "Bearer tf.not-a-token", **FHIR})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert bad.json()["resourceType"] == "OperationOutcome"
    basic = client.get("/fhir/Patient", headers={"authorization": "Basic YWRtaW46YWRtaW4=", **FHIR})
    assert basic.status_code == 401


def test_scopes_are_enforced_per_interaction_and_the_403_names_the_scope(auth: Auth, client: Any) -> None:
    admin = auth.token(client, "admin", "system/*.cruds")
    narrow = auth.token(client, "narrow", "system/Observation.r system/Patient.rs system/Observation.c")
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}}
    oid = client.post("/fhir/Observation", json=obs, headers=narrow)
    assert oid.status_code == 201, oid.text  # c granted
    oid = oid.json()["id"]
    assert client.get(f"/fhir/Observation/{oid}", headers=narrow).status_code == 200  # r
    assert client.get(f"/fhir/Patient?_id={pid}", headers=narrow).status_code == 200  # Patient.s
    cases = [
        (client.get("/fhir/Observation?status=final", headers=narrow), "system/Observation.s"),
        (client.put(f"/fhir/Observation/{oid}", json=obs | {"id": oid}, headers=narrow), "system/Observation.u"),
        (client.delete(f"/fhir/Observation/{oid}", headers=narrow), "system/Observation.d"),
        (client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=narrow), "system/Patient.c"),
        (client.get("/fhir/Condition/x", headers=narrow), "system/Condition.r"),
        (client.get("/fhir/Encounter/_history", headers=narrow), "system/Encounter.r"),
    ]
    for response, scope in cases:
        assert response.status_code == 403, (scope, response.status_code, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "forbidden"
        assert scope in outcome["issue"][0]["diagnostics"]
    # $everything returns only the types the token may read
    client.post("/fhir/Encounter", json={"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"}}, headers=admin)
    every = client.get(f"/fhir/Patient/{pid}/$everything", headers=narrow)
    assert every.status_code == 200
    assert sorted({e["resource"]["resourceType"] for e in every.json()["entry"]}) == ["Observation", "Patient"]
    # v1 spelling: .read allows read and search, not write
    v1 = auth.token(client, "registry", "system/Observation.read")
    assert client.get("/fhir/Observation?status=final", headers=v1).status_code == 200
    assert client.post("/fhir/Observation", json=obs, headers=v1).status_code == 403


def test_a_forbidden_transaction_entry_fails_the_whole_transaction_and_stores_nothing(auth: Auth, client: Any) -> None:
    narrow = auth.token(client, "narrow", "system/Observation.r system/Patient.rs system/Observation.c")
    marker = uuid.uuid4().hex
    entries = [
        {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": {"resourceType": "Observation", "status": "final", "code": {"text": marker}}, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/x"}, "code": {"text": marker}}, "request": {"method": "POST", "url": "Condition"}},
    ]
    tx = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=narrow)
    assert tx.status_code == 403
    assert "Bundle.entry[1]" in tx.json()["issue"][0]["diagnostics"] and "system/Condition.c" in tx.json()["issue"][0]["diagnostics"]
    admin = auth.token(client, "admin", "system/*.rs")
    found = client.get(f"/fhir/Observation?code:text={marker}&_summary=count", headers=admin).json()
    assert found["total"] == 0
    batch = client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=narrow)
    assert batch.status_code == 200
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403")
    assert client.get(f"/fhir/Observation?code:text={marker}&_summary=count", headers=admin).json()["total"] == 1


def test_includes_leave_out_types_the_token_cannot_read(auth: Auth, client: Any) -> None:
    admin = auth.token(client, "admin", "system/*.cruds")
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin).json()["id"]
    enc = client.post("/fhir/Encounter", json={"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{pid}"}}, headers=admin).json()["id"]
    client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "inc"}, "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"}}, headers=admin)
    reader = auth.token(client, "registry", "system/Observation.rs system/Patient.rs")
    doc = client.get(f"/fhir/Observation?subject=Patient/{pid}&_include=Observation:subject&_include=Observation:encounter", headers=reader).json()
    kinds = sorted(e["resource"]["resourceType"] for e in doc["entry"])
    assert kinds == ["Observation", "Patient"]  # the Encounter is not readable with these scopes
    rev = client.get(f"/fhir/Patient?_id={pid}&_revinclude=Encounter:subject&_revinclude=Observation:subject", headers=reader).json()
    assert sorted(e["resource"]["resourceType"] for e in rev["entry"]) == ["Observation", "Patient"]


# --- per-study access -------------------------------------------------------------------------------


def _study_bundle(study: str, patient: str, marker: str) -> dict[str, Any]:
    def put(resource: dict[str, Any]) -> dict[str, Any]:
        return {"resource": resource, "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            put({"resourceType": "PlanDefinition", "id": f"{study}-soa", "status": "active"}),
            put({"resourceType": "Group", "id": f"{study}-enrolled", "type": "person", "actual": True, "member": [{"entity": {"reference": f"Patient/{patient}"}}]}),
            put({"resourceType": "ResearchStudy", "id": study, "status": "active", "protocol": [{"reference": f"PlanDefinition/{study}-soa"}], "enrollment": [{"reference": f"Group/{study}-enrolled"}]}),
            put({"resourceType": "Patient", "id": patient, "identifier": [{"system": "urn:test", "value": marker + patient}]}),
            put({"resourceType": "ResearchSubject", "id": patient, "status": "on-study", "study": {"reference": f"ResearchStudy/{study}"}, "individual": {"reference": f"Patient/{patient}"}}),
            put({"resourceType": "Observation", "id": f"{patient}-crp", "status": "final", "code": {"text": marker}, "subject": {"reference": f"Patient/{patient}"}}),
        ],
    }


@pytest.fixture()
def two_studies(auth: Auth, client: Any) -> dict[str, str]:
    admin = auth.token(client, "admin", "system/*.cruds")
    marker = uuid.uuid4().hex[:10]
    for study, patient in (("study-a", f"pa-{marker}"), ("study-b", f"pb-{marker}")):
        r = client.post("/fhir", json=_study_bundle(study, patient, marker), headers=admin)
        assert r.status_code == 200, r.text
    return {"marker": marker, "a": f"pa-{marker}", "b": f"pb-{marker}"}


def test_a_study_bound_client_reads_and_searches_only_its_studies(auth: Auth, client: Any, two_studies: dict[str, str]) -> None:
    a, b, marker = two_studies["a"], two_studies["b"], two_studies["marker"]
    reader = auth.token(client, "reader-a", "system/*.rs")
    assert client.get(f"/fhir/Patient/{a}", headers=reader).status_code == 200
    assert client.get(f"/fhir/Observation/{a}-crp", headers=reader).status_code == 200
    for path in (f"/fhir/Patient/{b}", f"/fhir/Observation/{b}-crp", "/fhir/ResearchStudy/study-b", f"/fhir/Patient/{b}/_history", f"/fhir/Observation/{b}-crp/_history/1"):
        r = client.get(path, headers=reader)
        assert r.status_code == 404, (path, r.status_code)
        assert "does not exist" in r.json()["issue"][0]["diagnostics"]  # no hint that it exists elsewhere
    for path in ("/fhir/ResearchStudy/study-a", "/fhir/PlanDefinition/study-a-soa", "/fhir/Group/study-a-enrolled"):
        assert client.get(path, headers=reader).status_code == 200, path
    found = client.get(f"/fhir/Observation?code:text={marker}", headers=reader).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [f"{a}-crp"]
    assert client.get(f"/fhir/Patient?identifier=urn:test|{marker}{b}&_summary=count", headers=reader).json()["total"] == 0
    inc = client.get(f"/fhir/ResearchSubject?_id={a},{b}&_include=ResearchSubject:individual&_include=ResearchSubject:study", headers=reader).json()
    assert sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in inc["entry"]) == sorted([f"ResearchSubject/{a}", f"Patient/{a}", "ResearchStudy/study-a"])
    rev = client.get(f"/fhir/Patient?identifier=urn:test|&_revinclude=Observation:subject&_count=200", headers=reader).json()
    ids = {e["resource"]["id"] for e in rev.get("entry", [])}
    assert a in ids and f"{a}-crp" in ids and b not in ids and f"{b}-crp" not in ids
    every = client.get(f"/fhir/Patient/{b}/$everything", headers=reader)
    assert every.status_code == 404
    mine = client.get("/fhir/ResearchStudy/study-a/$everything", headers=reader).json()
    assert {e["resource"]["id"] for e in mine["entry"]} >= {a, f"{a}-crp", "study-a"}
    assert not {e["resource"]["id"] for e in mine["entry"]} & {b, f"{b}-crp", "study-b"}


def test_a_study_bound_client_writes_only_its_studies(auth: Auth, client: Any, two_studies: dict[str, str]) -> None:
    a, b, marker = two_studies["a"], two_studies["b"], two_studies["marker"]
    feed = auth.token(client, "feed-a", "system/*.cruds")
    admin = auth.token(client, "admin", "system/*.rs")
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": marker + "-new"}}
    ok = client.post("/fhir/Observation", json=obs | {"subject": {"reference": f"Patient/{a}"}}, headers=feed)
    assert ok.status_code == 201, ok.text
    refused = client.post("/fhir/Observation", json=obs | {"subject": {"reference": f"Patient/{b}"}}, headers=feed)
    assert refused.status_code == 403 and "outside the studies" in refused.json()["issue"][0]["diagnostics"]
    overwrite = client.put(f"/fhir/Observation/{b}-crp", json=obs | {"id": f"{b}-crp", "subject": {"reference": f"Patient/{a}"}}, headers=feed)
    assert overwrite.status_code == 403
    assert client.delete(f"/fhir/Observation/{b}-crp", headers=feed).status_code == 403
    assert client.get(f"/fhir/Observation/{b}-crp", headers=admin).json()["subject"]["reference"] == f"Patient/{b}"
    # a transaction with one entry outside the study fails whole; nothing of it is stored
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": obs | {"subject": {"reference": f"Patient/{a}"}, "code": {"text": marker + "-tx"}}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": obs | {"subject": {"reference": f"Patient/{b}"}, "code": {"text": marker + "-tx"}}, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    assert client.post("/fhir", json=tx, headers=feed).status_code == 403
    assert client.get(f"/fhir/Observation?code:text={marker}-tx&_summary=count", headers=admin).json()["total"] == 0
    # enrolling a new subject: Patient + ResearchSubject together
    new = f"pn-{marker}"
    enrol = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": new}, "request": {"method": "PUT", "url": f"Patient/{new}"}},
            {"resource": {"resourceType": "ResearchSubject", "id": new, "status": "on-study", "study": {"reference": "ResearchStudy/study-a"}, "individual": {"reference": f"Patient/{new}"}}, "request": {"method": "PUT", "url": f"ResearchSubject/{new}"}},
        ],
    }
    assert client.post("/fhir", json=enrol, headers=feed).status_code == 200
    assert client.get(f"/fhir/Patient/{new}", headers=feed).status_code == 200
    # … but not another study's patient: that would pull B's data into A
    steal = {"resourceType": "ResearchSubject", "status": "on-study", "study": {"reference": "ResearchStudy/study-a"}, "individual": {"reference": f"Patient/{b}"}}
    r = client.post("/fhir/ResearchSubject", json=steal, headers=feed)
    assert r.status_code == 403 and f"Patient/{b}" in r.json()["issue"][0]["diagnostics"]
    assert client.get(f"/fhir/Patient/{b}", headers=feed).status_code == 404
    # a new study that is not its own
    assert client.put("/fhir/ResearchStudy/study-c", json={"resourceType": "ResearchStudy", "id": "study-c", "status": "active"}, headers=feed).status_code == 403


def test_export_of_a_study_bound_client_holds_only_its_studies(auth: Auth, client: Any, two_studies: dict[str, str]) -> None:
    a, b = two_studies["a"], two_studies["b"]
    reader = auth.token(client, "reader-a", "system/*.rs")
    kick = client.get("/fhir/$export?_type=Patient,Observation,ResearchStudy", headers={**reader, "prefer": "respond-async"})
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["content-location"].replace("http://testserver", "")
    deadline = time.monotonic() + 60
    while True:
        st = client.get(status_url, headers=reader)
        if st.status_code == 200:
            break
        assert st.status_code == 202 and time.monotonic() < deadline
        time.sleep(0.1)
    ids: set[str] = set()
    for item in st.json()["output"]:
        body = client.get(item["url"].replace("http://testserver", ""), headers=reader).text
        ids |= {json.loads(line)["id"] for line in body.splitlines() if line}
    assert {a, f"{a}-crp", "study-a"} <= ids
    assert not ids & {b, f"{b}-crp", "study-b"}
    # the export of another client is not even visible
    other = auth.token(client, "registry", "system/*.rs")
    assert client.get(status_url, headers=other).status_code == 404
    forbidden = client.get("/fhir/$export?_type=AuditEvent", headers={**other, "prefer": "respond-async"})
    assert forbidden.status_code == 403 and "system/AuditEvent.r" in forbidden.json()["issue"][0]["diagnostics"]


# --- audit --------------------------------------------------------------------------------------------


def _events(client: Any, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    r = client.get("/fhir/AuditEvent", params={"_count": "200", "_sort": "-_lastUpdated", **params}, headers=headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"]


def test_every_request_leaves_an_audit_event_that_only_an_admin_can_query(auth: Auth, client: Any) -> None:
    from service.fhir.validation import validation_issues

    admin = auth.token(client, "admin", "system/*.cruds system/AuditEvent.rs")
    feed = auth.token(client, "feed-a", "system/*.cruds")
    created = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=admin)
    pid = created.json()["id"]
    client.get(f"/fhir/Patient/{pid}", headers=admin)
    refused = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=feed)  # not enrolled: 403
    assert refused.status_code == 403
    client.get("/fhir/Patient", headers=FHIR)  # no token: 401
    events = _events(client, admin)
    whats = [{x.get("what", {}).get("reference") for x in ev["entity"]} for ev in events]
    write = [ev for ev, w in zip(events, whats) if f"Patient/{pid}/_history/1" in w and ev["action"] == "C"]
    assert len(write) == 1 and write[0]["outcome"] == "0"
    assert write[0]["agent"][0]["who"]["identifier"]["value"] == auth.clients["admin"].client_id
    assert write[0]["agent"][0]["network"]["address"]
    read = [ev for ev, w in zip(events, whats) if f"Patient/{pid}/_history/1" in w and ev["action"] == "R"]
    assert read and read[0]["subtype"][0]["code"] == "read"
    forbidden = [ev for ev in events if ev["outcome"] == "4" and ev["agent"][0].get("who", {}).get("identifier", {}).get("value") == auth.clients["feed-a"].client_id]
    assert forbidden and "outside the studies" in forbidden[0]["outcomeDesc"]
    anonymous = [ev for ev in events if ev["outcome"] == "4" and "identifier" not in ev["agent"][0]["who"]]
    assert anonymous and "HTTP 401" in anonymous[0]["outcomeDesc"]
    assert not any(validation_issues(ev) for ev in events[:20])  # valid R4 AuditEvents
    # searchable like any resource; other clients cannot see them, not even with wildcards
    assert client.get("/fhir/AuditEvent?outcome=4&_summary=count", headers=admin).json()["total"] >= 2
    registry = auth.token(client, "registry", "system/*.rs")
    r = client.get("/fhir/AuditEvent", headers=registry)
    assert r.status_code == 403 and "system/AuditEvent.s" in r.json()["issue"][0]["diagnostics"]
    history = client.get("/fhir/_history?_count=100", headers=registry).json()
    assert all(e["resource"]["resourceType"] != "AuditEvent" for e in history.get("entry", []) if "resource" in e)
    # and nobody writes the audit trail through the API
    assert client.post("/fhir/AuditEvent", json=events[0] | {"id": None}, headers=admin).status_code == 403


def test_the_audit_event_of_a_change_commits_with_it(auth: Auth, client: Any) -> None:
    """The AuditEvent is written in the change's transaction: a transaction that fails
    leaves a failure event and no resource; one that succeeds has exactly one event."""
    admin = auth.token(client, "admin", "system/*.cruds system/AuditEvent.rs")
    marker = uuid.uuid4().hex
    entries = [{"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:m", "value": marker}]}, "request": {"method": "POST", "url": "Patient"}}]
    bad = entries + [{"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:missing"}}, "request": {"method": "POST", "url": "Observation"}}]
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": bad}, headers=admin).status_code == 400
    assert client.get(f"/fhir/Patient?identifier=urn:m|{marker}&_summary=count", headers=admin).json()["total"] == 0
    failed = [ev for ev in _events(client, admin, outcome="4") if "urn:uuid:missing" in ev["outcomeDesc"]]
    assert len(failed) == 1 and failed[0]["action"] == "E" and "HTTP 400" in failed[0]["outcomeDesc"]
    ok = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=admin)
    assert ok.status_code == 200
    location = ok.json()["entry"][0]["response"]["location"]
    recorded = [ev for ev in _events(client, admin) if any(x.get("what", {}).get("reference") == location for x in ev["entity"])]
    assert len(recorded) == 1 and recorded[0]["outcome"] == "0"


# --- hardening visible to any client ----------------------------------------------------------------


def test_responses_carry_security_headers_and_no_cors_by_default(auth: Auth, client: Any) -> None:
    admin = auth.token(client, "admin", "system/*.rs")
    r = client.get("/fhir/Patient?_count=1", headers={**admin, "origin": "https://evil.example"})
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers


def test_every_route_that_acts_for_a_caller_resolves_it(auth: Auth) -> None:
    """Rights come from one dependency; a route without it would act with none (fail closed),
    so every data route must declare it. The public ones are listed on purpose."""
    from fastapi.routing import APIRoute

    from service.context import request_context

    public = {"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/auth/token", "/healthz", "/readyz"}
    for route in auth.app.routes:
        if not isinstance(route, APIRoute) or route.path in public:
            continue
        if not route.path.startswith(("/fhir", "/api")) or route.path == "/fhir/metadata":
            continue
        if route.path in ("/fhir/metadata", "/fhir/_history") and route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            continue  # 405 answers, no data
        deps = {d.call for d in route.dependant.dependencies}
        assert request_context in deps, (route.path, route.methods)


def test_operations_check_the_study_and_the_scopes(auth: Auth, client: Any, two_studies: dict[str, str]) -> None:
    reader = auth.token(client, "reader-a", "system/*.rs")
    r = client.get("/fhir/ResearchStudy/study-b/$endpoints", headers=reader)
    assert r.status_code == 404
    narrow = auth.token(client, "narrow", "system/Patient.rs")
    r = client.get("/fhir/ResearchStudy/study-a/$endpoints", headers=narrow)
    assert r.status_code == 403 and "system/ResearchStudy.r" in r.json()["issue"][0]["diagnostics"]
    # the study report is a study operation too
    assert client.get("/studies/study-b/report", headers={"authorization": reader["authorization"]}).status_code == 404
    r = client.get("/studies/study-a/report", headers={"authorization": narrow["authorization"]})
    assert r.status_code == 403 and "system/ResearchStudy.r" in r.json()["detail"]
    # the domain API goes through the same service layer: a study-bound client lists its studies only
    studies = client.get("/api/studies", headers={"authorization": reader["authorization"]})
    assert studies.status_code in (200,), studies.text
    assert client.get("/api/studies/study-b", headers={"authorization": reader["authorization"]}).status_code == 404
    forbidden = client.post("/api/studies", json={"code": "study-z", "title": "Z", "phase": "phase-1"}, headers={"authorization": reader["authorization"]})
    assert forbidden.status_code == 403 and forbidden.headers["content-type"].startswith("application/problem+json")
