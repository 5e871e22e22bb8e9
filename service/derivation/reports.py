"""MeasureReports and Measures (contract §5).

Every MeasureReport carries the ``identifier`` ``http://trialfhir.org/fhir/sid/derived`` |
``{study}|{code}|{visit}`` (``{study}|safety``), by which a later derivation finds the
study's stored reports (and deletes those it no longer produces, :mod:`.storing`).

**Binary output × visit** — ``MeasureReport/{study}-{code}-{visit}``: ``status`` complete,
``type`` summary, ``measure`` ``http://trialfhir.org/fhir/Measure/{code}``, the study-visit
extension, ``period`` = the calendar span of the cohort's windows for the visit,
``improvementNotation`` increase, and two groups, each with the populations
``initial-population`` (the cohort), ``denominator`` and ``numerator`` (responders) and a
``measureScore`` (the proportion, 4 decimals; absent when the denominator is 0):

- ``group[0]`` code ``observed``: denominator = evaluable subjects;
- ``group[1]`` code ``nri``: denominator = the whole cohort (non-responder imputation).

Each group also carries the exact Clopper–Pearson 95 % interval in the extension
``http://trialfhir.org/fhir/StructureDefinition/confidence-interval-95`` (``valueRange``,
4 decimals). ``evaluatedResource`` lists the cohort's derived Observations of the visit.

**Continuous output × visit** — same naming, ``continuous-variable`` Measure. One group per
statistic: ``value-mean``, ``value-sd``, ``value-median``, ``value-min``, ``value-max``
and, where a change from baseline exists, ``change-mean`` … ``change-max`` plus
``change-decreased``, ``change-increased``, ``change-unchanged`` (subjects, in
``measureScore``). Every group has ``initial-population`` (the cohort) and
``measure-population`` (the n the statistic runs over); ``measureScore`` is the statistic
(4 decimals, the endpoint's unit), absent when undefined (no values; SD with n < 2).

**Safety** — ``MeasureReport/{study}-safety``, ``measure`` ``…/Measure/safety``: one group
per stratum of :data:`.safety.STRATA` (zeros included), the count in ``measureScore`` and
in an ``initial-population`` population.

**Measures** — ``Measure/{code}`` (``url`` ``…/Measure/{code}``, ``status`` active,
``scoring`` proportion / continuous-variable / cohort for safety).

Nothing here depends on the time of the derivation, so an unchanged input gives byte-equal
resources and the store keeps the version (contract §5: never a duplicate).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any, Final, Optional

from mappers import codes, ids
from service.derivation.catalog import BY_CODE, DERIVED_IDENTIFIER_SYSTEM, INPUT_ENDPOINTS, MEASURE_BASE, OUTPUTS, SAFETY_CODE, Summary
from service.derivation.records import StudyContext
from service.derivation.safety import OUTCOMES, STRATA, SafetySummary
from service.derivation.summaries import BinaryRow, ContinuousRow
from service.endpoints.rounding import round_half_away
from service.endpoints.statistics import ConfidenceInterval, ContinuousSummary

POPULATION: Final = "http://terminology.hl7.org/CodeSystem/measure-population"
SCORING: Final = "http://terminology.hl7.org/CodeSystem/measure-scoring"
IMPROVEMENT: Final = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
EXT_CI: Final = "http://trialfhir.org/fhir/StructureDefinition/confidence-interval-95"
_PLACES = 4
_STATS = ("mean", "sd", "median", "minimum", "maximum")
_STAT_CODE = {"mean": "mean", "sd": "sd", "median": "median", "minimum": "min", "maximum": "max"}


def report_id(study: StudyContext, code: str, visit: Optional[str] = None) -> str:
    return ids.make_id(study.code, code, visit) if visit else ids.make_id(study.code, code)


def _population(code: str, count: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": POPULATION, "code": code}]}, "count": count}


def _concept(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": codes.RA, "code": code}], "text": text}


def _score(value: Optional[Decimal], unit: Optional[str] = None) -> Optional[dict[str, Any]]:
    if value is None:
        return None
    out: dict[str, Any] = {"value": round_half_away(value, _PLACES)}
    if unit is not None:
        out.update({"unit": unit, "system": codes.UCUM, "code": unit})
    return out


def _ci(ci: Optional[ConfidenceInterval]) -> list[dict[str, Any]]:
    if ci is None:
        return []
    return [{
        "url": EXT_CI,
        "valueRange": {"low": {"value": round_half_away(ci.lower, _PLACES)}, "high": {"value": round_half_away(ci.upper, _PLACES)}},
    }]


def _group(code: str, text: str, populations: list[dict[str, Any]], score: Optional[dict[str, Any]], extension: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    group: dict[str, Any] = {}
    if extension:
        group["extension"] = list(extension)
    group["code"] = _concept(code, text)
    group["population"] = populations
    if score is not None:
        group["measureScore"] = score
    return group


def _base(study: StudyContext, code: str, visit: Optional[str], period: tuple[date, date]) -> dict[str, Any]:
    extension = [{"url": codes.EXT_WORKFLOW_RESEARCH_STUDY, "valueReference": {"reference": f"ResearchStudy/{study.resource_id}"}}]
    if visit is not None:
        extension.insert(0, {"url": codes.EXT_STUDY_VISIT, "valueString": visit})
    return {
        "resourceType": "MeasureReport",
        "id": report_id(study, code, visit),
        "extension": extension,
        "identifier": [{"system": DERIVED_IDENTIFIER_SYSTEM, "value": "|".join((study.code, code, visit) if visit else (study.code, code))}],
        "status": "complete",
        "type": "summary",
        "measure": f"{MEASURE_BASE}/{code}",
        "period": {"start": period[0].isoformat(), "end": period[1].isoformat()},
    }


def binary_report(study: StudyContext, row: BinaryRow, period: tuple[date, date], evaluated: list[str]) -> dict[str, Any]:
    s = row.summary
    report = _base(study, row.code, row.visit.name, period)
    report["improvementNotation"] = {"coding": [{"system": IMPROVEMENT, "code": "increase"}]}
    report["group"] = [
        _group(
            "observed", "Observed: responders among evaluable subjects",
            [_population("initial-population", s.cohort), _population("denominator", s.evaluable), _population("numerator", s.responders)],
            _score(s.proportion), _ci(s.ci),
        ),
        _group(
            "nri", "Non-responder imputation: responders among the whole cohort",
            [_population("initial-population", s.cohort), _population("denominator", s.cohort), _population("numerator", s.responders)],
            _score(s.proportion_nri), _ci(s.ci_nri),
        ),
    ]
    if evaluated:
        report["evaluatedResource"] = [{"reference": ref} for ref in evaluated]
    return report


def _stat_groups(kind: str, summary: ContinuousSummary, cohort: int, unit: str) -> list[dict[str, Any]]:
    pops = [_population("initial-population", cohort), _population("measure-population", summary.n)]
    return [
        _group(f"{kind}-{_STAT_CODE[stat]}", f"{kind} {_STAT_CODE[stat]}", pops, _score(getattr(summary, stat), unit))
        for stat in _STATS
    ]


def continuous_report(study: StudyContext, row: ContinuousRow, period: tuple[date, date], evaluated: list[str]) -> dict[str, Any]:
    report = _base(study, row.code, row.visit.name, period)
    groups = _stat_groups("value", row.value, row.cohort, row.unit)
    if row.change is not None and row.directions is not None:
        groups += _stat_groups("change", row.change, row.cohort, row.unit)
        pops = [_population("initial-population", row.cohort), _population("measure-population", row.change.n)]
        for name in ("decreased", "increased", "unchanged"):
            count = getattr(row.directions, name)
            groups.append(_group(f"change-{name}", f"subjects whose value {name} from baseline", pops, {"value": Decimal(count)}))
    report["group"] = groups
    if evaluated:
        report["evaluatedResource"] = [{"reference": ref} for ref in evaluated]
    return report


def safety_report(study: StudyContext, safety: SafetySummary, period: tuple[date, date]) -> dict[str, Any]:
    report = _base(study, SAFETY_CODE, None, period)
    groups = []
    for stratum in STRATA:
        count = safety.study[stratum]
        group = _group(stratum, stratum, [_population("initial-population", count)], {"value": Decimal(count)})
        if stratum in OUTCOMES:
            group["code"]["coding"].append({"system": codes.AE_OUTCOME, "code": stratum})
        groups.append(group)
    report["group"] = groups
    events = [e.ref for e in safety.events]
    if events:
        report["evaluatedResource"] = [{"reference": ref} for ref in events]
    return report


def _name(code: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", code).upper()


def measure(code: str, title: str, scoring: str, description: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Measure",
        "id": code,
        "url": f"{MEASURE_BASE}/{code}",
        "name": _name(code),
        "title": title,
        "status": "active",
        "description": description,
        "scoring": {"coding": [{"system": SCORING, "code": scoring}]},
    }
    if scoring == "proportion":
        out["improvementNotation"] = {"coding": [{"system": IMPROVEMENT, "code": "increase"}]}
    return out


def measures(output_codes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The Measure of every summarised output code, the summarised inputs and safety."""
    out = []
    for o in OUTPUTS:
        if o.code not in output_codes or o.summary is Summary.NONE:
            continue
        if o.summary is Summary.BINARY:
            text = (f"Proportion of subjects with {o.display} at a visit (trialfhir contract §4). Group 'observed': "
                    "among subjects with an evaluable value; group 'nri': among the whole cohort (subjects with at least one "
                    "completed infusion of the study product), non-evaluable subjects counted as non-responders. "
                    "Exact Clopper-Pearson 95% CI in the confidence-interval-95 extension.")
            out.append(measure(o.code, o.display, "proportion", text))
        else:
            text = (f"{o.display} at a visit over the cohort: n, mean, SD, median, min and max of the value"
                    + ("" if o.change else " and of the change from baseline") + " (trialfhir contract §4).")
            out.append(measure(o.code, o.display, "continuous-variable", text))
    for e in INPUT_ENDPOINTS:
        out.append(measure(e.code, e.display, "continuous-variable",
                           f"{e.display} ({e.unit}) at a visit over the cohort: n, mean, SD, median, min and max of the value and of the change from baseline."))
    out.append(measure(SAFETY_CODE, "Safety summary", "cohort",
                       "Adverse events of the cohort: subjects with at least one AE, AE and SAE counts, by severity, CTCAE grade, "
                       "relatedness (WHO-UMC Certain, Probably-Likely, Possible = related) and outcome (trialfhir contract §4)."))
    return out


__all__ = ["EXT_CI", "binary_report", "continuous_report", "measure", "measures", "report_id", "safety_report", "BY_CODE"]
