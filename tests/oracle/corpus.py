"""The search corpus: official R4 examples plus a seeded synthetic trial population.

``synthetic_resources(seed)`` builds, deterministically:

- 40 Patients: names with accents (Müller, García, Zoë, Anaïs, Nguyễn …), prefixes and
  suffixes, second names, birthDates at year / month / day precision, genders (some
  missing), MRN identifiers (some with a second system, some without a system), emails
  and phones, addresses, deceased flags and dates, managing organisations, tags,
  profiles and sources;
- ~400 Observations: CRP (LOINC 1988-5) in mg/L *and* mg/dL (so 12 mg/L = 1.2 mg/dL),
  ESR (4537-7) in mm/h, tender joint count (88981-6) in {#}, blood pressure panels with
  components, coded and string results, data-absent reasons; effective as dateTime at
  every precision and several time zones, instants, Periods (closed, open-ended,
  spanning month boundaries); statuses; subjects as relative references, absolute
  references on this server and on another server (same ids), Groups, or none;
- two ResearchStudies, ResearchSubjects linking Patients to them, AdverseEvents,
  MedicationAdministrations, Encounters, Conditions, two Groups and RiskAssessments
  (the number parameter ``probability``).

``load_corpus(client, examples_dir)`` PUTs every resource by id (official examples that
the server refuses are skipped and listed) and reads the store back with unfiltered GET
searches, so the oracle sees exactly what the store holds (meta.lastUpdated …).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from service.fhir import jsonio

EXAMPLE_TYPES = (
    "Patient", "Observation", "Encounter", "Condition", "MedicationAdministration",
    "ResearchStudy", "ResearchSubject", "AdverseEvent", "Practitioner", "Organization",
)
BASE = "http://testserver/fhir"
FHIR_JSON = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
TAGS = "urn:trialfhir:tag"
MRN = "urn:trialfhir:mrn"
PROFILE = "http://trialfhir.org/fhir/StructureDefinition/trial-patient"

FAMILIES = [
    "Müller", "Mueller", "García", "Garcia", "Løkke", "Dupont", "Dupond", "Núñez", "van der Berg", "Smith",
    "Smithson", "Chen", "Åberg", "Çelik", "O'Brien", "Nguyễn", "Żak", "Kowalski", "Björk", "Lefèvre",
]
GIVENS = [
    "José", "Jose", "Zoë", "Anaïs", "Jürgen", "Björn", "Élodie", "Renée", "Ana", "Anna",
    "Annabelle", "Li", "Mary", "Marie", "François", "Søren", "Chloé", "Mateo", "Noémie", "Åsa",
]
CITIES = ["Zürich", "São Paulo", "Paris", "Bern", "Genève", "Lyon", "Lisboa"]
CRP_MG_L = ["0.5", "1.2", "3", "5.0", "8.7", "10", "12", "12.0", "12.5", "15.3", "25", "48.25", "100", "150.0"]
CRP_MG_DL = ["0.05", "0.12", "0.3", "0.50", "0.87", "1", "1.2", "1.20", "1.25", "1.53", "2.5", "4.825", "10", "15"]


def _ascii(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c) and c.isalnum()).lower()


def _effective(rng: random.Random) -> dict[str, Any]:
    """effective[x] at a random precision, zone and shape."""
    month = rng.choice([2, 3, 3, 3, 4, 4, 5, 12])
    year = rng.choice([2023, 2024, 2024, 2024])
    day = rng.choice([1, 14, 15, 15, 16, 28, 29, 30, 31 if month in (3, 5, 12) else 30])
    if month == 2:
        day = min(day, 29 if year == 2024 else 28)
    hour, minute = rng.choice([0, 1, 10, 12, 22, 23]), rng.choice([0, 30, 59])
    kind = rng.choices(
        ["z", "offset", "date", "month", "year", "instant", "period", "period-open", "period-to", "period-day"],
        weights=[20, 15, 15, 6, 3, 6, 12, 5, 3, 10],
    )[0]
    d = f"{year}-{month:02d}-{day:02d}"
    if kind == "z":
        return {"effectiveDateTime": f"{d}T{hour:02d}:{minute:02d}:00Z"}
    if kind == "offset":
        tz = rng.choice(["+02:00", "-05:00", "+14:00", "-10:00", "+00:00", "+05:30"])
        return {"effectiveDateTime": f"{d}T{hour:02d}:{minute:02d}:{rng.choice([0, 15, 59]):02d}{tz}"}
    if kind == "date":
        return {"effectiveDateTime": d}
    if kind == "month":
        return {"effectiveDateTime": f"{year}-{month:02d}"}
    if kind == "year":
        return {"effectiveDateTime": f"{year}"}
    if kind == "instant":
        return {"effectiveInstant": f"{d}T{hour:02d}:{minute:02d}:00.{rng.randint(0, 999):03d}Z"}
    if kind == "period":
        end_month = month + rng.choice([0, 1])
        end_year = year + (end_month > 12)
        end_month = (end_month - 1) % 12 + 1
        return {"effectivePeriod": {"start": f"{d}T08:00:00+01:00", "end": f"{end_year}-{end_month:02d}-{rng.choice([1, 2, 15]):02d}T09:00:00+01:00"}}
    if kind == "period-open":
        return {"effectivePeriod": {"start": f"{d}T08:00:00Z"}}
    if kind == "period-to":
        return {"effectivePeriod": {"end": f"{d}T08:00:00Z"}}
    return {"effectivePeriod": {"start": d, "end": d}}


def _patient(i: int, rng: random.Random, org_ids: list[str], prac_ids: list[str]) -> dict[str, Any]:
    family, given = FAMILIES[i % len(FAMILIES)], GIVENS[(i * 7) % len(GIVENS)]
    name: dict[str, Any] = {"use": "official", "family": family, "given": [given]}
    if rng.random() < 0.3:
        name["given"].append(rng.choice(GIVENS))
    if rng.random() < 0.15:
        name["prefix"] = [rng.choice(["Dr.", "Mrs.", "Prof."])]
    if rng.random() < 0.1:
        name["suffix"] = [rng.choice(["Jr.", "III"])]
    names = [name]
    if rng.random() < 0.2:
        names.append({"use": "maiden", "family": rng.choice(FAMILIES)})
    if rng.random() < 0.1:
        names.append({"use": "nickname", "text": f"{given} the {rng.choice(['Bold', 'Brave', 'Élégant'])}"})
    body: dict[str, Any] = {"resourceType": "Patient", "id": f"syn-pat-{i:02d}", "name": names}
    meta: dict[str, Any] = {}
    if rng.random() < 0.6:
        meta["tag"] = [{"system": TAGS, "code": rng.choice(["cohort-a", "cohort-b"])}]
    if rng.random() < 0.5:
        meta["profile"] = [PROFILE]
    if rng.random() < 0.7:
        meta["source"] = rng.choice(["urn:trialfhir:site:bern#batch1", "urn:trialfhir:site:zurich#batch2", "http://site.example.org/ehr"])
    if meta:
        body["meta"] = meta
    ids = [{"system": MRN, "value": f"MRN-{i:04d}"}]
    if rng.random() < 0.3:
        ids.append({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": "http://hospital.example.org/ids", "value": f"H{rng.randint(1000, 9999)}"})
    if rng.random() < 0.1:
        ids.append({"value": f"LEGACY-{i}"})
    body["identifier"] = ids
    r = rng.random()
    if r < 0.45:
        body["active"] = True
    elif r < 0.6:
        body["active"] = False
    g = rng.random()
    if g < 0.9:
        body["gender"] = ["male", "female", "female", "male", "other", "unknown"][int(g * 100) % 6]
    year = rng.randint(1940, 2005)
    p = rng.random()
    if i in (3, 4):
        body["birthDate"] = ["2000-02-29", "1985-12-31"][i - 3]
    elif p < 0.1:
        body["birthDate"] = f"{year}"
    elif p < 0.25:
        body["birthDate"] = f"{year}-{rng.randint(1, 12):02d}"
    elif p < 0.97:
        body["birthDate"] = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    telecom = []
    if rng.random() < 0.5:
        telecom.append({"system": "email", "value": f"{_ascii(given)}.{i}@example.org", "use": "home"})
    if rng.random() < 0.4:
        telecom.append({"system": "phone", "value": f"+41 44 555 {i:04d}", "use": rng.choice(["home", "mobile"])})
    if telecom:
        body["telecom"] = telecom
    if rng.random() < 0.7:
        city = rng.choice(CITIES)
        body["address"] = [{"use": rng.choice(["home", "work"]), "line": [f"{rng.randint(1, 99)} Hauptstraße"], "city": city,
                            "postalCode": f"{rng.randint(1000, 9999)}", "country": "CH" if city in ("Zürich", "Bern", "Genève") else "FR"}]
    d = rng.random()
    if d < 0.08:
        body["deceasedBoolean"] = True
    elif d < 0.14:
        body["deceasedDateTime"] = rng.choice(["2023-05-01T10:00:00+02:00", "2024-01", "2022-11-30"])
    elif d < 0.2:
        body["deceasedBoolean"] = False
    if rng.random() < 0.6:
        body["managingOrganization"] = {"reference": f"Organization/{rng.choice(org_ids)}"}
    if rng.random() < 0.4:
        body["generalPractitioner"] = [{"reference": f"Practitioner/{rng.choice(prac_ids)}"}]
    if i > 0 and rng.random() < 0.05:
        body["link"] = [{"other": {"reference": f"Patient/syn-pat-{i - 1:02d}"}, "type": "seealso"}]
    return body


def _quantity(value: str, code: str, unit: str | None = None, system: str | None = UCUM) -> dict[str, Any]:
    """A Quantity; without a system it has only the human unit (qty-3: a code needs a system)."""
    q: dict[str, Any] = {"value": Decimal(value), "unit": unit or code}
    if system:
        q["system"] = system
        q["code"] = code
    return q


def _observation(i: int, rng: random.Random, n_patients: int, prac_ids: list[str]) -> dict[str, Any]:
    kind = rng.choices(["crp-l", "crp-dl", "esr", "tjc", "bp", "coded", "string", "absent"], weights=[28, 15, 18, 14, 8, 8, 5, 4])[0]
    body: dict[str, Any] = {"resourceType": "Observation", "id": f"syn-obs-{i:03d}"}
    if rng.random() < 0.1:
        body["meta"] = {"tag": [{"system": TAGS, "code": "reviewed"}]}
    body["identifier"] = [{"system": "urn:trialfhir:obs", "value": f"OBS-{i:04d}"}]
    body["status"] = rng.choices(["final", "preliminary", "amended", "cancelled", "entered-in-error"], weights=[60, 15, 10, 8, 7])[0]
    cat = {"crp-l": "laboratory", "crp-dl": "laboratory", "esr": "laboratory", "tjc": "exam", "bp": "vital-signs"}.get(kind, "laboratory")
    if rng.random() < 0.9:
        body["category"] = [{"coding": [{"system": OBS_CAT, "code": cat}]}]
    if kind in ("crp-l", "crp-dl"):
        codings = [{"system": LOINC, "code": "1988-5", "display": "C reactive protein [Mass/volume] in Serum or Plasma"}]
        if rng.random() < 0.2:
            codings.append({"system": "urn:trialfhir:local", "code": "crp", "display": "CRP (hs)"})
        if rng.random() < 0.05:
            codings = [{"code": "1988-5"}]
        code = {"coding": codings, "text": "CRP"}
    elif kind == "esr":
        code = {"coding": [{"system": LOINC, "code": "4537-7", "display": "Erythrocyte sedimentation rate by Westergren method"}], "text": "ESR"}
    elif kind == "tjc":
        code = {"coding": [{"system": LOINC, "code": "88981-6", "display": "Tender joint count total"}], "text": "Tender joints (28)"}
    elif kind == "bp":
        code = {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure"}
    elif kind == "coded":
        code = {"coding": [{"system": LOINC, "code": "94500-6", "display": "SARS-CoV-2 RNA Resp Ql NAA+probe"}]}
    elif kind == "string":
        code = {"coding": [{"system": LOINC, "code": "8251-1", "display": "Service comment"}]}
    else:
        code = {"coding": [{"system": LOINC, "code": "1988-5", "display": "C reactive protein [Mass/volume] in Serum or Plasma"}], "text": "CRP"}
    body["code"] = code
    s = rng.random()
    if s < 0.8:
        body["subject"] = {"reference": f"Patient/syn-pat-{rng.randrange(n_patients):02d}"}
    elif s < 0.86:
        body["subject"] = {"reference": f"{BASE}/Patient/syn-pat-{rng.randrange(n_patients):02d}"}
    elif s < 0.89:
        # the same id on another server: never this server's Patient
        body["subject"] = {"reference": f"http://other.example.org/fhir/Patient/syn-pat-{rng.randrange(n_patients):02d}"}
    elif s < 0.92:
        body["subject"] = {"reference": "Patient/example"}
    elif s < 0.96:
        body["subject"] = {"reference": "Group/syn-group-1"}
    body.update(_effective(rng))
    if rng.random() < 0.5:
        body["performer"] = [{"reference": f"Practitioner/{rng.choice(prac_ids)}"}]
    if rng.random() < 0.1:
        body["encounter"] = {"reference": f"Encounter/syn-enc-{rng.randrange(6)}"}
    if kind == "crp-l":
        system = UCUM if rng.random() < 0.93 else None
        body["valueQuantity"] = _quantity(rng.choice(CRP_MG_L), "mg/L", system=system)
    elif kind == "crp-dl":
        body["valueQuantity"] = _quantity(rng.choice(CRP_MG_DL), "mg/dL")
    elif kind == "esr":
        body["valueQuantity"] = _quantity(str(rng.randint(2, 80)), "mm/h")
    elif kind == "tjc":
        body["valueQuantity"] = _quantity(str(rng.randint(0, 28)), "{#}", unit="tender joints")
    elif kind == "bp":
        body["component"] = [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": _quantity(str(rng.randint(100, 160)), "mm[Hg]", unit="mmHg")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": _quantity(str(rng.randint(60, 100)), "mm[Hg]", unit="mmHg")},
        ]
    elif kind == "coded":
        detected = rng.random() < 0.4
        body["valueCodeableConcept"] = {
            "coding": [{"system": SNOMED, "code": "260373001" if detected else "260415000", "display": "Detected" if detected else "Not detected"}],
            "text": "Détecté" if detected else "Non détecté",
        }
    elif kind == "string":
        body["valueString"] = rng.choice(["Patient fasting", "Sample hemolysed", "Échantillon hémolysé", "Repeat requested"])
    else:
        body["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": rng.choice(["not-performed", "error"])}]}
    return body


def synthetic_resources(seed: int = 20240601, n_patients: int = 40, n_observations: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    org_ids = ["1", "2", "f001", "hl7"]
    prac_ids = ["example", "f001", "f002", "f201"]
    out: list[dict[str, Any]] = []
    patients = [_patient(i, rng, org_ids, prac_ids) for i in range(n_patients)]
    out += patients
    out += [
        {"resourceType": "Group", "id": "syn-group-1", "type": "person", "actual": True, "name": "RA trial arm A",
         "member": [{"entity": {"reference": f"Patient/syn-pat-{i:02d}"}} for i in range(0, 20)]},
        {"resourceType": "Group", "id": "syn-group-2", "type": "person", "actual": True, "name": "PsA trial",
         "member": [{"entity": {"reference": f"Patient/syn-pat-{i:02d}"}} for i in range(15, 30)]},
    ]
    out += [
        {"resourceType": "ResearchStudy", "id": "syn-study-1", "status": "active",
         "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT01234567"}],
         "title": "Tocilizumab in early Rheumatoid Arthritis",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/research-study-phase", "code": "phase-3"}], "text": "Phase 3"}],
         "condition": [{"coding": [{"system": SNOMED, "code": "69896004", "display": "Rheumatoid arthritis"}]}],
         "keyword": [{"text": "biologic"}, {"coding": [{"system": "urn:trialfhir:kw", "code": "il-6"}]}],
         "enrollment": [{"reference": "Group/syn-group-1"}],
         "period": {"start": "2023-01-01", "end": "2025-12-31"},
         "sponsor": {"reference": "Organization/1"}, "principalInvestigator": {"reference": "Practitioner/f001"}},
        {"resourceType": "ResearchStudy", "id": "syn-study-2", "status": "completed",
         "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT07654321"}],
         "title": "Psoriatic arthritis registry",
         "condition": [{"coding": [{"system": SNOMED, "code": "156370009", "display": "Psoriatic arthritis"}]}],
         "enrollment": [{"reference": "Group/syn-group-2"}],
         "period": {"start": "2022-03", "end": "2024-02-15"}},
    ]
    statuses = ["candidate", "eligible", "on-study", "on-study-intervention", "off-study", "withdrawn"]
    subjects = [(i, 1) for i in range(0, 20)] + [(i, 2) for i in range(15, 30)]
    for n, (i, study) in enumerate(subjects):
        out.append({"resourceType": "ResearchSubject", "id": f"syn-rs-{n:02d}", "status": rng.choice(statuses),
                    "identifier": [{"system": "urn:trialfhir:subject", "value": f"S{study}-{i:03d}"}],
                    "period": {"start": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"},
                    "study": {"reference": f"ResearchStudy/syn-study-{study}"},
                    "individual": {"reference": f"Patient/syn-pat-{i:02d}"}})
    events = [("422587007", "Nausea"), ("25064002", "Headache"), ("271807003", "Eruption of skin"), ("68962001", "Muscle pain")]
    for n in range(10):
        code, display = rng.choice(events)
        ae: dict[str, Any] = {"resourceType": "AdverseEvent", "id": f"syn-ae-{n}", "actuality": rng.choice(["actual", "actual", "potential"]),
                              "event": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                              "subject": {"reference": f"Patient/syn-pat-{rng.randrange(30):02d}"},
                              "date": f"2024-0{rng.randint(1, 6)}-{rng.randint(10, 28)}T{rng.randint(0, 23):02d}:00:00+01:00",
                              "study": [{"reference": f"ResearchStudy/syn-study-{rng.choice([1, 2])}"}]}
        if rng.random() < 0.7:
            ae["seriousness"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                                             "code": rng.choice(["serious", "non-serious"])}]}
        out.append(ae)
    for n in range(6):
        out.append({"resourceType": "Encounter", "id": f"syn-enc-{n}", "status": rng.choice(["finished", "in-progress"]),
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": rng.choice(["AMB", "IMP"])},
                    "subject": {"reference": f"Patient/syn-pat-{rng.randrange(n_patients):02d}"},
                    "period": {"start": f"2024-03-{10 + n:02d}T09:00:00Z", "end": f"2024-03-{10 + n + rng.choice([0, 1, 5]):02d}T17:00:00Z"}})
    for n in range(12):
        ma: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": f"syn-ma-{n:02d}", "status": rng.choice(["completed", "in-progress", "not-done"]),
                              "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rng.choice(["612865", "105585"])}]},
                              "subject": {"reference": f"Patient/syn-pat-{rng.randrange(n_patients):02d}"}}
        if n % 2:
            ma["effectiveDateTime"] = f"2024-0{rng.randint(1, 9)}-{rng.randint(10, 28)}T10:00:00Z"
        else:
            start = rng.randint(10, 25)
            ma["effectivePeriod"] = {"start": f"2024-02-{start}T10:00:00Z", "end": f"2024-02-{start + rng.randint(0, 3)}T23:00:00Z"}
        if n < 4:
            ma["context"] = {"reference": f"Encounter/syn-enc-{n}"}
        out.append(ma)
    for n in range(10):
        out.append({"resourceType": "Condition", "id": f"syn-cond-{n}",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": rng.choice(["active", "remission"])}]},
                    "code": {"coding": [{"system": SNOMED, "code": rng.choice(["69896004", "156370009"])}]},
                    "subject": {"reference": f"Patient/syn-pat-{rng.randrange(n_patients):02d}"},
                    "onsetDateTime": f"20{rng.randint(10, 23)}-0{rng.randint(1, 9)}", "recordedDate": f"2024-01-{rng.randint(10, 28)}"})
    for n in range(12):
        out.append({"resourceType": "RiskAssessment", "id": f"syn-risk-{n:02d}", "status": "final",
                    "subject": {"reference": f"Patient/syn-pat-{rng.randrange(n_patients):02d}"},
                    "occurrenceDateTime": f"2024-0{rng.randint(1, 6)}-{rng.randint(10, 28)}",
                    "prediction": [{"outcome": {"text": rng.choice(["Flare within 6 months", "Remission"])},
                                    "probabilityDecimal": Decimal(rng.choice(["0.05", "0.25", "0.333", "0.8", "0.80", "0.805", "0.85", "1"]))}]})
    out += [_observation(i, rng, n_patients, prac_ids) for i in range(n_observations)]
    return out


def example_resources(examples_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(examples_dir.glob("*.json")):
        if path.name.split("-", 1)[0] not in EXAMPLE_TYPES:
            continue
        try:
            res = jsonio.loads(path.read_bytes())
        except Exception:  # noqa: BLE001
            continue
        if isinstance(res, dict) and res.get("resourceType") in EXAMPLE_TYPES and res.get("id"):
            out.append(res)
    return out


@dataclass
class Loaded:
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    #: a resource whose presence shows the corpus is still in the store
    sentinel: tuple[str, str, str] = ("", "", "")

    def count(self) -> int:
        return sum(len(v) for v in self.resources.values())


def load_corpus(client: Any, examples_dir: Path, *, seed: int = 20240601) -> Loaded:
    """PUT the corpus into the store behind ``client``, then read everything back with
    ``GET /fhir/{type}?_count=1000`` (all pages), checking that lists exactly what was
    written."""
    loaded = Loaded()
    written: list[tuple[str, str]] = []
    for res in example_resources(examples_dir) + synthetic_resources(seed):
        rtype, rid = res["resourceType"], res["id"]
        r = client.put(f"/fhir/{rtype}/{rid}", content=jsonio.dumps(res), headers=FHIR_JSON)
        if r.status_code in (200, 201):
            written.append((rtype, rid))
        else:
            loaded.refused.append((f"{rtype}/{rid}", r.status_code, r.text[:200]))
    for rtype in sorted({t for t, _ in written}):
        url: str | None = f"/fhir/{rtype}?_count=1000"
        while url:
            r = client.get(url, headers={"accept": "application/fhir+json"})
            assert r.status_code == 200, (url, r.status_code, r.text[:300])
            bundle = jsonio.loads(r.content)
            for entry in bundle.get("entry", []):
                res = entry["resource"]
                assert res["id"] not in loaded.resources.get(rtype, {}), f"{rtype}/{res['id']} listed twice"
                loaded.resources.setdefault(rtype, {})[res["id"]] = res
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    got = {(t, i) for t, ids in loaded.resources.items() for i in ids}
    assert got == set(written), f"the unfiltered search does not list exactly what was written: {sorted(got ^ set(written))[:10]}"
    last = written[-1]
    loaded.sentinel = (last[0], last[1], loaded.resources[last[0]][last[1]]["meta"]["versionId"])
    return loaded


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
