"""Response, remission and change endpoints (contract §4; ra-domain.md §1.4–§1.9).

Every threshold is decided exactly: values are ``Decimal`` (floats read at ``repr``) and
differences/products are taken in an unbounded-precision decimal context (``_EXACT``:
``MAX_PREC`` digits, so +, − and × never round — the decimal module's documented recipe
for exact arithmetic), never through a float ratio. This is the same exact rational
decision as ``Fraction`` arithmetic, at ~1/10 of its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from enum import Enum, IntEnum

from service.endpoints.inputs import Number, as_decimal, count_input, decimal_input, gather
from service.endpoints.result import Computed, NotComputable, Result

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""Exact +, −, × (never used for division)."""
_CTX28 = Context(prec=28)
_CTX60 = Context(prec=60)

_ZERO = Decimal(0)
_THREE = Decimal(3)
_TEN = Decimal(10)
_HUNDRED = Decimal(100)


# ---------------------------------------------------------------------------------------
# ACR20 / ACR50 / ACR70
# ---------------------------------------------------------------------------------------


class AcutePhaseReactant(str, Enum):
    """Which acute-phase reactant the ACR core set uses (contract §4: CRP unless the study says ESR)."""

    CRP = "crp"
    ESR = "esr"


@dataclass(frozen=True, slots=True)
class AcrComponents:
    """ACR core-set values at one visit; ``None`` means absent.

    Units are fixed by the field names so that baseline and visit share a scale (the %
    improvement is scale-free, but only if both visits use the same unit). Convert with
    :mod:`service.endpoints.units` first. Both reactants may be given; the study setting
    chooses which one counts.
    """

    tjc28: Number | None = None
    sjc28: Number | None = None
    pain_mm_0_100: Number | None = None
    ptga_0_10: Number | None = None
    ega_0_10: Number | None = None
    haq_di_0_3: Number | None = None
    crp_mg_l: Number | None = None
    esr_mm_h: Number | None = None


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class AcrComponentOutcome:
    """One component of an ACR decision, kept for audit (derived-Observation components)."""

    name: str
    baseline: Decimal | None
    visit: Decimal | None
    improved: bool | None
    """Exact "improves ≥ N %" decision; ``None`` when absent at either visit."""
    problem: str | None = None
    """Why the component counts as absent, when it does."""

    @property
    def improvement_pct(self) -> Decimal | None:
        """(baseline − visit) / baseline × 100, for display only (28 digits); ``None`` when
        absent or when the baseline is 0. Computed on access: a 28-digit division costs more
        than the exact decision itself and most callers never read it."""
        if self.improved is None or self.baseline is None or self.visit is None:
            return None
        return _improvement_pct(self.baseline, self.visit)


@dataclass(slots=True)  # not frozen: built in bulk (a frozen __init__ costs ~4× more); never mutated
class AcrResult:
    """Outcome of :func:`acr_response`.

    ``evaluable`` False ⇒ ``met`` is ``None`` and ``reason`` says what is missing.
    """

    n: int
    reactant: AcutePhaseReactant
    evaluable: bool
    met: bool | None
    reason: str | None
    components: tuple[AcrComponentOutcome, ...]
    core_present: int
    core_improved: int

    def as_result(self) -> Result[bool]:
        """``Computed(met)`` when evaluable, else ``NotComputable(reason)``."""
        if self.evaluable:
            assert self.met is not None
            return Computed(self.met)
        assert self.reason is not None
        return NotComputable(self.reason)


def improves_by_at_least(n: int, baseline: Number, visit: Number) -> bool:
    """True when the change baseline → visit is an improvement of at least ``n`` %.

    Contract §4: decided as (baseline − visit) × 100 ≥ N × baseline in exact rational
    arithmetic on the values as given (TJC 10 → 8 is exactly 20 %). A baseline of 0 (or
    below) counts as not improved.
    """
    return _improves(Decimal(n), as_decimal(baseline), as_decimal(visit))


def _improves(n: Decimal, b: Decimal, v: Decimal) -> bool:
    """:func:`improves_by_at_least` on checked decimals (no conversion)."""
    if b <= 0:
        return False
    return _EXACT.multiply(_EXACT.subtract(b, v), _HUNDRED) >= _EXACT.multiply(n, b)


def _improvement_pct(baseline: Decimal, visit: Decimal) -> Decimal | None:
    if baseline <= 0:
        return None
    return _CTX28.divide(_CTX28.multiply(_CTX28.subtract(baseline, visit), _HUNDRED), baseline)


_CORE_LABELS = {
    "tjc28": "TJC28",
    "sjc28": "SJC28",
    "pain": "pain",
    "ptga": "PtGA",
    "ega": "EGA",
    "haq-di": "HAQ-DI",
    "crp": "CRP",
    "esr": "ESR",
}


_MAXIMA = {"pain": _HUNDRED, "ptga": _TEN, "ega": _TEN, "haq-di": _THREE}


def _checked(name: str, value: Number | None) -> Result[Decimal]:
    label = _CORE_LABELS[name]
    if name in ("tjc28", "sjc28"):
        return count_input(label, value).map(Decimal)
    return decimal_input(label, value, minimum=_ZERO, maximum=_MAXIMA.get(name))


_Checked = tuple[str, Result[Decimal], Result[Decimal], Optional[Decimal]]
"""(name, baseline, visit, (baseline − visit) × 100 when both are valid)."""


def _component(n: int, checked: _Checked) -> AcrComponentOutcome:
    name, b, v, gain = checked
    if gain is not None:
        assert isinstance(b, Computed) and isinstance(v, Computed)
        # improves ≥ N %  ⇔  (b − v) × 100 ≥ N × b, exactly; a baseline ≤ 0 is not improved
        improved = b.value > 0 and gain >= _EXACT.multiply(Decimal(n), b.value)
        return AcrComponentOutcome(name, b.value, v.value, improved)
    label = _CORE_LABELS[name]
    missing = [when for when, r in (("baseline", b), ("visit", v)) if isinstance(r, NotComputable) and r.reason.startswith("missing")]
    problems = [f"{label} missing at {' and '.join(missing)}"] if missing else []
    problems += [
        f"{r.reason} at {when}"
        for when, r in (("baseline", b), ("visit", v))
        if isinstance(r, NotComputable) and not r.reason.startswith("missing")
    ]
    return AcrComponentOutcome(
        name=name,
        baseline=b.value if isinstance(b, Computed) else None,
        visit=v.value if isinstance(v, Computed) else None,
        improved=None,
        problem="; ".join(problems),
    )


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 100:
        raise ValueError(f"ACR-N needs 0 < N ≤ 100, got {n!r}")


def _checked_components(baseline: AcrComponents, visit: AcrComponents, reactant: AcutePhaseReactant) -> list[_Checked]:
    reactant_field = "crp_mg_l" if reactant is AcutePhaseReactant.CRP else "esr_mm_h"
    fields = [
        ("tjc28", "tjc28"),
        ("sjc28", "sjc28"),
        ("pain", "pain_mm_0_100"),
        ("ptga", "ptga_0_10"),
        ("ega", "ega_0_10"),
        ("haq-di", "haq_di_0_3"),
        (reactant.value, reactant_field),
    ]
    out: list[_Checked] = []
    for name, attr in fields:
        b, v = _checked(name, getattr(baseline, attr)), _checked(name, getattr(visit, attr))
        gain = _EXACT.multiply(_EXACT.subtract(b.value, v.value), _HUNDRED) if isinstance(b, Computed) and isinstance(v, Computed) else None
        out.append((name, b, v, gain))
    return out


def acr_responses(
    ns: tuple[int, ...],
    baseline: AcrComponents,
    visit: AcrComponents,
    reactant: AcutePhaseReactant = AcutePhaseReactant.CRP,
) -> tuple[AcrResult, ...]:
    """:func:`acr_response` for several N at once (e.g. ``(20, 50, 70)``), checking each
    component once; element ``i`` equals ``acr_response(ns[i], baseline, visit, reactant)``."""
    for n in ns:
        _check_n(n)
    reactant = AcutePhaseReactant(reactant)
    checked = _checked_components(baseline, visit, reactant)
    return tuple(_decide(n, reactant, checked) for n in ns)


def acr_response(
    n: int,
    baseline: AcrComponents,
    visit: AcrComponents,
    reactant: AcutePhaseReactant = AcutePhaseReactant.CRP,
) -> AcrResult:
    """ACR-N response (N = 20, 50, 70) of ``visit`` against ``baseline``.

    Source: Felson DT et al., Arthritis Rheum 1995;38:727–35 (ACR20; 50/70 by the same
    rule); missing-data rule after Paulus HE et al., Arthritis Rheum 2000 (PubMed 11145032);
    contract §4 "ACR-N". Met when TJC28 and SJC28 each improve ≥ N % and at least 3 of
    pain, PtGA, EGA, HAQ-DI and the acute-phase reactant improve ≥ N %. Evaluable only when
    TJC28, SJC28 and at least 3 of those 5 are present at both visits; the count then runs
    over the components present. A value that fails its range check (negative, TJC > 28,
    PtGA > 10 …) counts as absent, with the problem in the reason.
    """
    _check_n(n)
    reactant = AcutePhaseReactant(reactant)
    return _decide(n, reactant, _checked_components(baseline, visit, reactant))


def _decide(n: int, reactant: AcutePhaseReactant, checked: list[_Checked]) -> AcrResult:
    outcomes = tuple(_component(n, c) for c in checked)
    joints, core = outcomes[:2], outcomes[2:]
    present_core = [c for c in core if c.improved is not None]
    core_improved = sum(1 for c in present_core if c.improved)

    missing = [c for c in outcomes if c.improved is None]
    joints_missing = [c for c in joints if c.improved is None]
    if joints_missing or len(present_core) < 3:
        parts = []
        if joints_missing:
            parts.append("TJC28 and SJC28 must both be present (and valid) at both visits")
        if len(present_core) < 3:
            parts.append(
                f"only {len(present_core)} of pain, PtGA, EGA, HAQ-DI, {_CORE_LABELS[reactant.value]} "
                "present at both visits (3 needed)"
            )
        details = "; ".join(c.problem or "" for c in missing)
        return AcrResult(
            n=n,
            reactant=reactant,
            evaluable=False,
            met=None,
            reason=f"ACR{n} not evaluable: {'; '.join(parts)} — {details}",
            components=outcomes,
            core_present=len(present_core),
            core_improved=core_improved,
        )
    met = all(c.improved for c in joints) and core_improved >= 3
    return AcrResult(
        n=n,
        reactant=reactant,
        evaluable=True,
        met=met,
        reason=None,
        components=outcomes,
        core_present=len(present_core),
        core_improved=core_improved,
    )


# ---------------------------------------------------------------------------------------
# EULAR response
# ---------------------------------------------------------------------------------------


class EularResponse(str, Enum):
    """Codes of ``eular-response-esr`` / ``eular-response-crp``."""

    GOOD = "good"
    MODERATE = "moderate"
    NONE = "none"


_F_0_6 = Decimal("0.6")
_F_1_2 = Decimal("1.2")
_F_3_2 = Decimal("3.2")
_F_5_1 = Decimal("5.1")


def eular_response(das28_baseline: Number, das28_visit: Number) -> EularResponse:
    """EULAR response from DAS28 (ESR or CRP, the same variant at both visits).

    Source: van Gestel AM, Haagsma CJ, van Riel PLCM, Arthritis Rheum 1998;41:1845–50
    (DAS28 version of van Gestel et al. 1996); van Riel PL, Clin Exp Rheumatol 2005;
    contract §4. With d = DAS28(BL) − DAS28(visit): good when d > 1.2 and DAS28(visit) ≤ 3.2;
    none when d ≤ 0.6, or d ≤ 1.2 and DAS28(visit) > 5.1; moderate otherwise. d is exact.
    """
    baseline = as_decimal(das28_baseline)
    current = as_decimal(das28_visit)
    d = _EXACT.subtract(baseline, current)
    if d > _F_1_2 and current <= _F_3_2:
        return EularResponse.GOOD
    if d <= _F_0_6 or (d <= _F_1_2 and current > _F_5_1):
        return EularResponse.NONE
    return EularResponse.MODERATE


# ---------------------------------------------------------------------------------------
# Boolean remission
# ---------------------------------------------------------------------------------------


class BooleanRemissionVersion(IntEnum):
    """ACR/EULAR Boolean remission definitions (contract §4 ``boolean-remission-*``)."""

    V2011 = 2011
    V2022 = 2022


_PTGA_MAX = {BooleanRemissionVersion.V2011: Decimal(1), BooleanRemissionVersion.V2022: Decimal(2)}


def boolean_remission(
    tjc28: Number | None,
    sjc28: Number | None,
    crp_mg_dl: Number | None,
    ptga_0_10: Number | None,
    version: int = BooleanRemissionVersion.V2011,
) -> Result[bool]:
    """Boolean remission: TJC28 ≤ 1, SJC28 ≤ 1, CRP ≤ 1 mg/dL and PtGA(0–10) ≤ 1 (2011) or ≤ 2 (2022).

    Sources: Felson DT et al., Arthritis Rheum 2011;63:573–86 / Ann Rheum Dis 2011;70:404–13
    (2011 provisional definition); Studenic P et al., Ann Rheum Dis 2023;82:74–80 /
    Arthritis Rheumatol 2023;75:15–22 ("Boolean2.0", PtGA ≤ 2); contract §4. Any input
    missing → not computable. Comparisons are exact.
    """
    cutoff = _PTGA_MAX[BooleanRemissionVersion(version)]
    inputs = gather([
        count_input("TJC28", tjc28),
        count_input("SJC28", sjc28),
        decimal_input("CRP (mg/dL)", crp_mg_dl, minimum=_ZERO),
        decimal_input("PtGA (0–10)", ptga_0_10, minimum=_ZERO, maximum=_TEN),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    tjc, sjc, crp, ptga = inputs.value
    return Computed(tjc <= 1 and sjc <= 1 and crp <= 1 and ptga <= cutoff)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------
# Change endpoints
# ---------------------------------------------------------------------------------------


def _exact_difference(visit: Decimal, baseline: Decimal) -> Decimal:
    return _CTX60.subtract(visit, baseline)


def haq_di_change(baseline_haq_di: Number | None, visit_haq_di: Number | None) -> Result[Decimal]:
    """HAQ-DI change = HAQ-DI(visit) − HAQ-DI(BL), exact; negative is improvement.

    Source: contract §4 ``haq-di-change``; HAQ-DI 0–3 per Fries JF et al., Arthritis Rheum
    1980;23:137 and LOINC 75874-8.
    """
    inputs = gather([
        decimal_input("HAQ-DI at baseline", baseline_haq_di, minimum=_ZERO, maximum=_THREE),
        decimal_input("HAQ-DI at visit", visit_haq_di, minimum=_ZERO, maximum=_THREE),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    baseline, visit = inputs.value
    return Computed(_exact_difference(visit, baseline))  # type: ignore[arg-type]


HAQ_MCID = Decimal("-0.22")


def haq_mcid(haq_di_change_value: Number) -> bool:
    """True when the HAQ-DI change reaches the minimal clinically important difference (≤ −0.22).

    Source: Wells GA et al., J Rheumatol 1993;20:557–60 (MCID 0.22), the value "frequently
    used in RA trials" (Behrens F et al., BMC Rheumatol 2019); contract §4 ``haq-di-mcid``.
    Decided exactly on the unrounded change.
    """
    return as_decimal(haq_di_change_value) <= HAQ_MCID


def pain_change_mm(baseline_pain_mm: Number | None, visit_pain_mm: Number | None) -> Result[Decimal]:
    """Pain change = pain(visit) − pain(BL) on the 0–100 mm VAS, exact; negative is improvement.

    Source: contract §4 ``pain-change``; pain VAS 0–100 mm as in the ACR core set
    (Felson DT et al., Arthritis Rheum 1993;36:729).
    """
    inputs = gather([
        decimal_input("pain at baseline (0–100 mm)", baseline_pain_mm, minimum=_ZERO, maximum=_HUNDRED),
        decimal_input("pain at visit (0–100 mm)", visit_pain_mm, minimum=_ZERO, maximum=_HUNDRED),
    ])
    if isinstance(inputs, NotComputable):
        return inputs
    baseline, visit = inputs.value
    return Computed(_exact_difference(visit, baseline))  # type: ignore[arg-type]


__all__ = [
    "HAQ_MCID",
    "AcrComponentOutcome",
    "AcrComponents",
    "AcrResult",
    "AcutePhaseReactant",
    "BooleanRemissionVersion",
    "EularResponse",
    "acr_response",
    "acr_responses",
    "boolean_remission",
    "eular_response",
    "haq_di_change",
    "haq_mcid",
    "improves_by_at_least",
    "pain_change_mm",
]
