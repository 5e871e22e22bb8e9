"""The derivation as plain JSON and as CSV (``GET /api/studies/{code}/endpoints``, contract §5).

**JSON** — the same content as the ``$endpoints`` Bundle, without FHIR wrapping:

- ``study``: code, FHIR id, schedule (and where it came from), settings;
- ``cohort``: subject codes with ≥ 1 completed infusion of the study product;
- ``subjects``: per subject its day 0 (and source), whether in the cohort, and per visit the
  selected inputs (reference, study day, converted values, assigned by encounter or date)
  and every output: ``value`` (as reported: rounded number, category code or boolean;
  ``null`` when not computed), ``unrounded``, ``reason``, ``observation`` (the derived
  Observation), ``derived_from``, ``effective``;
- ``summaries``: ``binary`` (per output × visit: cohort, evaluable, responders, proportion
  and NRI proportion with 95 % CIs, the MeasureReport) and ``continuous`` (n, mean, SD,
  median, min, max of value and change, decreased/increased/unchanged);
- ``safety``: ``study`` (strata over the cohort), ``subjects`` (strata per subject),
  ``events`` (each AE with the infusion it followed);
- ``set_aside`` (inputs not used, with the reason), ``unused`` (usable values no visit
  takes: outside every window, unknown visit name), ``warnings``, ``stored`` (how many
  outputs were created, updated, unchanged; ``deleted``: the stored outputs no longer
  produced, now deleted, :mod:`.storing`).

**CSV** — one row per subject × visit (schedule order), columns:

``study``, ``subject``, ``visit``, ``target_day``, ``in_cohort`` (``true``/``false``),
then one column per output code of contract §4 in its order (``das28-esr`` …
``treg-th17-ratio``; a Boolean remission definition the study does not report has no
column). A cell holds the value as reported — the rounded number, the category code
(``remission``/``low``/``moderate``/``high``, ``good``/``moderate``/``none``) or
``true``/``false`` — and is empty when the output is not computed or does not exist at
that visit (change endpoints at BL). Reasons are in the JSON and the FHIR outputs.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Optional

from service.derivation.engine import Output
from service.derivation.outputs import derived_id, value_element
from service.derivation.reports import report_id
from service.derivation.service import Derivation, Resources, Stored
from service.endpoints.statistics import ConfidenceInterval, ContinuousSummary


def _reported(output: Output) -> Any:
    if output.value is None:
        return None
    name, value = value_element(output)
    if name == "valueQuantity":
        return value["value"]
    if name == "valueCodeableConcept":
        return value["coding"][0]["code"]
    return value


def _ci(ci: Optional[ConfidenceInterval]) -> Optional[list[float]]:
    return None if ci is None else [ci.lower, ci.upper]


def _stats(s: Optional[ContinuousSummary]) -> Optional[dict[str, Any]]:
    if s is None:
        return None
    return {"n": s.n, "mean": s.mean, "sd": s.sd, "median": s.median, "min": s.minimum, "max": s.maximum}


def as_json(d: Derivation, res: Resources, stored: Optional[Stored]) -> dict[str, Any]:
    study = d.data.study
    subjects = []
    for r in d.results:
        visits = []
        for vo in r.visits:
            outputs = {}
            for code, o in vo.outputs.items():
                latest = max(o.inputs, key=lambda s: s.value.source.instant_us).value.source.effective if o.inputs else None
                outputs[code] = {
                    "value": _reported(o),
                    "unrounded": str(o.value) if o.value is not None and not isinstance(o.value, (bool, str)) else None,
                    "reason": o.reason,
                    "observation": f"Observation/{derived_id(study.code, r.subject.code, vo.visit.name, code)}",
                    "derived_from": list(dict.fromkeys(s.value.source.ref for s in o.inputs)),
                    "effective": latest,
                }
            inputs = {
                m: {"source": s.value.source.ref, "study_day": s.study_day, "by_encounter": s.explicit, "values": s.value.canon}
                for m, s in sorted(vo.selected.items())
            }
            visits.append({"visit": vo.visit.name, "target_day": vo.visit.target_day, "inputs": inputs, "outputs": outputs})
        subjects.append({
            "subject": r.subject.code,
            "patient": f"Patient/{r.subject.patient}",
            "day0": r.subject.day0.isoformat() if r.subject.day0 else None,
            "day0_source": r.subject.day0_source,
            "in_cohort": r.subject.treated,
            "visits": visits,
        })
    s = d.summaries
    binary = [
        {
            "code": b.code, "visit": b.visit.name, "cohort": b.summary.cohort, "evaluable": b.summary.evaluable,
            "responders": b.summary.responders, "proportion": b.summary.proportion, "ci95": _ci(b.summary.ci),
            "proportion_nri": b.summary.proportion_nri, "ci95_nri": _ci(b.summary.ci_nri),
            "measure_report": f"MeasureReport/{report_id(study, b.code, b.visit.name)}",
        }
        for b in s.binary
    ]
    continuous = [
        {
            "code": c.code, "visit": c.visit.name, "unit": c.unit, "cohort": c.cohort, "value": _stats(c.value), "change": _stats(c.change),
            "decreased": c.directions.decreased if c.directions else None,
            "increased": c.directions.increased if c.directions else None,
            "unchanged": c.directions.unchanged if c.directions else None,
            "measure_report": f"MeasureReport/{report_id(study, c.code, c.visit.name)}",
        }
        for c in s.continuous
    ]
    events = [
        {
            "adverse_event": e.ref, "subject": e.subject, "term": e.term, "onset": e.onset, "counted": e.actual, "serious": e.serious,
            "severity": e.severity, "grade": e.grade, "causality": list(e.causality), "related": e.related, "outcome": e.outcome,
            "infusion": e.infusion, "infusion_link": e.infusion_link,
        }
        for e in d.safety.events
    ]
    return {
        "study": {
            "code": study.code, "id": study.resource_id, "schedule_source": study.schedule_source,
            "schedule": [v.model_dump(mode="json") for v in study.schedule], "settings": study.settings.model_dump(mode="json"),
        },
        "cohort": list(s.cohort),
        "subjects": subjects,
        "summaries": {"binary": binary, "continuous": continuous},
        "safety": {"study": d.safety.study, "subjects": d.safety.subjects, "events": events,
                   "measure_report": f"MeasureReport/{report_id(study, 'safety')}"},
        "set_aside": [{"source": a.ref, "measure": a.measure, "reason": a.reason, "patient": a.patient} for a in d.data.set_aside],
        "unused": [{"source": ref, "reason": why} for r in d.results for ref, why in r.unused],
        "warnings": d.data.warnings,
        "stored": None if stored is None else {
            "created": stored.created, "updated": stored.updated, "unchanged": stored.unchanged, "deleted": stored.deleted,
        },
    }


def as_csv(d: Derivation) -> str:
    codes = list(d.rules.codes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["study", "subject", "visit", "target_day", "in_cohort", *codes])
    for r in d.results:
        for vo in r.visits:
            cells = []
            for code in codes:
                o = vo.outputs.get(code)
                value = _reported(o) if o is not None else None
                cells.append("" if value is None else ("true" if value is True else "false" if value is False else str(value)))
            writer.writerow([d.data.study.code, r.subject.code, vo.visit.name, vo.visit.target_day, "true" if r.subject.treated else "false", *cells])
    return buffer.getvalue()


__all__ = ["as_csv", "as_json"]
