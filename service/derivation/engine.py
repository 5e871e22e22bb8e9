"""Per subject × visit, every output of contract §4 with the inputs it used.

The formulas and rules are the pure functions of :mod:`service.endpoints` (sources in
their docstrings); this module only feeds them the selected values in the right units
(:mod:`.canonical`) and records, per output, the input values it used — the baseline ones
too for changes, ACR and EULAR (contract §5 ``derivedFrom``). Rules applied here:

- change endpoints (``*-change``, ``haq-di-mcid``, ACR, EULAR) exist for visits after BL
  only (contract §4);
- apart from ACR's own evaluability rule, an output with any input missing, or whose
  formula is undefined for the value (ESR 0, Th17 0), is not computed, with the reason;
  a set-aside input (contract §2) is named in that reason;
- ACR inputs used = TJC28, SJC28 and the core components present at both visits;
- the per-study settings choose ACR's acute-phase reactant, the DAS28-CRP cut-points and
  which Boolean remission definitions are reported (contract §3);
- HAQ-DI = the HAQ-DI total Observation of the visit, else one scored from a
  QuestionnaireResponse (:mod:`.haq_qr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional, Union

from schemas.trial import EndpointSettings, Visit
from service.derivation.catalog import BY_CODE, OUTPUTS
from service.derivation.records import InputValue, SetAside, SubjectRecord
from service.derivation.visits import Assignment, Schedule, Selected, assign
from service.endpoints import categories, responses, scores
from service.endpoints.categories import Das28Cutpoints
from service.endpoints.responses import AcrComponents, AcutePhaseReactant
from service.endpoints.result import Computed, NotComputable, Result

Value = Union[Decimal, bool, str]


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class Output:
    """One derived value (or why there is none) and every input it used."""

    code: str
    value: Optional[Value]
    """Unrounded Decimal, category code or bool; ``None`` when not computed."""
    reason: Optional[str]
    inputs: tuple[Selected, ...]
    undefined: bool = False
    """The formula is undefined for the value (ESR 0, Th17 0) rather than an input missing."""

    @property
    def computed(self) -> bool:
        return self.value is not None


@dataclass(slots=True)
class VisitOutputs:
    visit: Visit
    selected: dict[str, Selected]
    outputs: dict[str, Output]


@dataclass(slots=True)
class SubjectOutputs:
    subject: SubjectRecord
    visits: list[VisitOutputs]
    unused: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rules:
    """The per-study settings as the pure functions take them (contract §3)."""

    reactant: AcutePhaseReactant
    crp_cutpoints: Das28Cutpoints
    boolean_versions: tuple[int, ...]
    codes: tuple[str, ...]
    """Output codes produced, in contract §4 order (Boolean remission per setting)."""

    def das28_crp_activity(self, das28_crp: Decimal) -> categories.Activity:
        """The DAS28-CRP category with the study's cut-points (contract §3 setting)."""
        return categories.das28_activity(das28_crp, self.crp_cutpoints)

    @staticmethod
    def of(settings: EndpointSettings) -> "Rules":
        cuts = settings.das28_crp_cut_points
        versions = tuple(sorted(int(v) for v in settings.boolean_remission))
        skipped = {f"boolean-remission-{v}" for v in (2011, 2022) if v not in versions}
        return Rules(
            AcutePhaseReactant(settings.acr_acute_phase_reactant),
            Das28Cutpoints(cuts.remission, cuts.low, cuts.moderate),
            versions,
            tuple(o.code for o in OUTPUTS if o.code not in skipped),
        )


_LABEL = {
    "tjc28": "TJC28", "sjc28": "SJC28", "ptga": "PtGA", "ega": "EGA", "pain": "pain", "haq_di": "HAQ-DI",
    "esr": "ESR", "crp": "CRP", "treg_pct": "Treg %", "th17_pct": "Th17 %",
}


def _get(sel: dict[str, Selected], measure: str) -> Optional[Selected]:
    if measure == "haq_di":
        return sel.get("haq_di") or sel.get("haq_di_qr")
    return sel.get(measure)


def _v(s: Optional[Selected], key: str) -> Any:
    return s.value.canon[key] if s is not None else None


def _present(*items: Optional[Selected]) -> tuple[Selected, ...]:
    return tuple(filter(None, items))  # a Selected is always truthy


class _VisitCalc:
    """The inputs and scores of one visit, computed once and shared by the outputs."""

    __slots__ = ("tjc", "sjc", "ptga", "ega", "esr", "crp", "pain", "haq", "treg", "th17", "das_esr", "das_crp", "sdai", "cdai",
                 "acr", "das_esr_in", "das_crp_in", "sdai_in", "cdai_in", "bool_in", "by_measure", "values")

    def __init__(self, sel: dict[str, Selected]) -> None:
        g = sel.get
        self.tjc, self.sjc, self.ptga, self.ega = tjc, sjc, ptga, ega = g("tjc28"), g("sjc28"), g("ptga"), g("ega")
        self.esr, self.crp, self.pain = esr, crp, pain = g("esr"), g("crp"), g("pain")
        self.haq = haq = g("haq_di") or g("haq_di_qr")
        self.treg, self.th17 = g("treg_pct"), g("th17_pct")
        tjc_n = tjc.value.canon["count"] if tjc is not None else None
        sjc_n = sjc.value.canon["count"] if sjc is not None else None
        ptga_mm, ptga10 = (ptga.value.canon["mm"], ptga.value.canon["score10"]) if ptga is not None else (None, None)
        ega10 = ega.value.canon["score10"] if ega is not None else None
        crp_mg_l, crp_mg_dl = (crp.value.canon["mg_l"], crp.value.canon["mg_dl"]) if crp is not None else (None, None)
        esr_mm_h = esr.value.canon["mm_h"] if esr is not None else None
        self.values = (tjc_n, sjc_n, crp_mg_dl, ptga10)
        self.das_esr = scores.das28_esr(tjc_n, sjc_n, esr_mm_h, ptga_mm)
        self.das_crp = scores.das28_crp(tjc_n, sjc_n, crp_mg_l, ptga_mm)
        self.sdai = scores.sdai(tjc_n, sjc_n, ptga10, ega10, crp_mg_dl)
        self.cdai = scores.cdai(tjc_n, sjc_n, ptga10, ega10)
        self.acr = AcrComponents(tjc_n, sjc_n, _v(pain, "mm"), ptga10, ega10, _v(haq, "haq"), crp_mg_l, esr_mm_h)
        self.das_esr_in = _present(tjc, sjc, esr, ptga)
        self.das_crp_in = _present(tjc, sjc, crp, ptga)
        self.sdai_in = _present(tjc, sjc, ptga, ega, crp)
        self.cdai_in = _present(tjc, sjc, ptga, ega)
        self.bool_in = self.das_crp_in
        self.by_measure = {"tjc28": tjc, "sjc28": sjc, "pain": pain, "ptga": ptga, "ega": ega, "haq-di": haq, "crp": crp, "esr": esr}


class _Builder:
    """Turns Results into Outputs, naming set-aside inputs (contract §2) in the reasons."""

    def __init__(self, assignment: Assignment, visit: Visit, baseline: Visit, rules: Rules, context_note: str = "") -> None:
        self.visit = visit
        self.rules = rules
        self.context_note = context_note
        empty: dict[str, Any] = {}
        self.places = [
            (visit.name, assignment.selected.get(visit.name, empty), assignment.set_aside.get(visit.name, empty)),
            (baseline.name, assignment.selected.get(baseline.name, empty), assignment.set_aside.get(baseline.name, empty)),
        ]

    def _measures(self, code: str) -> tuple[str, ...]:
        measures = BY_CODE[code].measures
        if code.startswith("acr"):
            other = "esr" if self.rules.reactant is AcutePhaseReactant.CRP else "crp"
            measures = tuple(m for m in measures if m != other)
        return measures

    def _notes(self, code: str, change: bool) -> list[str]:
        notes = []
        for where, selected, aside in self.places[: 2 if change else 1]:
            for measure in self._measures(code):
                if _get(selected, measure) is None:
                    notes.extend(f"{_LABEL.get(measure, measure)} at {where}: {s.ref} set aside: {s.reason}" for s in aside.get(measure, ()))
        return notes

    def make(self, code: str, result: Result[Any], inputs: tuple[Selected, ...], *, change: bool = False) -> Output:
        if type(result) is Computed:
            return Output(code, result.value, None, inputs)
        notes = self._notes(code, change)
        if self.context_note:
            notes.append(self.context_note)
        reason = f"{result.reason} [{'; '.join(notes)}]" if notes else result.reason
        return Output(code, None, reason, inputs, "undefined" in result.reason)


def _category(b: _Builder, code: str, score: Result[Decimal], label: str, fn: Any, inputs: tuple[Selected, ...]) -> Output:
    """A category output from its score (decided on the unrounded value, contract §4)."""
    if isinstance(score, Computed):
        return Output(code, fn(score.value).value, None, inputs)
    return b.make(code, NotComputable(f"{label} not computed: {score.reason}"), inputs)


def _pair(bl: Result[Decimal], v: Result[Decimal], label: str, visit: str) -> Result[tuple[Decimal, Decimal]]:
    problems = [f"{label} at {where} not computed: {r.reason}" for where, r in (("BL", bl), (visit, v)) if isinstance(r, NotComputable)]
    if problems:
        return NotComputable("; ".join(problems))
    assert isinstance(bl, Computed) and isinstance(v, Computed)
    return Computed((bl.value, v.value))


_ACR_NS = (20, 50, 70)
_ACR_CODES = {n: f"acr{n}" for n in _ACR_NS}


def derive_visit(visit: Visit, sel: dict[str, Selected], bl: Optional[_VisitCalc], rules: Rules, b: _Builder) -> tuple[dict[str, Output], _VisitCalc]:
    """The outputs of one visit, in contract §4 order; ``bl`` is the baseline's calculation
    (None at/before BL)."""
    c = _VisitCalc(sel)
    make = b.make
    out: dict[str, Output] = {
        "das28-esr": make("das28-esr", c.das_esr, c.das_esr_in),
        "das28-crp": make("das28-crp", c.das_crp, c.das_crp_in),
        "sdai": make("sdai", c.sdai, c.sdai_in),
        "cdai": make("cdai", c.cdai, c.cdai_in),
        "das28-esr-activity": _category(b, "das28-esr-activity", c.das_esr, "DAS28-ESR", categories.das28_activity, c.das_esr_in),
        "das28-crp-activity": _category(b, "das28-crp-activity", c.das_crp, "DAS28-CRP", rules.das28_crp_activity, c.das_crp_in),
        "sdai-activity": _category(b, "sdai-activity", c.sdai, "SDAI", categories.sdai_activity, c.sdai_in),
        "cdai-activity": _category(b, "cdai-activity", c.cdai, "CDAI", categories.cdai_activity, c.cdai_in),
    }
    if bl is not None:
        _responses(visit, c, bl, rules, b, out)
    tjc, sjc, crp, ptga = c.values
    for version in rules.boolean_versions:
        code = f"boolean-remission-{version}"
        out[code] = make(code, responses.boolean_remission(tjc, sjc, crp, ptga, version), c.bool_in)
    if bl is not None:
        _change_values(c, bl, b, out)
    out["treg-th17-ratio"] = make("treg-th17-ratio", scores.treg_th17_ratio(_v(c.treg, "pct"), _v(c.th17, "pct")), _present(c.treg, c.th17))
    return out, c


def _responses(visit: Visit, c: _VisitCalc, bl: _VisitCalc, rules: Rules, b: _Builder, out: dict[str, Output]) -> None:
    """ACR20/50/70 and the EULAR responses of a visit after BL."""
    results = responses.acr_responses(_ACR_NS, bl.acr, c.acr, rules.reactant)
    # the components used do not depend on N: those present (and valid) at both visits
    used = tuple(s for name in results[0].used_components for s in (bl.by_measure[name], c.by_measure[name]) if s is not None)
    for result in results:
        code = _ACR_CODES[result.n]
        out[code] = Output(code, result.met, None, used) if result.evaluable else b.make(code, result.as_result(), used, change=True)
    for code, label, base, now, inputs in (
        ("eular-response-esr", "DAS28-ESR", bl.das_esr, c.das_esr, bl.das_esr_in + c.das_esr_in),
        ("eular-response-crp", "DAS28-CRP", bl.das_crp, c.das_crp, bl.das_crp_in + c.das_crp_in),
    ):
        if isinstance(base, Computed) and isinstance(now, Computed):
            out[code] = Output(code, responses.eular_response(base.value, now.value).value, None, inputs)
        else:
            out[code] = b.make(code, _pair(base, now, label, visit.name), inputs, change=True)


def _change_values(c: _VisitCalc, bl: _VisitCalc, b: _Builder, out: dict[str, Output]) -> None:
    """HAQ-DI change (and its MCID) and pain change of a visit after BL."""
    haq_in = _present(bl.haq, c.haq)
    change = responses.haq_di_change(_v(bl.haq, "haq"), _v(c.haq, "haq"))
    out["haq-di-change"] = b.make("haq-di-change", change, haq_in, change=True)
    if isinstance(change, Computed):
        out["haq-di-mcid"] = Output("haq-di-mcid", responses.haq_mcid(change.value), None, haq_in)
    else:
        out["haq-di-mcid"] = b.make("haq-di-mcid", change, haq_in, change=True)
    pain = responses.pain_change_mm(_v(bl.pain, "mm"), _v(c.pain, "mm"))
    out["pain-change"] = b.make("pain-change", pain, _present(bl.pain, c.pain), change=True)


def derive_subject(
    subject: SubjectRecord,
    values: Sequence[InputValue],
    set_aside: Sequence[SetAside],
    schedule: Schedule,
    rules: Rules,
    encounter_visits: dict[str, Optional[str]],
) -> SubjectOutputs:
    """Every output of one subject, visit by visit in schedule order (contract §3, §4)."""
    assignment = assign(values, set_aside, subject.day0, schedule, encounter_visits)
    note = "" if subject.day0 is not None else (
        "day 0 of the subject is unknown (no completed infusion of the study product and no ResearchSubject.period.start): "
        "only values with a study-visit Encounter can be placed"
    )
    visits: list[VisitOutputs] = []
    bl_calc: Optional[_VisitCalc] = None
    for visit in schedule.visits:
        sel = assignment.selected.get(visit.name, {})
        builder = _Builder(assignment, visit, schedule.baseline, rules, note)
        after = schedule.after_baseline(visit)
        if after and bl_calc is None:
            bl_calc = _VisitCalc(assignment.selected.get(schedule.baseline.name, {}))
        outputs, calc = derive_visit(visit, sel, bl_calc if after else None, rules, builder)
        if visit is schedule.baseline:
            bl_calc = calc
        visits.append(VisitOutputs(visit, sel, outputs))
    return SubjectOutputs(subject, visits, assignment.unused)


__all__ = ["Output", "Rules", "SubjectOutputs", "Value", "VisitOutputs", "derive_subject", "derive_visit"]
