"""A server killed (SIGKILL) in the middle of a large transaction leaves no trace of it.

For each backend, on a fresh database: a live ``trialfhir serve`` (2 uvicorn workers, so
there is a real process tree) gets a transaction of 5,000 Observations, all carrying an
identifier system used nowhere else. While that request is in flight the whole process
tree is SIGKILLed:

- ``early``: 0.5 s after the request was fully sent (the server is parsing/validating);
- ``writing``: once the database shows the transaction writing (PostgreSQL: a backend of
  that database holds a transaction id; SQLite: another connection cannot take the write
  lock and the WAL file has grown), i.e. rows are in the database but not committed.

"In flight" is verified: the request was fully sent and not one byte of a response had
arrived when the kill was sent (the connection then dies without an answer). A new server
on the same database must then show none of the transaction's entries (search by the
unique system: total 0; resource / resource_version / index row counts as before) and
answer normally (create + read).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select as sa_select, text

from conftest import LiveServer, start_server

pytestmark = pytest.mark.slow

FHIR = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
N_ENTRIES = 5000


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(server: LiveServer) -> list[int]:
    """SIGKILL the server process and every descendant; wait until all are gone."""
    root = server.process.pid
    tree = [root, *descendants(root)]
    for pid in tree:  # the supervisor first, so it cannot restart a worker
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in tree[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in tree if alive(p)], "some server processes survived SIGKILL"
    return tree


def big_transaction(system: str) -> bytes:
    entries = []
    for i in range(N_ENTRIES):
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "identifier": [{"system": system, "value": str(i)}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5", "display": "C reactive protein"}]},
                    "subject": {"reference": "Patient/crash-patient"},
                    "effectiveDateTime": "2024-03-01T08:00:00Z",
                    "valueQuantity": {"value": 1.5 + i / 1000, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


class RawRequest(threading.Thread):
    """POSTs ``body`` on a plain socket and records when it was sent and what came back."""

    def __init__(self, url: str, body: bytes) -> None:
        super().__init__(daemon=True)
        host, port = url.split("//", 1)[1].split(":")
        self.addr = (host, int(port))
        self.body = body
        self.sent = threading.Event()
        self.first_byte_at: float | None = None
        self.received = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(self.addr, timeout=300) as sock:
                head = (
                    f"POST /fhir HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\nContent-Type: application/fhir+json\r\n"
                    f"Accept: application/fhir+json\r\nPrefer: return=minimal\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                sock.sendall(head + self.body)
                self.sent.set()
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    if self.first_byte_at is None:
                        self.first_byte_at = time.monotonic()
                    self.received += chunk
        except OSError as exc:
            self.error = exc
        finally:
            self.sent.set()


def table_counts(database_url: str) -> dict[str, int]:
    from service.db.schema import INDEX_TABLES, resource, resource_version

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {t.name: int(conn.execute(sa_select(func.count()).select_from(t)).scalar_one()) for t in (resource, resource_version, *INDEX_TABLES)}
    finally:
        engine.dispose()


class WriteProbe:
    """Tells whether the server's write transaction has started writing rows."""

    def __init__(self, backend: str, database_url: str) -> None:
        self.backend = backend
        self.database_url = database_url
        if backend == "sqlite":
            self.path = database_url.split("sqlite:///", 1)[1]
            self.wal = Path(self.path + "-wal")
            self.wal_base = self.wal.stat().st_size if self.wal.exists() else 0
        else:
            self.engine = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def writing(self) -> bool:
        if self.backend == "sqlite":
            grown = (self.wal.stat().st_size if self.wal.exists() else 0) > self.wal_base + 512 * 1024
            if not grown:
                return False
            conn = sqlite3.connect(self.path, timeout=0)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return False  # nobody holds the write lock
            except sqlite3.OperationalError as exc:
                return "locked" in str(exc) or "busy" in str(exc)
            finally:
                conn.close()
        with self.engine.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()")
            ).scalar_one()
        return int(n) > 0

    def close(self) -> None:
        if self.backend != "sqlite":
            self.engine.dispose()


@pytest.mark.parametrize("moment", ["early", "writing"])
def test_sigkill_during_a_large_transaction_leaves_no_trace(backend: str, databases: Any, tmp_path: Path, moment: str) -> None:
    database_url = databases.url(backend, f"crash_{moment}")
    server = start_server(database_url, tmp_path, workers=2)
    try:
        with httpx.Client(timeout=60) as c:
            for i in range(3):  # some prior state that must survive untouched
                r = c.post(server.base + "/Patient", content=json.dumps({"resourceType": "Patient", "identifier": [{"system": "urn:crash:seed", "value": str(i)}]}), headers=FHIR)
                assert r.status_code == 201, r.text
            r = c.put(server.base + "/Patient/crash-patient", content=json.dumps({"resourceType": "Patient", "id": "crash-patient"}), headers=FHIR)
            assert r.status_code == 201, r.text
        before = table_counts(database_url)
        system = f"urn:trialfhir:crash:{uuid.uuid4().hex}"
        body = big_transaction(system)
        probe = WriteProbe(backend, database_url)
        request = RawRequest(server.url, body)
        request.start()
        assert request.sent.wait(60) and request.error is None, request.error
        sent_at = time.monotonic()
        if moment == "early":
            time.sleep(0.5)
        else:
            deadline = sent_at + 240
            while not probe.writing():
                assert request.first_byte_at is None, f"the transaction finished before it was seen writing: {request.received[:300]!r}"
                assert time.monotonic() < deadline, "the transaction was never seen writing"
                time.sleep(0.02)
        probe.close()
        # in flight: fully sent, no answer yet, the server still up
        assert request.first_byte_at is None and not request.received, f"answered before the kill: {request.received[:300]!r}"
        assert server.process.poll() is None
        print(f"\n[{backend}/{moment}] SIGKILL {time.monotonic() - sent_at:.2f} s after the {len(body) / 1e6:.1f} MB request was sent")
        killed = kill_tree(server)
        assert len(killed) >= 2, f"expected a supervisor and workers, got {killed}"
        request.join(30)
        assert not request.is_alive()
        assert request.first_byte_at is None and not request.received, f"the killed server answered: {request.received[:300]!r}"
    finally:
        server.stop()

    # PostgreSQL rolls the orphaned transaction back when its client disappears; give the
    # backend a moment to notice before counting.
    if backend == "postgresql":
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + 30
        with admin.connect() as conn:
            while conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one():
                assert time.monotonic() < deadline, "the killed server's PostgreSQL sessions never ended"
                time.sleep(0.1)
        admin.dispose()

    restarted = start_server(database_url, tmp_path, workers=1)
    try:
        with httpx.Client(timeout=60) as c:
            r = c.get(f"{restarted.base}/Observation?identifier={system}|&_summary=count", headers=FHIR)
            assert r.status_code == 200, r.text
            assert r.json()["total"] == 0
            r = c.get(f"{restarted.base}/Observation?identifier={system}|0", headers=FHIR)
            assert r.status_code == 200 and not [e for e in r.json().get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
            assert table_counts(database_url) == before
            # and it works normally
            r = c.post(restarted.base + "/Patient", content=json.dumps({"resourceType": "Patient", "active": True}), headers=FHIR)
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            got = c.get(f"{restarted.base}/Patient/{pid}", headers=FHIR)
            assert got.status_code == 200 and got.json()["active"] is True
            r = c.post(
                restarted.base,
                content=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "after"}, "subject": {"reference": f"Patient/{pid}"}}, "request": {"method": "POST", "url": "Observation"}}]}),
                headers=FHIR,
            )
            assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"] == "201 Created", r.text
            assert c.get(f"{restarted.base}/Patient?identifier=urn:crash:seed|&_summary=count", headers=FHIR).json()["total"] == 3
    finally:
        restarted.stop()
