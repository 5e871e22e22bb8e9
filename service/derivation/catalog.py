"""The derived outputs of contract §4, as data: code, value kind, rounding, unit, summary.

One :class:`OutputDef` per output code of the local code system
``http://trialfhir.org/fhir/CodeSystem/ra`` (contract §4 table, in its order). Every other
module (engine, FHIR outputs, MeasureReports, CSV columns) iterates this table, so adding
an output is one row here plus its computation in :mod:`service.derivation.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Optional

from mappers import codes


class Kind(StrEnum):
    """How the value is written (contract §4 "value" column)."""

    QUANTITY = "quantity"  #: valueQuantity, rounded half away from zero
    CATEGORY = "category"  #: valueCodeableConcept in the local system
    BOOLEAN = "boolean"  #: valueBoolean


class Summary(StrEnum):
    """Which cohort summary the output gets (contract §4 "Cohort summaries")."""

    BINARY = "binary"  #: proportion of responders, observed and NRI, Clopper–Pearson CI
    CONTINUOUS = "continuous"  #: n, mean, SD, median, min, max of value and change
    NONE = "none"  #: categories: per-subject only


@dataclass(frozen=True, slots=True)
class OutputDef:
    """One output code of contract §4."""

    code: str
    display: str
    kind: Kind
    summary: Summary
    decimals: Optional[int] = None
    """Decimals of ``valueQuantity`` (contract §4: 2 for DAS28, 1 for SDAI/CDAI …)."""
    unit: Optional[str] = None
    """UCUM code of ``valueQuantity``."""
    loinc: Optional[str] = None
    """The LOINC code contract §4 names next to the local one (SDAI 75845-8, CDAI 75847-4)."""
    change: bool = False
    """A change endpoint: exists for visits after BL only (contract §4 rules)."""
    measures: tuple[str, ...] = ()
    """Input measures (keys of :data:`mappers.codes.MEASURE_CODES`) the output reads, for
    the note naming a set-aside input (contract §2)."""


_DAS_ESR = ("tjc28", "sjc28", "esr", "ptga")
_DAS_CRP = ("tjc28", "sjc28", "crp", "ptga")
_SDAI = ("tjc28", "sjc28", "ptga", "ega", "crp")
_CDAI = ("tjc28", "sjc28", "ptga", "ega")
_ACR = ("tjc28", "sjc28", "pain", "ptga", "ega", "haq_di", "crp", "esr")
_BOOL = ("tjc28", "sjc28", "crp", "ptga")

OUTPUTS: Final[tuple[OutputDef, ...]] = (
    OutputDef("das28-esr", "DAS28-ESR", Kind.QUANTITY, Summary.CONTINUOUS, 2, "{score}", measures=_DAS_ESR),
    OutputDef("das28-crp", "DAS28-CRP", Kind.QUANTITY, Summary.CONTINUOUS, 2, "{score}", measures=_DAS_CRP),
    OutputDef("sdai", "Simplified disease activity index (SDAI)", Kind.QUANTITY, Summary.CONTINUOUS, 1, "{score}", "75845-8", measures=_SDAI),
    OutputDef("cdai", "Clinical disease activity index (CDAI)", Kind.QUANTITY, Summary.CONTINUOUS, 1, "{score}", "75847-4", measures=_CDAI),
    OutputDef("das28-esr-activity", "DAS28-ESR disease activity", Kind.CATEGORY, Summary.NONE, measures=_DAS_ESR),
    OutputDef("das28-crp-activity", "DAS28-CRP disease activity", Kind.CATEGORY, Summary.NONE, measures=_DAS_CRP),
    OutputDef("sdai-activity", "SDAI disease activity", Kind.CATEGORY, Summary.NONE, measures=_SDAI),
    OutputDef("cdai-activity", "CDAI disease activity", Kind.CATEGORY, Summary.NONE, measures=_CDAI),
    OutputDef("acr20", "ACR20 response", Kind.BOOLEAN, Summary.BINARY, change=True, measures=_ACR),
    OutputDef("acr50", "ACR50 response", Kind.BOOLEAN, Summary.BINARY, change=True, measures=_ACR),
    OutputDef("acr70", "ACR70 response", Kind.BOOLEAN, Summary.BINARY, change=True, measures=_ACR),
    OutputDef("eular-response-esr", "EULAR response (DAS28-ESR)", Kind.CATEGORY, Summary.NONE, change=True, measures=_DAS_ESR),
    OutputDef("eular-response-crp", "EULAR response (DAS28-CRP)", Kind.CATEGORY, Summary.NONE, change=True, measures=_DAS_CRP),
    OutputDef("boolean-remission-2011", "ACR/EULAR Boolean remission (2011)", Kind.BOOLEAN, Summary.BINARY, measures=_BOOL),
    OutputDef("boolean-remission-2022", "ACR/EULAR Boolean remission (2022)", Kind.BOOLEAN, Summary.BINARY, measures=_BOOL),
    OutputDef("haq-di-change", "HAQ-DI change from baseline", Kind.QUANTITY, Summary.CONTINUOUS, 2, "{score}", change=True, measures=("haq_di",)),
    OutputDef("haq-di-mcid", "HAQ-DI improvement of at least 0.22 (MCID)", Kind.BOOLEAN, Summary.BINARY, change=True, measures=("haq_di",)),
    OutputDef("pain-change", "Pain change from baseline", Kind.QUANTITY, Summary.CONTINUOUS, 1, "mm", change=True, measures=("pain",)),
    OutputDef("treg-th17-ratio", "Treg/Th17 ratio", Kind.QUANTITY, Summary.CONTINUOUS, 2, "1", measures=("treg_pct", "th17_pct")),
)

BY_CODE: Final[dict[str, OutputDef]] = {o.code: o for o in OUTPUTS}

#: Displays of the category codes (same local system, contract §4). ``moderate`` serves
#: both the activity categories and the EULAR response, hence the neutral displays.
CATEGORY_DISPLAY: Final[dict[str, str]] = {
    "remission": "Remission",
    "low": "Low",
    "moderate": "Moderate",
    "high": "High",
    "good": "Good",
    "none": "None",
}


@dataclass(frozen=True, slots=True)
class InputEndpoint:
    """A measured input summarised like a continuous endpoint (value and change from BL).

    Not an output code of §4: the pilot's biomarker findings (contract §6: IL-10 up,
    TNF-α and IL-17A down at W24) are summarised with Measures of these codes.
    """

    code: str
    measure: str
    display: str
    unit: str


INPUT_ENDPOINTS: Final[tuple[InputEndpoint, ...]] = (
    InputEndpoint("il10", "il10", "Interleukin 10", "pg/mL"),
    InputEndpoint("tnf-alpha", "tnf_alpha", "Tumor necrosis factor alpha", "pg/mL"),
    InputEndpoint("il17a", "il17a", "Interleukin 17A", "pg/mL"),
)

#: The category code of every derived Observation (local system).
DERIVED_CATEGORY: Final = "derived"
DERIVED_CATEGORY_DISPLAY: Final = "Derived endpoint"
#: Observation.identifier system of derived Observations: ``{study}|{subject}|{visit}|{code}``.
DERIVED_IDENTIFIER_SYSTEM: Final = "http://trialfhir.org/fhir/sid/derived"
#: Canonical base of the Measures the service serves (contract §5).
MEASURE_BASE: Final = "http://trialfhir.org/fhir/Measure"
SAFETY_CODE: Final = "safety"

assert not set(BY_CODE) & {m.replace("_", "-") for m in codes.MEASURE_CODES}, "output codes must not collide with input ids"

__all__ = [
    "BY_CODE",
    "CATEGORY_DISPLAY",
    "DERIVED_CATEGORY",
    "DERIVED_CATEGORY_DISPLAY",
    "DERIVED_IDENTIFIER_SYSTEM",
    "INPUT_ENDPOINTS",
    "InputEndpoint",
    "Kind",
    "MEASURE_BASE",
    "OUTPUTS",
    "OutputDef",
    "SAFETY_CODE",
    "Summary",
]
