"""The fast write path, on SQLite and PostgreSQL (the ``backend`` fixture).

What is checked, below the HTTP layer:

- ``ResourceRepository.write_many`` (rows straight to the driver, :mod:`service.storage.bulk`)
  stores exactly the rows the indexer produced — strings, floats, NULLs — for a REST
  write's few rows and a Bundle's many, replaces the index rows of updated and deleted
  resources, keeps every version, and refuses a stale update (a batch of a few rows goes
  through a pipeline on PostgreSQL, a larger one through COPY); ``writing`` does the same
  in slices;
- a transaction's conditional creates matched all at once
  (:func:`service.transactions.lookup.match_many`) find what ``find_matches`` finds, for
  every token form it takes, and leave every other form to ``find_matches``;
- the advisory locks of many criteria are taken in one statement and held (PostgreSQL);
- reference rewrites are journaled and undone exactly; the collector pause nests.
"""

from __future__ import annotations

import copy
import gc
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from service.db.engine import lock_criteria_many, run_in_transaction
from service.db.schema import INDEX_TABLES, idx_reference, resource, resource_version
from service.fhir.outcome import FhirError
from service.rest.service import pending_write
from service.search.matching import find_matches
COPY_THRESHOLD = 32  # a batch size beyond the few rows of a REST write
from service.storage.repository import ResourceRepository, StaleVersionError, StoredVersion
from service.transactions.gcpause import gc_paused
from service.transactions.lookup import match_many, token_criteria
from service.transactions.references import rewrite_references, undo

SYS = "urn:trialfhir:test:write"


@pytest.fixture()
def engine(app):  # type: ignore[no-untyped-def]
    from conftest import clean_store

    clean_store(app)
    return app.state.store.engine


def observation(i: int, patient: str) -> dict[str, Any]:
    """An Observation that fills most index tables (token, text, date, quantity with a
    canonical unit and without, reference, composite) with strings, floats and NULLs."""
    return {
        "resourceType": "Observation",
        "identifier": [{"system": SYS, "value": f"o{i}"}, {"value": f"plain-{i}"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}], "text": "Lab"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5", "display": "C reactive protein"}]},
        "subject": {"reference": patient, "display": "Ms Bench"},
        "effectiveDateTime": f"2024-05-{1 + i % 28:02d}T08:30:00+02:00",
        "valueQuantity": {"value": 1.25 + i, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"}
        if i % 2
        else {"value": i, "unit": "thing"},
    }


def patient(i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SYS, "value": f"p{i}"}], "name": [{"family": f"Écrivain{i}", "given": ["Zoë"]}], "birthDate": "1970-01-02"}


def index_rows(conn: Any, keys: list[int]) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row of ``keys``, per table, sorted, without the row's own res_key order."""
    out = {}
    for table in INDEX_TABLES:
        rows = conn.execute(select(table).where(table.c.res_key.in_(keys))).all()
        out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def expected_rows(writes: list[Any], keys: list[int]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the indexer produced for ``writes``, as the tables hold them."""
    out: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in INDEX_TABLES}
    for w, key in zip(writes, keys):
        for table in INDEX_TABLES:
            for row in (w.index or {}).get(table.name, []):
                full = {**row, "res_key": key, "resource_type": w.resource_type}
                out[table.name].append(tuple(full.get(c.name) for c in table.columns))
    return {name: sorted(rows, key=repr) for name, rows in out.items()}


def create_many(engine: Any, bodies: list[dict[str, Any]]) -> list[StoredVersion]:
    writes = [pending_write(b["resourceType"], str(uuid.uuid4()), b, "POST", None) for b in bodies]

    def work(conn: Any) -> list[StoredVersion]:
        stored = ResourceRepository(conn).write_many(writes)
        assert index_rows(conn, [s.res_key for s in stored]) == expected_rows(writes, [s.res_key for s in stored])
        return stored

    return run_in_transaction(engine, work)


@pytest.mark.parametrize("count", [3, COPY_THRESHOLD + 8], ids=["pipeline", "copy"])
def test_write_many_stores_the_indexer_rows(engine: Any, count: int) -> None:
    bodies = [patient(i) if i % 5 == 0 else observation(i, f"Patient/p{i % 7}") for i in range(count)]
    stored = create_many(engine, bodies)
    assert len({s.res_key for s in stored}) == count
    with engine.connect() as conn:
        current = {r.res_key: r for r in conn.execute(select(resource).where(resource.c.res_key.in_([s.res_key for s in stored])))}
        versions = conn.execute(select(resource_version).where(resource_version.c.res_key.in_([s.res_key for s in stored]))).all()
    assert len(versions) == count
    for s in stored:
        row = current[s.res_key]
        assert (row.resource_type, row.id, row.version_id, row.deleted, bytes(row.content)) == (s.resource_type, s.id, 1, False, s.content)
        assert s.content is not None and b'"versionId":"1"' in s.content
    assert {(v.res_key, v.version_id, v.method, v.deleted) for v in versions} == {(s.res_key, 1, "POST", False) for s in stored}


@pytest.mark.parametrize("count", [3, COPY_THRESHOLD + 8], ids=["pipeline", "copy"])
def test_write_many_updates_and_deletes_replace_index_rows(engine: Any, count: int) -> None:
    stored = create_many(engine, [observation(i, "Patient/a") for i in range(count)])
    changed = [observation(i + 1000, "Patient/b") for i in range(count)]

    def work(conn: Any) -> list[StoredVersion]:
        writes = [
            pending_write(s.resource_type, s.id, None if i % 3 == 0 else changed[i], "DELETE" if i % 3 == 0 else "PUT", s)
            for i, s in enumerate(stored)
        ]
        out = ResourceRepository(conn).write_many(writes)
        assert index_rows(conn, [s.res_key for s in stored]) == expected_rows(writes, [s.res_key for s in stored])
        return out

    second = run_in_transaction(engine, work)
    with engine.connect() as conn:
        for i, (old, new) in enumerate(zip(stored, second)):
            row = conn.execute(select(resource).where(resource.c.res_key == old.res_key)).one()
            assert (new.res_key, new.version_id, row.version_id) == (old.res_key, 2, 2)
            assert row.deleted == (i % 3 == 0) and (row.content is None) == (i % 3 == 0)
            history = conn.execute(select(resource_version.c.version_id).where(resource_version.c.res_key == old.res_key)).scalars().all()
            assert sorted(history) == [1, 2]
        refs = conn.execute(select(idx_reference.c.target_id).where(idx_reference.c.res_key.in_([s.res_key for s in stored]))).scalars().all()
    assert set(refs) == {"b"}  # deleted resources have no rows, updated ones only their new ones


@pytest.mark.parametrize("count", [1, COPY_THRESHOLD + 1], ids=["pipeline", "copy"])
def test_write_many_refuses_a_stale_update(engine: Any, count: int) -> None:
    stored = create_many(engine, [observation(i, "Patient/a") for i in range(count)])
    stale = stored[-1]
    behind = StoredVersion(stale.res_key, stale.resource_type, stale.id, 0, stale.last_updated_us, False, stale.content)
    writes_of = [*stored[:-1], behind]

    def work(conn: Any) -> None:
        ResourceRepository(conn).write_many([pending_write(s.resource_type, s.id, observation(9, "Patient/c"), "PUT", s) for s in writes_of])

    with pytest.raises(FhirError) as caught:
        run_in_transaction(engine, work, max_retries=0)
    # a conflict the runner re-runs (here with no retries left: 409)
    assert caught.value.status == 409
    assert isinstance(caught.value.__cause__, StaleVersionError), caught.value.__cause__
    with engine.connect() as conn:  # nothing of the failed transaction stayed
        assert set(conn.execute(select(resource.c.version_id).where(resource.c.res_key.in_([s.res_key for s in stored]))).scalars()) == {1}


def test_writing_in_slices_stores_every_slice(engine: Any) -> None:
    writes = [pending_write("Observation", str(uuid.uuid4()), observation(i, "Patient/s"), "POST", None) for i in range(25)]

    def work(conn: Any) -> list[StoredVersion]:
        out: list[StoredVersion] = []
        with ResourceRepository(conn).writing() as write:
            for start in range(0, len(writes), 10):
                out.extend(write(writes[start : start + 10]))
        assert index_rows(conn, [s.res_key for s in out]) == expected_rows(writes, [s.res_key for s in out])
        return out

    stored = run_in_transaction(engine, work)
    assert [s.id for s in stored] == [w.id for w in writes] and len({s.res_key for s in stored}) == len(writes)


# --- conditional creates matched all at once -------------------------------------------------------------


def test_match_many_finds_what_find_matches_finds(engine: Any) -> None:
    bodies = [
        {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "one"}]},
        {"resourceType": "Patient", "identifier": [{"system": f"{SYS}:other", "value": "one"}]},
        {"resourceType": "Patient", "identifier": [{"value": "two"}]},
        {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "dup"}]},
        {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "dup"}]},
        {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "a|b,c"}]},
        {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "gone"}]},
        {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "one"}]}},
    ]
    stored = create_many(engine, bodies)
    gone = stored[6]
    run_in_transaction(engine, lambda conn: ResourceRepository(conn).write_many([pending_write("Patient", gone.id, None, "DELETE", gone)]))
    criteria = [
        ("Patient", f"identifier={SYS}|one"),
        ("Patient", "identifier=one"),
        ("Patient", "identifier=|two"),
        ("Patient", "identifier=|one"),
        ("Patient", f"identifier={SYS}|dup"),
        ("Patient", f"identifier={SYS}|gone"),
        ("Patient", f"identifier={SYS}|nothing,{SYS}:other|one"),
        ("Patient", f"identifier={SYS}|a\\|b\\,c"),
        ("Patient", f"identifier={SYS}|one&_count=5"),
        ("Observation", "code=http://loinc.org|one"),
        ("Observation", "code=one"),
    ]
    with engine.begin() as conn:
        found = match_many(conn, criteria)
        assert set(found) == set(criteria)
        for rtype, query in criteria:
            expected = find_matches(conn, rtype, query, limit=2)
            assert [v.res_key for v in found[(rtype, query)]] == expected, (rtype, query)
            assert all(v.resource_type == rtype and not v.deleted for v in found[(rtype, query)])


def test_match_many_sees_only_what_a_study_bound_caller_sees(engine: Any) -> None:
    from service.auth.access import Access, acting_as

    create_many(
        engine,
        [
            {"resourceType": "ResearchStudy", "id": "s-in", "status": "active"},
            {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "twin"}]},
            {"resourceType": "Patient", "identifier": [{"system": SYS, "value": "twin"}]},
        ],
    )
    with engine.connect() as conn:
        rows = conn.execute(select(resource.c.resource_type, resource.c.id).order_by(resource.c.res_key)).all()
    study_id, inside = rows[0][1], rows[1][1]
    create_many(engine, [{"resourceType": "ResearchSubject", "status": "on-study", "study": {"reference": f"ResearchStudy/{study_id}"}, "individual": {"reference": f"Patient/{inside}"}}])
    criteria = [("Patient", f"identifier={SYS}|twin")]
    with engine.begin() as conn:
        assert len(match_many(conn, criteria)[criteria[0]]) == 2 == len(find_matches(conn, "Patient", criteria[0][1], limit=2))
        with acting_as(Access(client_id="bound", scopes=None, studies=frozenset({study_id}))):
            found = match_many(conn, criteria)[criteria[0]]
            assert [v.res_key for v in found] == find_matches(conn, "Patient", criteria[0][1], limit=2)
            assert [v.id for v in found] == [inside]


@pytest.mark.parametrize(
    "query",
    ["name=one", "identifier:not=x", "identifier=a&gender=male", "_id=x", "subject:Patient.name=x", "identifier=sys|", "unknown=1", ""],
)
def test_other_criteria_are_left_to_find_matches(query: str) -> None:
    assert token_criteria("Patient" if "subject" not in query else "Observation", query) is None


def test_many_criteria_locks_are_taken_and_held(engine: Any) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite's write lock serialises writers")
    from sqlalchemy import text

    criteria = [("Patient", "identifier", f"{SYS}|{i}") for i in range(5)] + [("Observation", "code", "x")]
    with engine.connect() as holder, engine.connect() as other:
        with holder.begin():
            lock_criteria_many(holder, criteria)
            with other.begin():
                for rtype, name, value in criteria:
                    free = other.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"{rtype}?{name}={value}"}).scalar()
                    assert free is False, (rtype, name, value)
        with other.begin():  # released with the holder's transaction
            assert other.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"Patient?identifier={SYS}|0"}).scalar() is True


# --- no database -----------------------------------------------------------------------------------------


def test_rewrites_are_journaled_and_undone() -> None:
    doc = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:p"},
        "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:p"}}, {"url": "y", "valueUri": "urn:uuid:p"}],
        "text": {"status": "generated", "div": '<div><a href="urn:uuid:p">p</a></div>'},
        "contained": [{"resourceType": "Provenance", "target": [{"reference": "urn:uuid:p"}]}],
        "focus": [{"reference": "Patient/unchanged"}],
    }
    original = copy.deepcopy(doc)
    mapping = {"urn:uuid:p": "Patient/123"}
    journal: list[Any] = []
    rewrite_references(doc, lambda ref: mapping.get(ref), mapping, journal)
    assert doc["subject"]["reference"] == "Patient/123" and doc["extension"][1]["valueUri"] == "Patient/123"
    assert doc["contained"][0]["target"][0]["reference"] == "Patient/123" and '"Patient/123"' in doc["text"]["div"]
    assert len(journal) == 5
    undo(journal)
    assert doc == original and journal == []


def test_collector_pause_nests_and_restores() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
