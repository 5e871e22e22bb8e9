"""Every code system, code and extension URL the trial mappers use (contract §2, §5).

One place for the constants, so the mappers, the endpoint derivation and the tests agree
on the exact strings. Codes are matched on ``system`` + ``code``, never on display text.

Extensions this service defines (all under ``http://trialfhir.org/fhir/StructureDefinition/``):

``study-visit`` (contract §5)
    ``valueString`` with the visit name (``BL``, ``W4`` … ``W24``) on Observation,
    MeasureReport and Encounter.

``study-endpoint-settings`` (contract §3, per-study settings) — on ResearchStudy, complex:

    ============================  ===============  =====================================
    sub-extension ``url``          value            meaning (default when absent)
    ============================  ===============  =====================================
    ``acrAcutePhaseReactant``      ``valueCode``    ``crp`` or ``esr`` (``crp``)
    ``das28CrpCutPoints``          complex          three ``valueDecimal`` children:
                                                    ``remission`` (< is remission, 2.6),
                                                    ``low`` (≤ is low, 3.2),
                                                    ``moderate`` (≤ is moderate, 5.1;
                                                    above is high)
    ``haqDiScoring``               ``valueCode``    ``adjusted`` (aids/devices and help
                                                    raise a category to 2) or
                                                    ``unadjusted`` (``adjusted``)
    ``booleanRemission2011``       ``valueBoolean`` report the 2011 ACR/EULAR Boolean
                                                    remission (``true``)
    ``booleanRemission2022``       ``valueBoolean`` report the 2022 revision (``true``)
    ============================  ===============  =====================================

    The mappers always write every sub-extension; a reader applies the default for each
    one that is missing (and all defaults when the extension is absent).

``lot-number``
    ``valueString`` on MedicationAdministration: the lot (batch) of the infused product.
    R4 MedicationAdministration has no lot element, and ``Medication.batch`` would force
    one Medication resource per lot instead of the single study-product Medication the
    contract (§2) names; the extension keeps ``medicationReference`` → ``Medication/bm-cmsc``.

``ae-action-taken``
    ``valueCodeableConcept`` on AdverseEvent: action taken with the study treatment
    (CDISC AEACN), coded in the local system (:data:`AE_ACTION_TAKEN_CODES`).

Extensions reused from HL7 IGs:

- ``ae-grade`` (AE Clinical Research R4 back-port IG): CTCAE grade as
  ``valueCodeableConcept``; grades 1–4 with the NCIt codes of the THO value set
  ``adverse-event-clinical-research-grades``, grade 5 (its NCIt code is unverified) with
  the local code ``ctcae-grade-5``. Readers accept the local ``ctcae-grade-N`` codes for
  every grade.
- ``resolve-date`` (same IG): ``valueDateTime``, the date the AE ended/resolved (R4
  AdverseEvent has no end element).
- ``seriousness-criteria`` (same IG): complex, ``criterionCode``
  (``valueCodeableConcept``, ICH E2B(R3) OID codes) + ``criterionPresent``
  (``valueBoolean``); one per criterion met, written only for serious events.
- ``AcceptableOffsetRangeSoa`` (Vulcan Schedule of Activities IG): ``valueRange`` on
  ``PlanDefinition.action.relatedAction``, the visit window (see :mod:`mappers.study`).
- ``workflow-researchStudy`` (FHIR R4 core): ``valueReference`` → ResearchStudy on
  Observation and MedicationAdministration (R4 has no study element on either).
"""

from __future__ import annotations

from typing import Final

# --- code systems -------------------------------------------------------------------

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
MEDDRA: Final = "https://www.meddra.org"
NCIT: Final = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
ICH_E2B: Final = "urn:oid:2.16.840.1.113883.3.989.2.1.1.19"

#: The service's own code system (contract §2, §4).
RA: Final = "http://trialfhir.org/fhir/CodeSystem/ra"

OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
RESEARCH_STUDY_PHASE: Final = "http://terminology.hl7.org/CodeSystem/research-study-phase"
RESEARCH_STUDY_ARM_TYPE: Final = "http://terminology.hl7.org/CodeSystem/research-study-arm-type"
PLAN_DEFINITION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
AE_SERIOUSNESS: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_SEVERITY: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
AE_OUTCOME: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
AE_CAUSALITY_ASSESS: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess"

# --- identifier systems (business keys) ---------------------------------------------

_SID: Final = "http://trialfhir.org/fhir/sid"
#: ResearchStudy.identifier: the study's business code.
STUDY_IDENTIFIER_SYSTEM: Final = f"{_SID}/study"
#: Default registry system for Iranian Registry of Clinical Trials ids (IRCT…).
IRCT_IDENTIFIER_SYSTEM: Final = "https://irct.behdasht.gov.ir"
#: ClinicalTrials.gov (NCT…), for studies registered there.
NCT_IDENTIFIER_SYSTEM: Final = "https://clinicaltrials.gov"
#: MedicationAdministration.identifier value ``{study}|{subject}|{infusion}``.
INFUSION_IDENTIFIER_SYSTEM: Final = f"{_SID}/infusion"
#: Observation.identifier value ``{study}|{subject}|{visit}|{measure}``.
ASSESSMENT_IDENTIFIER_SYSTEM: Final = f"{_SID}/assessment"
#: AdverseEvent.identifier value ``{study}|{subject}|{ae}``.
ADVERSE_EVENT_IDENTIFIER_SYSTEM: Final = f"{_SID}/adverse-event"
#: Group.identifier: the enrolled cohort of a study, value = study code.
COHORT_IDENTIFIER_SYSTEM: Final = f"{_SID}/cohort"


def subject_identifier_system(study_code: str) -> str:
    """The study-scoped system of subject codes (Patient/ResearchSubject.identifier)."""
    return f"{_SID}/study/{study_code}/subject"


def study_code_from_subject_system(system: str | None) -> str | None:
    """Inverse of :func:`subject_identifier_system` (``None`` for any other system)."""
    prefix, suffix = f"{_SID}/study/", "/subject"
    if not system or not system.startswith(prefix) or not system.endswith(suffix):
        return None
    code = system[len(prefix):-len(suffix)]
    return code if code and "/" not in code else None


# --- extension URLs -----------------------------------------------------------------

_SD: Final = "http://trialfhir.org/fhir/StructureDefinition"
EXT_STUDY_VISIT: Final = f"{_SD}/study-visit"
EXT_STUDY_ENDPOINT_SETTINGS: Final = f"{_SD}/study-endpoint-settings"
EXT_LOT_NUMBER: Final = f"{_SD}/lot-number"
EXT_AE_ACTION_TAKEN: Final = f"{_SD}/ae-action-taken"

# sub-extensions of study-endpoint-settings
SETTING_ACR_APR: Final = "acrAcutePhaseReactant"
SETTING_DAS28_CRP_CUT_POINTS: Final = "das28CrpCutPoints"
SETTING_CUT_REMISSION: Final = "remission"
SETTING_CUT_LOW: Final = "low"
SETTING_CUT_MODERATE: Final = "moderate"
SETTING_HAQ_DI_SCORING: Final = "haqDiScoring"
SETTING_BOOLEAN_REMISSION: Final = {"2011": "booleanRemission2011", "2022": "booleanRemission2022"}

_AE_IG: Final = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition"
EXT_AE_GRADE: Final = f"{_AE_IG}/ae-grade"
EXT_AE_RESOLVE_DATE: Final = f"{_AE_IG}/resolve-date"
EXT_AE_SERIOUSNESS_CRITERIA: Final = f"{_AE_IG}/seriousness-criteria"
SERIOUSNESS_CRITERION_CODE: Final = "criterionCode"
SERIOUSNESS_CRITERION_PRESENT: Final = "criterionPresent"

EXT_VULCAN_OFFSET_RANGE: Final = (
    "http://hl7.org/fhir/uv/vulcan-schedule/StructureDefinition/AcceptableOffsetRangeSoa"
)
EXT_WORKFLOW_RESEARCH_STUDY: Final = "http://hl7.org/fhir/StructureDefinition/workflow-researchStudy"

# --- study, product, route, condition -----------------------------------------------

RA_CONDITION_CODE: Final = "69896004"  # SNOMED CT, rheumatoid arthritis (disorder)
RA_CONDITION_DISPLAY: Final = "Rheumatoid arthritis"

PRODUCT_CODE: Final = "bm-cmsc"  # local system RA
PRODUCT_DISPLAY: Final = "Allogeneic bone-marrow-derived clonal mesenchymal stromal cells"

ROUTE_IV_CODE: Final = "47625008"  # SNOMED CT
ROUTE_IV_DISPLAY: Final = "Intravenous route"

DOSE_UNIT: Final = "10*6/kg"  # UCUM
DOSE_UNIT_DISPLAY: Final = "10^6 cells/kg"

# --- measures (contract §2) ---------------------------------------------------------

#: measure key → (system, codes); the first code is the one the service writes, every
#: listed code is recognised on input.
MEASURE_CODES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "tjc28": (LOINC, ("88981-6",)),
    "sjc28": (LOINC, ("88980-8",)),
    "ptga": (LOINC, ("75894-6", "75844-1")),
    "ega": (LOINC, ("75846-6",)),
    "pain": (LOINC, ("38214-3",)),
    "haq_di": (LOINC, ("75874-8",)),
    "esr": (LOINC, ("4537-7", "30341-2")),
    "crp": (LOINC, ("1988-5", "30522-7")),
    "anti_ccp": (LOINC, ("32218-0", "33935-8")),
    "rf": (LOINC, ("11572-5", "11573-3")),
    "il10": (LOINC, ("26848-2",)),
    "tnf_alpha": (LOINC, ("3074-2",)),
    "il17a": (RA, ("il17a",)),
    "treg_pct": (RA, ("treg-pct-cd4",)),
    "th17_pct": (RA, ("th17-pct-cd4",)),
}

#: (system, code) → measure key, for recognising incoming Observations.
CODING_TO_MEASURE: Final[dict[tuple[str, str], str]] = {
    (system, code): measure
    for measure, (system, codes) in MEASURE_CODES.items()
    for code in codes
}

#: Human-readable names written to ``Observation.code.text`` (never used for matching).
MEASURE_TEXT: Final[dict[str, str]] = {
    "tjc28": "Tender joint count (28 joints)",
    "sjc28": "Swollen joint count (28 joints)",
    "ptga": "Patient global assessment of disease activity",
    "ega": "Evaluator global assessment of disease activity",
    "pain": "Patient pain",
    "haq_di": "HAQ-DI total score",
    "esr": "Erythrocyte sedimentation rate",
    "crp": "C reactive protein",
    "anti_ccp": "Cyclic citrullinated peptide antibody",
    "rf": "Rheumatoid factor",
    "il10": "Interleukin 10",
    "tnf_alpha": "Tumor necrosis factor alpha",
    "il17a": "Interleukin 17A",
    "treg_pct": "Regulatory T cells, % of CD4+ T cells",
    "th17_pct": "Th17 cells, % of CD4+ T cells",
}

#: Observation.category written per measure (observation-category code system).
MEASURE_CATEGORY: Final[dict[str, str]] = {
    "tjc28": "exam",
    "sjc28": "exam",
    "ega": "exam",
    "ptga": "survey",
    "pain": "survey",
    "haq_di": "survey",
    "esr": "laboratory",
    "crp": "laboratory",
    "anti_ccp": "laboratory",
    "rf": "laboratory",
    "il10": "laboratory",
    "tnf_alpha": "laboratory",
    "il17a": "laboratory",
    "treg_pct": "laboratory",
    "th17_pct": "laboratory",
}

#: Observation statuses the service uses (contract §2); every other status is ignored.
USED_OBSERVATION_STATUSES: Final = frozenset({"final", "amended", "corrected"})

# --- adverse events -----------------------------------------------------------------

SERIOUS: Final = "Serious"
NON_SERIOUS: Final = "Non-serious"

AE_SEVERITY_DISPLAY: Final = {"mild": "Mild", "moderate": "Moderate", "severe": "Severe"}

AE_OUTCOME_DISPLAY: Final = {
    "resolved": "Resolved",
    "recovering": "Recovering",
    "ongoing": "Ongoing",
    "resolvedWithSequelae": "Resolved with Sequelae",
    "fatal": "Fatal",
    "unknown": "Unknown",
}

#: WHO-UMC causality categories as R4 adverse-event-causality-assess codes.
AE_CAUSALITY_DISPLAY: Final = {
    "Certain": "Certain",
    "Probably-Likely": "Probably/Likely",
    "Possible": "Possible",
    "Unlikely": "Unlikely",
    "Conditional-Classified": "Conditional/Classified",
    "Unassessable-Unclassifiable": "Unassessable/Unclassifiable",
}
#: Causality categories counted as "related" in the safety summary (contract §4).
RELATED_CAUSALITY: Final = frozenset({"Certain", "Probably-Likely", "Possible"})

#: CTCAE grade → (system, code, display) written in the ae-grade extension.
AE_GRADE_CODINGS: Final[dict[int, tuple[str, str, str]]] = {
    1: (NCIT, "C41338", "Grade 1 Mild Adverse Event"),
    2: (NCIT, "C41339", "Grade 2 Moderate Adverse Event"),
    3: (NCIT, "C41340", "Grade 3 Severe Adverse Event"),
    4: (NCIT, "C41337", "Grade 4 Life Threatening or Disabling Adverse Event"),
    5: (RA, "ctcae-grade-5", "Grade 5 Death Related to Adverse Event"),
}
#: Every (system, code) read back as a grade, the local ``ctcae-grade-N`` codes included.
AE_GRADE_FROM_CODING: Final[dict[tuple[str, str], int]] = {
    **{(system, code): grade for grade, (system, code, _) in AE_GRADE_CODINGS.items()},
    **{(RA, f"ctcae-grade-{grade}"): grade for grade in range(1, 6)},
}

#: Seriousness criterion (schema key) → ICH E2B(R3) code used by the AE back-port IG.
SERIOUSNESS_CRITERIA_CODES: Final[dict[str, tuple[str, str]]] = {
    "results-in-death": ("34", "Results In Death"),
    "life-threatening": ("21", "Is Life Threatening"),
    "hospitalization": ("33", "Requires Inpatient Hospitalization"),
    "disability": ("35", "Results In Persistent Or Significant Disability"),
    "congenital-anomaly": ("12", "Congenital Anomaly or Birth Defect"),
    "other-medically-important": ("26", "Other Medically Important Condition"),
}
SERIOUSNESS_CRITERIA_FROM_CODE: Final[dict[str, str]] = {
    code: key for key, (code, _) in SERIOUSNESS_CRITERIA_CODES.items()
}

#: Action taken with the study treatment (CDISC AEACN) → local code display.
AE_ACTION_TAKEN_CODES: Final[dict[str, str]] = {
    "dose-not-changed": "Dose not changed",
    "dose-reduced": "Dose reduced",
    "dose-increased": "Dose increased",
    "drug-interrupted": "Drug interrupted",
    "drug-withdrawn": "Drug withdrawn",
    "not-applicable": "Not applicable",
    "unknown": "Unknown",
}

# --- studies ------------------------------------------------------------------------

RESEARCH_STUDY_PHASE_DISPLAY: Final = {
    "n-a": "N/A",
    "early-phase-1": "Early Phase 1",
    "phase-1": "Phase 1",
    "phase-1-phase-2": "Phase 1/Phase 2",
    "phase-2": "Phase 2",
    "phase-2-phase-3": "Phase 2/Phase 3",
    "phase-3": "Phase 3",
    "phase-4": "Phase 4",
}

ARM_TYPE_DISPLAY: Final = {
    "experimental": "Experimental",
    "active-comparator": "Active Comparator",
    "placebo-comparator": "Placebo Comparator",
    "sham-comparator": "Sham Comparator",
    "no-intervention": "No Intervention",
    "other-arm-type": "Other",
}

#: PlanDefinition.action.id of the index event every visit is timed from (day 0).
DAY0_ACTION_ID: Final = "day-0"
