"""The search benchmark's population: seeded Patients and lab Observations, turned into
exactly the table rows the service's write path stores.

Everything derives from ``random.Random(7)``: the master generator draws the patients and
a *plan* per Observation (patient, LOINC code, effective instant, value, zone); workers
turn plan chunks into resources and then into rows with the service's own functions —
:func:`service.rest.service.stamp` for the stored bytes and
:func:`service.search.indexing.index_resource` for the index rows — so the index is the
one ``FhirStore.create`` would have written (checked by :func:`check_write_path`).

Indexing costs ~0.5 ms of CPU per Observation, so 1M Observations take several CPU
minutes. The rows are therefore generated once, in parallel worker processes, into a
cache directory (pickled tuples per chunk, in table column order) keyed by the sizes,
the seed and the table columns; a second backend or a second run reuses them after
checking that the first 300 Patients and Observations re-derived with the *current*
``stamp``/``index_resource`` are byte-identical to the cached rows (else it regenerates).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import random
import shutil
import time
import uuid
from bisect import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
GENERATOR_VERSION = 4
CHUNK = 20_000
DEFAULT_CACHE = Path(os.environ.get("TRIALFHIR_BENCH_CACHE", "/tmp/trialfhir-search-bench-cache"))

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# (LOINC code, display, UCUM unit, low, high, decimals, weight). Weights: how often the
# test is ordered relative to the others (basic metabolic panel and blood count most often).
LABS: list[tuple[str, str, str, float, float, int, int]] = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 65, 190, 0, 4),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 9.5, 17.5, 1, 4),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 1.8, 2, 4),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 131, 149, 0, 4),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.1, 5.6, 1, 4),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.0, 14.0, 1, 3),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 120, 450, 0, 3),
    ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/L", 0.2, 60, 1, 3),
    ("4537-7", "Erythrocyte sedimentation rate by Westergren method", "mm/h", 2, 70, 0, 2),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 5, 80, 0, 2),
    ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 8, 70, 0, 2),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120, 290, 0, 1),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 45, 320, 0, 1),
    ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", 28, 95, 0, 1),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.4, 10.5, 1, 1),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.2, 7.0, 2, 1),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 94, 110, 0, 2),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.2, 10.8, 1, 2),
    ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", 2.8, 5.2, 1, 1),
    ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (MDRD)", "mL/min/{1.73_m2}", 25, 125, 0, 2),
]
_CUM_WEIGHTS = list(accumulate(lab[6] for lab in LABS))

START = datetime(2023, 6, 1, tzinfo=timezone.utc)
SPAN_S = 2 * 365 * 86_400  # effectiveDateTime spread over two years
_ZONES = [timezone.utc, timezone(timedelta(hours=1)), timezone(timedelta(hours=2))]

_FAMILY = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
           "García", "Martin", "Rossi", "Nowak", "Smith", "Johnson", "Dubois", "Jansen", "Novák", "Kowalski"]
_GIVEN_F = ["Anna", "Maria", "Sophie", "Emma", "Lena", "Julia", "Laura", "Sarah", "Hannah", "Lea"]
_GIVEN_M = ["Jonas", "Lukas", "Paul", "Felix", "Max", "Leon", "David", "Jan", "Tim", "Noah"]
_CITIES = [("Berlin", "10115"), ("Hamburg", "20095"), ("München", "80331"), ("Köln", "50667"), ("Leipzig", "04109")]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class Population:
    """The seeded plan of one data set (cheap to recompute: ~1 s per 1M Observations)."""

    n_patients: int
    n_observations: int
    patient_ids: list[str]
    #: per Observation, in res_key order (chronological, like a live lab feed):
    #: (patient index, lab index, effective seconds since START, value, zone index)
    plans: list[tuple[int, int, int, float | int, int]]
    chunk_seeds: list[int]

    @property
    def patient_res_keys(self) -> range:
        return range(1, self.n_patients + 1)

    def observation_res_key(self, i: int) -> int:
        return self.n_patients + 1 + i


def population(n_patients: int, n_observations: int) -> Population:
    rng = random.Random(SEED)
    patient_ids = [_uuid(rng) for _ in range(n_patients)]
    total_w = _CUM_WEIGHTS[-1]
    plans = []
    for _ in range(n_observations):
        lab = bisect(_CUM_WEIGHTS, rng.random() * total_w)
        _, _, _, lo, hi, decimals, _ = LABS[lab]
        if LABS[lab][0] == "1988-5":  # CRP: mostly low, long tail
            value = min(hi * 3, rng.lognormvariate(0.8, 1.1))
        else:
            value = rng.uniform(lo, hi)
        value = round(value, decimals) if decimals else int(round(value))
        plans.append((rng.randrange(n_patients), lab, rng.randrange(SPAN_S), value, rng.randrange(3)))
    plans.sort(key=lambda p: p[2])
    n_chunks = (n_observations + CHUNK - 1) // CHUNK
    chunk_seeds = [rng.getrandbits(63) for _ in range(n_chunks + 1)]
    return Population(n_patients, n_observations, patient_ids, plans, chunk_seeds)


# --- resources ---------------------------------------------------------------------------------


def _local(seconds: int, zone: timezone, *, millis: bool = False) -> str:
    text = (START + timedelta(seconds=seconds)).astimezone(zone).isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def patient_resource(i: int, rng: random.Random) -> dict[str, Any]:
    female = rng.random() < 0.5
    city, postal = rng.choice(_CITIES)
    birth = datetime(1930, 1, 1) + timedelta(days=rng.randrange(75 * 365))
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.2", "value": f"MRN-{i:08d}"}],
        "active": True,
        "name": [{"family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN_F if female else _GIVEN_M)]}],
        "gender": "female" if female else "male",
        "birthDate": birth.strftime("%Y-%m-%d"),
        "address": [{"city": city, "postalCode": postal, "country": "DE"}],
    }


def observation_resource(n: int, plan: tuple[int, int, int, float, int], patient_ids: list[str]) -> dict[str, Any]:
    """The ``n``-th lab Observation (valid R4, ~750 bytes stored)."""
    patient, lab, seconds, value, zone = plan
    code, display, unit, *_ = LABS[lab]
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5.1", "value": f"LAB-{n:08d}"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient_ids[patient]}"},
        "effectiveDateTime": _local(seconds, _ZONES[zone]),
        "issued": _local(seconds + 3600 + (n % 7) * 600, _ZONES[zone], millis=True),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def last_updated_us(seconds: int) -> int:
    """lastUpdated of a loaded version: when the result was filed (2 h after the draw)."""
    return int((START.timestamp() + seconds + 7200) * 1_000_000)


# --- rows --------------------------------------------------------------------------------------


def table_columns() -> dict[str, list[str]]:
    from service.db.schema import INDEX_TABLES, resource, resource_version

    out = {t.name: [c.name for c in t.columns] for t in INDEX_TABLES}
    out["resource"] = [c.name for c in resource.columns]
    out["resource_version"] = [c.name for c in resource_version.columns]
    return out


def resource_rows(resource_type: str, res_key: int, id: str, body: dict[str, Any], lu_us: int, cols: dict[str, list[str]], out: dict[str, list[tuple]]) -> None:
    """Append the rows ``FhirStore.create`` writes for ``body`` (a POST, version 1)."""
    from service.rest.service import stamp
    from service.search.indexing import index_resource

    content = stamp(body, id, 1, lu_us)
    out["resource"].append((res_key, resource_type, id, 1, lu_us, False, content))
    out["resource_version"].append((res_key, res_key, resource_type, id, 1, lu_us, "POST", False, content))
    for table, rows in index_resource(resource_type, body).tables().items():
        if not rows:
            continue
        names = cols[table]
        dest = out[table]
        for row in rows:
            row["res_key"] = res_key
            row["resource_type"] = resource_type
            dest.append(tuple(row.get(c) for c in names))


def _empty(cols: dict[str, list[str]]) -> dict[str, list[tuple]]:
    return {name: [] for name in cols}


def patient_chunk(pop: Population) -> dict[str, list[tuple]]:
    cols = table_columns()
    out = _empty(cols)
    rng = random.Random(pop.chunk_seeds[-1])
    for i, pid in enumerate(pop.patient_ids):
        body = patient_resource(i, rng)
        resource_rows("Patient", i + 1, pid, body, last_updated_us(0) - 86_400_000_000, cols, out)
    return out


def observation_chunk(pop_args: tuple[list[str], list[tuple], int, int, int], chunk_no: int) -> dict[str, list[tuple]]:
    patient_ids, plans, first_n, first_key, seed = pop_args
    cols = table_columns()
    out = _empty(cols)
    rng = random.Random(seed)
    for j, plan in enumerate(plans):
        n = first_n + j
        body = observation_resource(n, plan, patient_ids)
        resource_rows("Observation", first_key + j, _uuid(rng), body, last_updated_us(plan[2]), cols, out)
    return out


# --- the cache ----------------------------------------------------------------------------------


def _cache_key() -> str:
    """Sizes aside, what the cache layout depends on: this generator and the table columns.

    Whether the cached rows still equal what the *current* service code produces is
    checked separately by :func:`_cache_is_current` (the service changes often; a source
    hash would throw a 1M cache away for every unrelated edit)."""
    h = hashlib.sha256(f"{GENERATOR_VERSION}/{SEED}/{CHUNK}/{sorted(table_columns().items())}".encode())
    return h.hexdigest()[:12]


def _rows_of(chunk: dict[str, list[tuple]], keys: set[int]) -> dict[str, list[str]]:
    """The rows of ``chunk`` whose res_key is in ``keys`` (sorted reprs, per table)."""
    out = {}
    for table, rows in chunk.items():
        key_at = 1 if table == "resource_version" else 0
        out[table] = sorted(repr(r) for r in rows if r[key_at] in keys)
    return out


def _cache_is_current(directory: Path, pop: Population, sample: int = 300) -> str | None:
    """None when the first ``sample`` Patients and Observations of the cache equal rows
    regenerated now with the service's current stamp/index_resource; else what differs."""
    n = min(sample, pop.n_observations)
    with open(directory / "obs_00000.pkl", "rb") as fh:
        cached_obs = pickle.load(fh)
    first_key = pop.observation_res_key(0)
    fresh_obs = observation_chunk((pop.patient_ids, pop.plans[:n], 0, first_key, pop.chunk_seeds[0]), 0)
    keys = set(range(first_key, first_key + n))
    a, b = _rows_of(cached_obs, keys), _rows_of(fresh_obs, keys)
    for table in a:
        if a[table] != b.get(table):
            return f"Observation rows of {table} differ"
    with open(directory / "patients.pkl", "rb") as fh:
        cached_pat = pickle.load(fh)
    fresh_pat = patient_chunk(pop)
    keys = set(range(1, min(sample, pop.n_patients) + 1))
    a, b = _rows_of(cached_pat, keys), _rows_of(fresh_pat, keys)
    for table in a:
        if a[table] != b.get(table):
            return f"Patient rows of {table} differ"
    return None




def _worker_init() -> None:
    from service.search.ucum import warm_up

    warm_up()


def _worker(job: tuple[str, tuple, int]) -> tuple[int, int, float]:
    path, args, chunk_no = job
    t0 = time.process_time()
    rows = observation_chunk(args, chunk_no)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return chunk_no, sum(len(v) for v in rows.values()), time.process_time() - t0


@dataclass
class GeneratedData:
    directory: Path
    pop: Population
    generate_s: float  # wall time spent generating now (0 when cached)
    cpu_s_per_observation: float | None  # CPU per Observation for stamp + index_resource (None when cached)
    n_rows: int

    def chunks(self) -> Iterator[dict[str, list[tuple]]]:
        with open(self.directory / "patients.pkl", "rb") as fh:
            yield pickle.load(fh)
        i = 0
        while (p := self.directory / f"obs_{i:05d}.pkl").exists():
            with open(p, "rb") as fh:
                yield pickle.load(fh)
            i += 1


def generate(n_patients: int, n_observations: int, *, jobs: int, cache_root: Path = DEFAULT_CACHE, log=print) -> GeneratedData:  # type: ignore[no-untyped-def]
    """Rows for the population, from the cache or generated now (in ``jobs`` processes)."""
    pop = population(n_patients, n_observations)
    directory = cache_root / f"p{n_patients}-o{n_observations}-{_cache_key()}"
    done = directory / "complete"
    if done.exists():
        stale = _cache_is_current(directory, pop)
        if stale is None:
            n_rows = int(done.read_text())
            log(f"  rows from cache {directory} ({n_rows:,} rows; first 300 Patients/Observations re-derived "
                "with the current service code: identical)")
            return GeneratedData(directory, pop, 0.0, None, n_rows)
        log(f"  cache {directory} is stale ({stale} from what the current service code writes): regenerating")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    t0 = time.perf_counter()
    pat = patient_chunk(pop)
    with open(directory / "patients.pkl", "wb") as fh:
        pickle.dump(pat, fh, protocol=pickle.HIGHEST_PROTOCOL)
    n_rows = sum(len(v) for v in pat.values())
    jobs_list = []
    for c in range((n_observations + CHUNK - 1) // CHUNK):
        lo, hi = c * CHUNK, min(n_observations, (c + 1) * CHUNK)
        args = (pop.patient_ids, pop.plans[lo:hi], lo, pop.observation_res_key(lo), pop.chunk_seeds[c])
        jobs_list.append((str(directory / f"obs_{c:05d}.pkl"), args, c))
    cpu = 0.0
    if jobs <= 1 or len(jobs_list) <= 1:
        for job in jobs_list:
            _, n, c = _worker(job)
            n_rows += n
            cpu += c
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs, initializer=_worker_init) as pool:
            done_n = 0
            for _, n, c in pool.imap_unordered(_worker, jobs_list):
                n_rows += n
                cpu += c
                done_n += 1
                if done_n % 10 == 0 or done_n == len(jobs_list):
                    el = time.perf_counter() - t0
                    log(f"    generated {min(done_n * CHUNK, n_observations):,}/{n_observations:,} Observations in {el:.0f} s")
    done.write_text(str(n_rows))
    wall = time.perf_counter() - t0
    return GeneratedData(directory, pop, wall, cpu / max(1, n_observations), n_rows)


def check_write_path(log=print) -> None:  # type: ignore[no-untyped-def]
    """Create one Observation and one Patient through ``FhirStore.create`` on a scratch
    SQLite file and check that the stored bytes' shape and every index row equal what
    :func:`resource_rows` generates for the same body (res_key and ids aside)."""
    import tempfile

    from sqlalchemy import select

    from service.db.engine import make_engine
    from service.db.migrate import upgrade
    from service.db.schema import INDEX_TABLES, resource
    from service.fhir import jsonio
    from service.rest.service import FhirStore

    pop = population(3, 5)
    cols = table_columns()
    bodies = [("Patient", patient_resource(0, random.Random(1))), ("Observation", observation_resource(0, pop.plans[0], pop.patient_ids))]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/check.db")
        try:
            upgrade(engine)
            store = FhirStore(engine)
            for rtype, body in bodies:
                result = store.create(rtype, dict(body), jsonio.dumps(body))
                assert result.version is not None
                key = result.version.res_key
                ours = _empty(cols)
                resource_rows(rtype, key, result.version.id, dict(body), result.version.last_updated_us, cols, ours)
                with engine.connect() as conn:
                    stored = conn.execute(select(resource.c.content).where(resource.c.res_key == key)).scalar_one()
                    assert stored == ours["resource"][0][6], "stored bytes differ from stamp()"
                    for t in INDEX_TABLES:
                        got = sorted(map(repr, conn.execute(select(t).where(t.c.res_key == key)).all()))
                        want = sorted(map(repr, ours[t.name]))
                        assert got == want, f"{rtype}: {t.name} rows differ:\n{got}\n{want}"
        finally:
            engine.dispose()
    log("  write-path check: bulk rows == FhirStore.create rows (bytes and all 9 index tables)")
