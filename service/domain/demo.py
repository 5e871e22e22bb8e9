"""The demo study (contract §6): a synthetic rendering of the BM-cMSC pilot.

Phase I, allogeneic bone-marrow-derived clonal MSCs in refractory RA, registration
IRCT20080728001031N29: 6 subjects, infusions at weeks 0, 4 and 8, assessments at BL,
W4, W8, W12, W16 and W24 with every input of contract §2, a handful of non-serious
adverse events and no SAE.

**The numbers are invented** (plausible, not the trial's data). They are chosen so the
derived endpoints reproduce what the pilot's abstract reports: ACR20 at W16 in 4 of 6
subjects; at W24 against BL pain lower in 3 subjects, SDAI and CDAI lower in 3, IL-10
higher in 5 with TNF-α and IL-17A lower in the same 5; no serious adverse event.
Each subject follows a trajectory: at each visit its clinical measures are a fraction of
baseline (S01–S04 respond by W16, S04 loses the response by W24, S05 and S06 do not
respond); its cytokines move the same way in S01–S05 and the other way in S06.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from schemas.trial import AdverseEvent, Assessment, Infusion, Study, StudyIdentifier, Subject

STUDY_CODE = "BM-CMSC-RA"
TEHRAN = timezone(timedelta(hours=3, minutes=30))
VISITS = [("BL", -2), ("W4", 28), ("W8", 57), ("W12", 83), ("W16", 113), ("W24", 166)]

#: subject → (sex, birth year, baseline values)
BASELINES: dict[str, tuple[str, int, dict[str, Decimal]]] = {
    "S01": ("female", 1972, {"tjc28": Decimal(12), "sjc28": Decimal(9), "ptga": Decimal("7.5"), "ega": Decimal("7.0"), "pain": Decimal(72), "haq_di": Decimal("1.75"), "crp": Decimal("18.4"), "esr": Decimal(42)}),
    "S02": ("female", 1968, {"tjc28": Decimal(15), "sjc28": Decimal(11), "ptga": Decimal("8.0"), "ega": Decimal("7.5"), "pain": Decimal(80), "haq_di": Decimal("2.00"), "crp": Decimal("24.0"), "esr": Decimal(55)}),
    "S03": ("male", 1979, {"tjc28": Decimal(10), "sjc28": Decimal(8), "ptga": Decimal("6.5"), "ega": Decimal("6.0"), "pain": Decimal(65), "haq_di": Decimal("1.50"), "crp": Decimal("12.6"), "esr": Decimal(36)}),
    "S04": ("female", 1983, {"tjc28": Decimal(14), "sjc28": Decimal(10), "ptga": Decimal("7.0"), "ega": Decimal("6.5"), "pain": Decimal(70), "haq_di": Decimal("1.625"), "crp": Decimal("15.2"), "esr": Decimal(40)}),
    "S05": ("female", 1965, {"tjc28": Decimal(10), "sjc28": Decimal(7), "ptga": Decimal("6.0"), "ega": Decimal("5.5"), "pain": Decimal(60), "haq_di": Decimal("1.25"), "crp": Decimal("9.8"), "esr": Decimal(30)}),
    "S06": ("male", 1974, {"tjc28": Decimal(11), "sjc28": Decimal(8), "ptga": Decimal("6.5"), "ega": Decimal("6.0"), "pain": Decimal(68), "haq_di": Decimal("1.375"), "crp": Decimal("13.5"), "esr": Decimal(38)}),
}
#: fraction of baseline remaining at W4, W8, W12, W16, W24
TRAJECTORY: dict[str, list[str]] = {
    "S01": ["0.90", "0.75", "0.60", "0.50", "0.55"],
    "S02": ["0.95", "0.80", "0.70", "0.60", "0.65"],
    "S03": ["0.90", "0.85", "0.75", "0.70", "0.75"],
    "S04": ["0.90", "0.80", "0.75", "0.70", "1.10"],
    "S05": ["1.00", "0.95", "0.95", "0.90", "1.10"],
    "S06": ["1.00", "1.00", "1.05", "1.00", "1.15"],
}
#: (IL-10, TNF-α, IL-17A) baseline in pg/mL, and the W24 factor of each
CYTOKINES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "S01": (("4.2", "18.5", "22.0"), ("1.45", "0.70", "0.72")),
    "S02": (("3.8", "21.0", "25.5"), ("1.50", "0.65", "0.70")),
    "S03": (("5.1", "16.2", "19.8"), ("1.30", "0.75", "0.80")),
    "S04": (("4.6", "19.4", "23.1"), ("1.25", "0.82", "0.85")),
    "S05": (("3.5", "17.8", "20.4"), ("1.20", "0.88", "0.90")),
    "S06": (("4.0", "20.1", "24.2"), ("0.85", "1.12", "1.18")),
}
SEROLOGY = {"anti_ccp": ("[arb'U]/mL", "165"), "rf": ("[IU]/mL", "58")}
UNITS = {"tjc28": "{#}", "sjc28": "{#}", "ptga": "{score}", "ega": "{score}", "pain": "mm", "haq_di": "{score}", "crp": "mg/L", "esr": "mm/h", "il10": "pg/mL", "tnf_alpha": "pg/mL", "il17a": "pg/mL", "treg_pct": "%", "th17_pct": "%", "anti_ccp": "[arb'U]/mL", "rf": "[IU]/mL"}
AES = [
    ("S01", "AE1", "Headache", 1, "mild", "Possible", "resolved", "W0"),
    ("S02", "AE1", "Fever", 1, "mild", "Probably-Likely", "resolved", "W0"),
    ("S03", "AE1", "Fatigue", 1, "mild", "Possible", "resolved", "W4"),
    ("S05", "AE1", "Upper respiratory tract infection", 2, "moderate", "Unlikely", "resolved", "W8"),
    ("S06", "AE1", "Infusion site erythema", 1, "mild", "Certain", "resolved", "W0"),
]


def _q(value: Decimal, places: str) -> Decimal:
    return value.quantize(Decimal(places), rounding=ROUND_HALF_UP)


def _scaled(measure: str, base: Decimal, factor: Decimal) -> Decimal:
    value = base * factor
    if measure in ("tjc28", "sjc28", "pain", "esr"):
        return _q(value, "1")
    if measure in ("ptga", "ega"):
        return min(Decimal(10), _q(value * 2, "1") / 2).quantize(Decimal("0.1"))
    if measure == "haq_di":
        return min(Decimal(3), (_q(value * 8, "1") / 8).quantize(Decimal("0.001")))  # HAQ-DI moves in steps of 1/8
    return _q(value, "0.1")


def day0(subject_code: str) -> date:
    return date(2024, 1, 15) + timedelta(days=7 * (int(subject_code[1:]) - 1))


def study() -> Study:
    return Study(
        code=STUDY_CODE,
        identifiers=[StudyIdentifier(value="IRCT20080728001031N29")],
        title="Allogeneic bone-marrow-derived clonal mesenchymal stromal cells in refractory rheumatoid arthritis (phase I pilot, synthetic demo data)",
        phase="phase-1",
    )


def subjects() -> list[Subject]:
    return [
        Subject(study_code=STUDY_CODE, subject_code=code, sex=sex, birth_year=year, consent_date=day0(code) - timedelta(days=10))  # type: ignore[arg-type]
        for code, (sex, year, _) in BASELINES.items()
    ]


def infusions() -> list[Infusion]:
    out = []
    for code in BASELINES:
        for week in (0, 4, 8):
            start = datetime.combine(day0(code) + timedelta(days=7 * week), time(9, 0), TEHRAN)
            out.append(
                Infusion(study_code=STUDY_CODE, subject_code=code, infusion_code=f"W{week}", start=start, end=start + timedelta(minutes=45), dose_value=Decimal(1), lot=f"BMC-24-{week:02d}")
            )
    return out


def assessments() -> list[Assessment]:
    out: list[Assessment] = []
    for code, (_, _, base) in BASELINES.items():
        factors = [Decimal(1)] + [Decimal(f) for f in TRAJECTORY[code]]
        (il10, tnf, il17), (f_il10, f_tnf, f_il17) = CYTOKINES[code]
        for (visit, day), factor in zip(VISITS, factors):
            when = day0(code) + timedelta(days=day)
            values: dict[str, Decimal] = {m: (_scaled(m, v, factor) if visit != "BL" else v) for m, v in base.items()}
            progress = (factor - 1) if visit != "BL" else Decimal(0)
            # cytokines drift from baseline to their W24 level in proportion to the visit
            share = Decimal(day) / Decimal(166) if visit != "BL" else Decimal(0)
            values["il10"] = _q(Decimal(il10) * (1 + (Decimal(f_il10) - 1) * share), "0.1")
            values["tnf_alpha"] = _q(Decimal(tnf) * (1 + (Decimal(f_tnf) - 1) * share), "0.1")
            values["il17a"] = _q(Decimal(il17) * (1 + (Decimal(f_il17) - 1) * share), "0.1")
            values["treg_pct"] = _q(Decimal("4.0") - progress * Decimal("3"), "0.1")
            values["th17_pct"] = _q(Decimal("1.6") + progress * Decimal("1.2"), "0.1")
            if visit in ("BL", "W24"):
                for measure, (unit, value) in SEROLOGY.items():
                    values[measure] = Decimal(value) if visit == "BL" else _q(Decimal(value) * factor, "1")
            for measure, value in values.items():
                out.append(
                    Assessment(study_code=STUDY_CODE, subject_code=code, visit_name=visit, effective=when, measure=measure, value=value, unit=UNITS[measure])  # type: ignore[arg-type]
                )
    return out


def adverse_events() -> list[AdverseEvent]:
    out = []
    for subject, ae_code, term, grade, severity, relatedness, outcome, infusion in AES:
        onset = day0(subject) + timedelta(days=7 * int(infusion[1:]) + 1)
        out.append(
            AdverseEvent(
                study_code=STUDY_CODE, subject_code=subject, ae_code=ae_code, term=term, onset=onset, end=onset + timedelta(days=3),
                severity=severity, grade=grade, serious=False, relatedness=relatedness, outcome=outcome, infusion_code=infusion,  # type: ignore[arg-type]
            )
        )
    return out


def load_demo(service: Any, *, force: bool = False) -> bool:
    """Write the demo study unless it exists (returns whether it was written)."""
    from service.fhir.outcome import FhirError

    if not force:
        try:
            service.get_study(STUDY_CODE)
            return False
        except FhirError:
            pass
    from mappers.adverse_event import adverse_event_to_fhir
    from mappers.assessment import assessment_to_observation
    from mappers.infusion import infusion_to_medication_administration
    from mappers.study import study_to_fhir
    from mappers.subject import subject_to_fhir

    s = study()
    subs = subjects()
    res = study_to_fhir(s, subs)
    resources: list[dict[str, Any]] = [res.medication, res.plan_definition, res.group, res.research_study]
    for subject in subs:
        resources.extend(subject_to_fhir(subject))
    resources.extend(infusion_to_medication_administration(i) for i in infusions())
    resources.extend(assessment_to_observation(a) for a in assessments())
    resources.extend(adverse_event_to_fhir(ae) for ae in adverse_events())
    service.write(resources)
    return True
