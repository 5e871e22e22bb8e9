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
    return tuple(s for s in items if s is not None)


class _VisitCalc:
    """The inputs and scores of one visit, computed once and shared by the outputs."""

    __slots__ = ("tjc", "sjc", "ptga", "ega", "esr", "crp", "pain", "haq", "treg", "th17", "das_esr", "das_crp", "sdai", "cdai",
                 "acr", "das_esr_in", "das_crp_in", "sdai_in", "cdai_in", "bool_in", "by_measure")

    def __init__(self, sel: dict[str, Selected]) -> None:
        g = sel.get
        self.tjc, self.sjc, self.ptga, self.ega = g("tjc28"), g("sjc28"), g("ptga"), g("ega")
        self.esr, self.crp, self.pain = g("esr"), g("crp"), g("pain")
        self.haq = g("haq_di") or g("haq_di_qr")
        self.treg, self.th17 = g("treg_pct"), g("th17_pct")
        tjc, sjc = _v(self.tjc, "count"), _v(self.sjc, "count")
        ptga_mm, ptga10, ega10 = _v(self.ptga, "mm"), _v(self.ptga, "score10"), _v(self.ega, "score10")
        crp_mg_l, crp_mg_dl, esr = _v(self.crp, "mg_l"), _v(self.crp, "mg_dl"), _v(self.esr, "mm_h")
        self.das_esr = scores.das28_esr(tjc, sjc, esr, ptga_mm)
        self.das_crp = scores.das28_crp(tjc, sjc, crp_mg_l, ptga_mm)
        self.sdai = scores.sdai(tjc, sjc, ptga10, ega10, crp_mg_dl)
        self.cdai = scores.cdai(tjc, sjc, ptga10, ega10)
        self.acr = AcrComponents(tjc, sjc, _v(self.pain, "mm"), ptga10, ega10, _v(self.haq, "haq"), crp_mg_l, esr)
        self.das_esr_in = _present(self.tjc, self.sjc, self.esr, self.ptga)
        self.das_crp_in = _present(self.tjc, self.sjc, self.crp, self.ptga)
        self.sdai_in = _present(self.tjc, self.sjc, self.ptga, self.ega, self.crp)
        self.cdai_in = _present(self.tjc, self.sjc, self.ptga, self.ega)
        self.bool_in = self.das_crp_in
        self.by_measure = {
            "tjc28": self.tjc, "sjc28": self.sjc, "pain": self.pain, "ptga": self.ptga, "ega": self.ega,
            "haq-di": self.haq, "crp": self.crp, "esr": self.esr,
        }


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
        if isinstance(result, Computed):
            return Output(code, result.value, None, inputs)
        notes = self._notes(code, change)
        if self.context_note:
            notes.append(self.context_note)
        reason = f"{result.reason} [{'; '.join(notes)}]" if notes else result.reason
        return Output(code, None, reason, inputs, "undefined" in result.reason)


def _category(score: Result[Decimal], label: str, fn: Any) -> Result[str]:
    if isinstance(score, NotComputable):
        return NotComputable(f"{label} not computed: {score.reason}")
    return Computed(fn(score.value).value)


def _pair(bl: Result[Decimal], v: Result[Decimal], label: str, visit: str) -> Result[tuple[Decimal, Decimal]]:
    problems = [f"{label} at {where} not computed: {r.reason}" for where, r in (("BL", bl), (visit, v)) if isinstance(r, NotComputable)]
    if problems:
        return NotComputable("; ".join(problems))
    assert isinstance(bl, Computed) and isinstance(v, Computed)
    return Computed((bl.value, v.value))


def derive_visit(visit: Visit, sel: dict[str, Selected], bl: Optional[_VisitCalc], rules: Rules, b: _Builder) -> tuple[dict[str, Output], _VisitCalc]:
    """The outputs of one visit; ``bl`` is the baseline's calculation (None at/before BL)."""
    c = _VisitCalc(sel)
    make = b.make
    out: dict[str, Output] = {
        "das28-esr": make("das28-esr", c.das_esr, c.das_esr_in),
        "das28-crp": make("das28-crp", c.das_crp, c.das_crp_in),
        "sdai": make("sdai", c.sdai, c.sdai_in),
        "cdai": make("cdai", c.cdai, c.cdai_in),
        "das28-esr-activity": make("das28-esr-activity", _category(c.das_esr, "DAS28-ESR", categories.das28_activity), c.das_esr_in),
        "das28-crp-activity": make(
            "das28-crp-activity", _category(c.das_crp, "DAS28-CRP", lambda s: categories.das28_activity(s, rules.crp_cutpoints)), c.das_crp_in
        ),
        "sdai-activity": make("sdai-activity", _category(c.sdai, "SDAI", categories.sdai_activity), c.sdai_in),
        "cdai-activity": make("cdai-activity", _category(c.cdai, "CDAI", categories.cdai_activity), c.cdai_in),
    }
    if bl is not None:
        _changes(visit, c, bl, rules, b, out)
    tjc, sjc, crp, ptga = _v(c.tjc, "count"), _v(c.sjc, "count"), _v(c.crp, "mg_dl"), _v(c.ptga, "score10")
    for version in rules.boolean_versions:
        code = f"boolean-remission-{version}"
        out[code] = make(code, responses.boolean_remission(tjc, sjc, crp, ptga, version), c.bool_in)
    out["treg-th17-ratio"] = make("treg-th17-ratio", scores.treg_th17_ratio(_v(c.treg, "pct"), _v(c.th17, "pct")), _present(c.treg, c.th17))
    return {code: out[code] for code in rules.codes if code in out}, c


def _changes(visit: Visit, c: _VisitCalc, bl: _VisitCalc, rules: Rules, b: _Builder, out: dict[str, Output]) -> None:
    results = responses.acr_responses((20, 50, 70), bl.acr, c.acr, rules.reactant)
    # the components used do not depend on N: those present (and valid) at both visits
    names = [comp.name for comp in results[0].components if comp.baseline is not None and comp.visit is not None]
    used = tuple(s for name in names for s in (bl.by_measure[name], c.by_measure[name]) if s is not None)
    for result in results:
        out[f"acr{result.n}"] = b.make(f"acr{result.n}", result.as_result(), used, change=True)
    for code, label, base, now, inputs in (
        ("eular-response-esr", "DAS28-ESR", bl.das_esr, c.das_esr, bl.das_esr_in + c.das_esr_in),
        ("eular-response-crp", "DAS28-CRP", bl.das_crp, c.das_crp, bl.das_crp_in + c.das_crp_in),
    ):
        if isinstance(base, Computed) and isinstance(now, Computed):
            result: Result[Any] = Computed(responses.eular_response(base.value, now.value).value)
        else:
            result = _pair(base, now, label, visit.name)
        out[code] = b.make(code, result, inputs, change=True)
    haq_in = _present(bl.haq, c.haq)
    change = responses.haq_di_change(_v(bl.haq, "haq"), _v(c.haq, "haq"))
    out["haq-di-change"] = b.make("haq-di-change", change, haq_in, change=True)
    out["haq-di-mcid"] = b.make("haq-di-mcid", change.map(responses.haq_mcid), haq_in, change=True)
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
