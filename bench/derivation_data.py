"""The derivation benchmark's study: N subjects × 6 visits × 12 measures, as table rows.

Resources are written by the service's own mappers (:mod:`mappers`: the same FHIR the
``/api`` writes), seeded per chunk of subjects (``random.Random(SEED + chunk)``):

- one ResearchStudy (default schedule), its PlanDefinition, cohort Group (no members: 10,000
  members would make one huge resource) and the product Medication;
- per subject a Patient and ResearchSubject, 3 completed infusions (weeks 0, 4, 8; day 0 =
  the first) and, at each of BL, W4, W8, W12, W16, W24 (dated a few days off target, inside
  the window), 12 Observations: TJC28, SJC28, PtGA, EGA, pain, HAQ-DI, ESR, CRP, IL-10,
  TNF-α, Treg %, Th17 % — values from a per-subject trajectory with noise, discrete like
  real data (counts, 0.5 steps, 1/8 HAQ steps, one-decimal labs); 10 % of CRP values in
  mg/dL and 10 % of PtGA values in mm, so conversions run;
- about one AdverseEvent per two subjects.

Rows are built like :mod:`bench.search_data` (``resource_rows``: the service's ``stamp``
and ``index_resource``, i.e. exactly what the write path stores), in worker processes,
cached on disk by size; a cached set is reused after re-deriving the first chunk's first
subject with the current service code and finding identical rows.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import random
import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from bench.search_data import resource_rows, table_columns

SEED = 11
GENERATOR_VERSION = 1
SUBJECTS_PER_CHUNK = 250
STUDY_CODE = "BENCH-RA"
DEFAULT_CACHE = Path(os.environ.get("TRIALFHIR_BENCH_CACHE", "/tmp/trialfhir-search-bench-cache"))
VISITS = [("BL", 0, -6, 0), ("W4", 28, -5, 5), ("W8", 56, -5, 5), ("W12", 84, -5, 5), ("W16", 112, -5, 5), ("W24", 168, -10, 10)]
MEASURES = ["tjc28", "sjc28", "ptga", "ega", "pain", "haq_di", "esr", "crp", "il10", "tnf_alpha", "treg_pct", "th17_pct"]
ZONE = timezone(timedelta(hours=1))
LU_BASE_US = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)


def study_resources() -> list[tuple[str, dict[str, Any]]]:
    from mappers.study import study_to_fhir
    from schemas.trial import Study

    res = study_to_fhir(Study(code=STUDY_CODE, title="Derivation benchmark study (synthetic)", phase="phase-2"), [])
    return [(r["resourceType"], r) for r in (res.medication, res.plan_definition, res.group, res.research_study)]


def _q(value: float, step: float, low: float, high: float) -> Decimal:
    value = min(high, max(low, round(value / step) * step))
    places = 0 if step >= 1 else len(repr(step).split(".")[1])
    return Decimal(f"{value:.{places}f}")


def subject_resources(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Every resource of subject ``n`` (Patient, ResearchSubject, infusions, Observations, AE)."""
    from mappers.adverse_event import adverse_event_to_fhir
    from mappers.assessment import assessment_to_observation
    from mappers.infusion import infusion_to_medication_administration
    from mappers.subject import subject_to_fhir
    from schemas.trial import AdverseEvent, Assessment, Infusion, Subject

    code = f"S{n:05d}"
    day0 = date(2023, 1, 2) + timedelta(days=rng.randrange(700))
    subject = Subject(study_code=STUDY_CODE, subject_code=code, sex=rng.choice(["female", "male"]), birth_year=rng.randrange(1945, 2000), consent_date=day0 - timedelta(days=rng.randrange(3, 20)))
    out: list[tuple[str, dict[str, Any]]] = [(r["resourceType"], r) for r in subject_to_fhir(subject)]
    for week in (0, 4, 8):
        start = datetime.combine(day0 + timedelta(days=7 * week), dtime(9, 0), ZONE)
        inf = Infusion(study_code=STUDY_CODE, subject_code=code, infusion_code=f"W{week}", start=start, end=start + timedelta(minutes=45), dose_value=Decimal(1))
        out.append(("MedicationAdministration", infusion_to_medication_administration(inf)))
    base = {
        "tjc28": rng.uniform(6, 20), "sjc28": rng.uniform(4, 16), "ptga": rng.uniform(5, 9), "ega": rng.uniform(4, 8.5),
        "pain": rng.uniform(45, 85), "haq_di": rng.uniform(0.8, 2.2), "esr": rng.uniform(15, 70), "crp": rng.uniform(3, 40),
        "il10": rng.uniform(2, 7), "tnf_alpha": rng.uniform(10, 30), "treg_pct": rng.uniform(2, 6), "th17_pct": rng.uniform(0.8, 3),
    }
    response = rng.uniform(0.3, 1.1)  # fraction of baseline remaining at W24
    for visit, target, lo, hi in VISITS:
        day = day0 + timedelta(days=target + rng.randint(lo, hi))
        share = target / 168
        factor = 1 + (response - 1) * share
        for measure in MEASURES:
            f = factor if measure not in ("il10", "treg_pct") else 2 - factor
            raw = base[measure] * f * rng.uniform(0.9, 1.1)
            unit = {"tjc28": "{#}", "sjc28": "{#}", "ptga": "{score}", "ega": "{score}", "pain": "mm", "haq_di": "{score}", "esr": "mm/h",
                    "crp": "mg/L", "il10": "pg/mL", "tnf_alpha": "pg/mL", "treg_pct": "%", "th17_pct": "%"}[measure]
            if measure in ("tjc28", "sjc28"):
                value = _q(raw, 1, 0, 28)
            elif measure in ("ptga", "ega"):
                value = _q(raw, 0.5, 0, 10)
                if measure == "ptga" and rng.random() < 0.1:
                    value, unit = _q(float(value) * 10, 1, 0, 100), "mm"
            elif measure == "pain":
                value = _q(raw, 1, 0, 100)
            elif measure == "haq_di":
                value = _q(raw, 0.125, 0, 3)
            elif measure == "esr":
                value = _q(raw, 1, 1, 150)
            elif measure == "crp" and rng.random() < 0.1:
                value, unit = _q(raw / 10, 0.01, 0, 20), "mg/dL"
            else:
                value = _q(raw, 0.1, 0.1, 100 if measure.endswith("pct") else 1000)
            a = Assessment(study_code=STUDY_CODE, subject_code=code, visit_name=visit, effective=day, measure=measure, value=value, unit=unit)  # type: ignore[arg-type]
            out.append(("Observation", assessment_to_observation(a)))
    if rng.random() < 0.5:
        onset = day0 + timedelta(days=rng.choice([1, 2, 29, 57, 90]))
        ae = AdverseEvent(
            study_code=STUDY_CODE, subject_code=code, ae_code="AE1", term=rng.choice(["Headache", "Fever", "Fatigue", "Nausea"]), onset=onset,
            severity=rng.choice(["mild", "mild", "moderate"]), grade=rng.choice([1, 1, 2]), serious=False,
            relatedness=rng.choice(["Possible", "Unlikely", "Probably-Likely"]), outcome="resolved",  # type: ignore[arg-type]
        )
        out.append(("AdverseEvent", adverse_event_to_fhir(ae)))
    return out


def _rows(items: list[tuple[str, dict[str, Any]]], first_key: int) -> dict[str, list[tuple]]:
    cols = table_columns()
    out: dict[str, list[tuple]] = {name: [] for name in cols}
    for i, (rtype, body) in enumerate(items):
        resource_rows(rtype, first_key + i, body["id"], body, LU_BASE_US + (first_key + i) * 1000, cols, out)
    return out


RESOURCES_PER_SUBJECT = 2 + 3 + len(VISITS) * len(MEASURES) + 1  # AE at most
STUDY_KEYS = 10


def chunk_rows(chunk: int, n_subjects: int) -> dict[str, list[tuple]]:
    first = chunk * SUBJECTS_PER_CHUNK
    items: list[tuple[str, dict[str, Any]]] = []
    rng = random.Random(SEED * 1_000_003 + chunk)
    for n in range(first, min(n_subjects, first + SUBJECTS_PER_CHUNK)):
        items.extend(subject_resources(n, rng))
    return _rows(items, STUDY_KEYS + 1 + first * RESOURCES_PER_SUBJECT)


@dataclass(frozen=True)
class _Pop:
    n_observations: int


@dataclass
class StudyRows:
    """What :func:`bench.search_load.bulk_load` needs: ``chunks()``, ``n_rows``, ``pop``."""

    directory: Path
    n_subjects: int
    n_rows: int
    generate_s: float
    n_chunks: int = 1 << 30
    """Subject chunks to load (a prefix of a larger cached study: the same first subjects)."""

    @property
    def pop(self) -> _Pop:
        return _Pop(self.n_subjects * len(VISITS) * len(MEASURES))

    def prefix(self, n_subjects: int) -> "StudyRows":
        """The first ``n_subjects`` (a multiple of the chunk size) of this study."""
        if n_subjects % SUBJECTS_PER_CHUNK or n_subjects > self.n_subjects:
            raise ValueError(f"a prefix needs a multiple of {SUBJECTS_PER_CHUNK} subjects ≤ {self.n_subjects}")
        return StudyRows(self.directory, n_subjects, 0, 0.0, n_subjects // SUBJECTS_PER_CHUNK)

    def chunks(self) -> Iterator[dict[str, list[tuple]]]:
        i = 0
        while i <= self.n_chunks and (p := self.directory / f"chunk_{i:05d}.pkl").exists():
            with open(p, "rb") as fh:
                yield pickle.load(fh)
            i += 1


def _worker(job: tuple[str, int, int]) -> int:
    from service.search.ucum import warm_up

    warm_up()
    path, chunk, n_subjects = job
    rows = chunk_rows(chunk, n_subjects)
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(rows, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)
    return sum(len(v) for v in rows.values())


def _sample(rows: dict[str, list[tuple]], n_keys: int) -> dict[str, list[str]]:
    first = min(r[0] for r in rows["resource"])
    keys = set(range(first, first + n_keys))
    return {t: sorted(repr(r) for r in rs if r[1 if t == "resource_version" else 0] in keys) for t, rs in rows.items()}


def generate(n_subjects: int, *, jobs: int, cache_root: Path = DEFAULT_CACHE, log=print) -> StudyRows:  # type: ignore[no-untyped-def]
    """Rows for an ``n_subjects`` study, from the cache or generated now (``jobs`` processes)."""
    layout = hashlib.sha256(f"{GENERATOR_VERSION}/{SEED}/{SUBJECTS_PER_CHUNK}/{sorted(table_columns().items())}".encode()).hexdigest()[:12]
    directory = cache_root / f"derivation-s{n_subjects}-{layout}"
    done = directory / "complete"
    n_chunks = (n_subjects + SUBJECTS_PER_CHUNK - 1) // SUBJECTS_PER_CHUNK
    if done.exists():
        fresh = chunk_rows(0, 1)  # subject 0 draws the same numbers whatever the study size
        with open(directory / "chunk_00001.pkl", "rb") as fh:
            cached = pickle.load(fh)
        if _sample(cached, 40) == _sample(fresh, 40):
            log(f"  rows from cache {directory} (first subject re-derived with the current service code: identical)")
            return StudyRows(directory, n_subjects, int(done.read_text()), 0.0)
        log(f"  cache {directory} is stale: regenerating")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    t0 = time.perf_counter()
    study = _rows(study_resources(), 1)
    with open(directory / "chunk_00000.pkl", "wb") as fh:
        pickle.dump(study, fh, protocol=pickle.HIGHEST_PROTOCOL)
    n_rows = sum(len(v) for v in study.values())
    jobs_list = [(str(directory / f"chunk_{c + 1:05d}.pkl"), c, n_subjects) for c in range(n_chunks)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, jobs)) as pool:
        for i, n in enumerate(pool.imap_unordered(_worker, jobs_list), 1):
            n_rows += n
            if i % 4 == 0 or i == len(jobs_list):
                log(f"    generated {i}/{len(jobs_list)} chunks of {SUBJECTS_PER_CHUNK} subjects in {time.perf_counter() - t0:.0f} s")
    done.write_text(str(n_rows))
    return StudyRows(directory, n_subjects, n_rows, time.perf_counter() - t0)


__all__ = ["STUDY_CODE", "StudyRows", "chunk_rows", "generate", "study_resources", "subject_resources"]
