"""Differential testing of FHIR search: the server against a brute-force oracle.

The store is loaded once per backend with the official R4 examples of ten resource types
and a seeded synthetic trial population (:mod:`oracle.corpus`). Hypothesis then
generates queries from values really present in the corpus (:mod:`oracle.strategies`):
tokens in every form, names with and without accents, dates at every precision and in
other time zones with all prefixes, quantities in other units (mg/L ↔ mg/dL), references
as ``Type/id``, bare ids and absolute URLs, modifiers, OR lists, AND repetitions, chains
(one and two hops), ``_has`` and the research ``study`` parameter. For each query the
server's result (all pages, ``_count=500``) must equal the set the oracle
(:mod:`oracle.evaluator`, official FHIRPath expressions + https://hl7.org/fhir/R4/search.html
rules in plain Python) computes from the stored resources.

A test evaluates all its generated queries and then fails listing every disagreement
(query, ids only the server returned, ids only the oracle expects), shortest queries
first, so one run shows every distinct problem rather than the first one.

``TRIALFHIR_ORACLE_EXAMPLES`` overrides the number of queries per test (default 300).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import clean_store
from oracle.corpus import BASE, Loaded, load_corpus
from oracle.evaluator import Oracle
from oracle.strategies import QueryGen

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("TRIALFHIR_ORACLE_EXAMPLES", "300"))
ACCEPT = {"accept": "application/fhir+json"}
OTHER_TYPES = [
    "Encounter", "Condition", "MedicationAdministration", "ResearchStudy", "ResearchSubject",
    "AdverseEvent", "Practitioner", "Organization", "RiskAssessment",
]

#: queries compared per backend, for the run summary
COMPARED: dict[str, int] = {}


@dataclass
class Env:
    app: Any
    client: TestClient
    examples: Any
    loaded: Loaded = field(default_factory=Loaded)
    oracle: Oracle | None = None
    gen: QueryGen | None = None
    load_seconds: float = 0.0

    def load(self) -> None:
        clean_store(self.app)
        started = time.monotonic()
        self.loaded = load_corpus(self.client, self.examples)
        engine = self.app.state.store.engine
        if engine.dialect.name == "postgresql":
            # fresh planner statistics, as autovacuum would soon provide: right after the
            # TRUNCATE the planner believes every table is empty and nested _has queries
            # took from seconds to minutes
            from sqlalchemy import text

            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        self.load_seconds = time.monotonic() - started
        self.oracle = Oracle(self.loaded.resources, BASE)
        self.gen = QueryGen(self.oracle)

    def ensure(self) -> None:
        """Reload when another module's ``client`` fixture emptied the store meanwhile."""
        rtype, rid, version = self.loaded.sentinel
        r = self.client.get(f"/fhir/{rtype}/{rid}", headers=ACCEPT)
        if r.status_code != 200 or r.json()["meta"]["versionId"] != version:
            self.load()


@pytest.fixture(scope="module")
def corpus(app, hl7_examples, backend):  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="http://testserver") as c:
        env = Env(app, c, hl7_examples)
        env.load()
        assert not env.loaded.refused, f"official examples / synthetic resources refused: {env.loaded.refused}"
        yield env
    clean_store(app)


@dataclass
class Mismatch:
    rtype: str
    pairs: list[tuple[str, str]]
    only_server: list[str]
    only_oracle: list[str]
    problem: str = ""

    def render(self) -> str:
        query = f"GET /fhir/{self.rtype}?{urlencode(self.pairs, safe='|:/,$')}"
        if self.problem:
            return f"{query}\n      {self.problem}"
        return (f"{query}\n      only the server returned: {self.only_server[:12]}{' …' if len(self.only_server) > 12 else ''}"
                f"\n      only the oracle expects: {self.only_oracle[:12]}{' …' if len(self.only_oracle) > 12 else ''}")


def server_search(client: TestClient, rtype: str, pairs: list[tuple[str, str]]) -> tuple[list[str], str]:
    """All matched ids over every page, and a problem description ('' when fine)."""
    r = client.get(f"/fhir/{rtype}", params=[*pairs, ("_count", "500")], headers=ACCEPT)
    ids: list[str] = []
    pages = 0
    while True:
        if r.status_code != 200:
            return ids, f"HTTP {r.status_code}: {r.text[:300]}"
        bundle = r.json()
        for entry in bundle.get("entry", []):
            mode = entry.get("search", {}).get("mode")
            if mode == "outcome":
                return ids, f"OperationOutcome entry: {entry['resource'].get('issue')}"
            assert mode == "match", entry.get("search")
            ids.append(entry["resource"]["id"])
        nxt = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        pages += 1
        if not nxt or pages > 50:
            break
        r = client.get(nxt[0], headers=ACCEPT)
    if len(ids) != len(set(ids)):
        return ids, f"ids repeated across pages: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    return ids, ""


def compare(env: Env, rtype: str, pairs: list[tuple[str, str]]) -> Mismatch | None:
    assert env.oracle is not None
    expected = env.oracle.search(rtype, pairs)
    got, problem = server_search(env.client, rtype, pairs)
    if problem:
        return Mismatch(rtype, pairs, [], [], problem)
    if set(got) != expected:
        return Mismatch(rtype, pairs, sorted(set(got) - expected), sorted(expected - set(got)))
    return None


def run_differential(env: Env, backend: str, rtypes: list[str], kinds: dict[str, int], *,
                     max_examples: int = MAX_EXAMPLES, params: set[str] | None = None) -> None:
    env.ensure()
    gen = env.gen
    assert gen is not None
    if params:
        populated = gen.populated

        def only(rtype: str, _orig=populated) -> list[str]:  # type: ignore[no-untyped-def]
            return [c for c in _orig(rtype) if c in params] or _orig(rtype)

        gen = QueryGen(env.oracle)  # type: ignore[arg-type]
        gen.populated = only  # type: ignore[method-assign]
    mismatches: dict[str, Mismatch] = {}
    count = 0
    timings: list[tuple[float, str]] = []

    @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        nonlocal count
        rtype = data.draw(st.sampled_from(rtypes), label="type")
        pairs = gen.query(data.draw, rtype, kinds)
        count += 1
        started = time.monotonic()
        found = compare(env, rtype, pairs)
        timings.append((time.monotonic() - started, f"{rtype}?{urlencode(pairs, safe='|:/,$')}"))
        if found:
            mismatches.setdefault(found.render(), found)

    check()
    COMPARED[backend] = COMPARED.get(backend, 0) + count
    slowest = sorted(timings, reverse=True)[:3]
    print(f"\n[{backend}] {count} generated queries compared with the oracle ({len(mismatches)} disagreements); "
          f"slowest: " + "; ".join(f"{t:.2f}s {q}" for t, q in slowest))
    if mismatches:
        shown = sorted(mismatches.values(), key=lambda m: (len(m.render()), m.render()))[:25]
        pytest.fail(
            f"{len(mismatches)} of {count} generated queries disagree with the oracle on {backend}:\n  "
            + "\n  ".join(m.render() for m in shown),
            pytrace=False,
        )


# --- the differential tests -----------------------------------------------------------------


def test_patient_searches_match_oracle(corpus: Env, backend: str) -> None:
    run_differential(corpus, backend, ["Patient"], {"simple": 7, "chain": 1, "has": 2})


def test_observation_searches_match_oracle(corpus: Env, backend: str) -> None:
    run_differential(corpus, backend, ["Observation"], {"simple": 7, "chain": 2, "has": 1, "study": 1})


def test_trial_and_other_searches_match_oracle(corpus: Env, backend: str) -> None:
    run_differential(corpus, backend, OTHER_TYPES, {"simple": 6, "chain": 2, "has": 2})


def test_chains_and_has_match_oracle(corpus: Env, backend: str) -> None:
    run_differential(
        corpus, backend,
        ["Patient", "Observation", "ResearchStudy", "ResearchSubject", "AdverseEvent", "MedicationAdministration"],
        {"simple": 1, "chain": 3, "has": 3, "study": 1},
    )


def test_dates_and_quantities_match_oracle(corpus: Env, backend: str) -> None:
    run_differential(
        corpus, backend, ["Observation"], {"simple": 1},
        max_examples=max(MAX_EXAMPLES * 2 // 3, 1),
        params={"date", "value-quantity", "combo-value-quantity", "component-value-quantity",
                "code-value-quantity", "_lastUpdated", "value-date"},
    )


# --- fixed queries: each is a behaviour users rely on, checked against the oracle ------------

FIXED: list[tuple[str, str]] = [
    # token
    ("Observation", "code=http://loinc.org|1988-5"),
    ("Observation", "code=1988-5"),
    ("Observation", "code=|1988-5"),
    ("Observation", "code=http://loinc.org|"),
    ("Observation", "code=http://loinc.org|1988-5,http://loinc.org|4537-7"),
    ("Observation", "status:not=final"),
    ("Observation", "category:text=vital"),
    ("Patient", "identifier=urn:trialfhir:mrn|MRN-0007"),
    ("Patient", "gender=female&active=true"),
    ("Patient", "email=anna.9@example.org"),
    # string
    ("Patient", "name=muller"),
    ("Patient", "family=MULL"),
    ("Patient", "given=zoe"),
    ("Patient", "name:contains=erg"),
    ("Patient", "name:exact=Müller"),
    ("Patient", "name:exact=muller"),
    ("Patient", "address-city=zurich"),
    # date
    ("Observation", "date=2024-03"),
    ("Observation", "date=eq2024-03"),
    ("Observation", "date=2024-03-15"),
    ("Observation", "date=ge2024-03-01&date=lt2024-04-01"),
    ("Observation", "date=sa2024-03-31T22:00:00Z"),
    ("Observation", "date=eb2024-03-15T10:30:00%2B02:00"),
    ("Observation", "date=ne2024"),
    ("Patient", "birthdate=1985"),
    ("Patient", "birthdate=le1960-06"),
    # quantity
    ("Observation", "value-quantity=12|http://unitsofmeasure.org|mg/L"),
    ("Observation", "value-quantity=1.2|http://unitsofmeasure.org|mg/dL"),
    ("Observation", "value-quantity=0.012|http://unitsofmeasure.org|g/L"),
    ("Observation", "value-quantity=lt1.2|http://unitsofmeasure.org|mg/dL"),
    ("Observation", "value-quantity=ge1.2|http://unitsofmeasure.org|mg/dL"),
    ("Observation", "value-quantity=gt3|http://unitsofmeasure.org|mg/L"),
    ("Observation", "value-quantity=12||mg/L"),
    ("Observation", "value-quantity=185||lbs"),
    ("Observation", "value-quantity=ap40|http://unitsofmeasure.org|mm/h"),
    ("Observation", "component-value-quantity=1000000000000000000"),
    ("Observation", "component-value-quantity=gt140|http://unitsofmeasure.org|mm[Hg]"),
    ("Observation", "code-value-quantity=http://loinc.org|1988-5$gt10|http://unitsofmeasure.org|mg/L"),
    ("Observation", "code-value-date=http://loinc.org|8665-2$2016-12-30"),
    # reference
    ("Observation", "subject=Patient/syn-pat-03"),
    ("Observation", "subject=syn-pat-03"),
    ("Observation", "subject:Patient=syn-pat-03"),
    ("Observation", f"subject={BASE}/Patient/syn-pat-03"),
    ("Observation", "patient=Patient/syn-pat-03,Patient/syn-pat-04"),
    ("Observation", "subject:Group=syn-group-1"),
    ("Observation", "subject:missing=true"),
    # :missing on elements that carry only text / display
    ("Observation", "category:missing=true"),
    ("Observation", "method:missing=true"),
    ("Observation", "device:missing=true"),
    # uri
    ("Patient", "_profile=http://trialfhir.org/fhir/StructureDefinition/trial-patient"),
    ("Patient", "_source:below=urn:trialfhir:site"),
    ("Patient", "_tag=urn:trialfhir:tag|cohort-a"),
    # chains and _has
    ("Observation", "subject:Patient.name=garcia"),
    ("Observation", "subject:Patient.birthdate=lt1960"),
    ("Observation", "subject:Patient.organization:Organization.name=health"),
    ("Patient", "_has:Observation:subject:code=1988-5"),
    ("Patient", "_has:Observation:patient:code=4537-7&gender=male"),
    ("Patient", "_has:ResearchSubject:individual:study=ResearchStudy/syn-study-1"),
    ("Observation", "patient._has:ResearchSubject:individual:study=ResearchStudy/syn-study-1"),
    ("Observation", "study=ResearchStudy/syn-study-1"),
    ("MedicationAdministration", "study=ResearchStudy/syn-study-2"),
    ("ResearchStudy", "condition=http://snomed.info/sct|69896004"),
    ("ResearchStudy", "enrollment=Group/syn-group-1"),
    ("ResearchSubject", "study=ResearchStudy/syn-study-1&status=on-study"),
    ("AdverseEvent", "study=ResearchStudy/syn-study-1"),
    ("ResearchStudy", "_has:ResearchSubject:study:individual:Patient.gender=female"),
]


@pytest.mark.parametrize("rtype,query", FIXED, ids=[f"{t}?{q}" for t, q in FIXED])
def test_fixed_query_matches_oracle(corpus: Env, rtype: str, query: str) -> None:
    from urllib.parse import parse_qsl

    corpus.ensure()
    pairs = parse_qsl(query, keep_blank_values=True)
    found = compare(corpus, rtype, pairs)
    assert found is None, found.render()
