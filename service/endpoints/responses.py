"""Response, remission and change endpoints (contract §4; ra-domain.md §1.4–§1.9).

Every threshold is decided exactly: values are ``Decimal`` (floats read at ``repr``) and
differences/products are taken in an unbounded-precision decimal context (``_EXACT``:
``MAX_PREC`` digits, so +, − and × never round — the decimal module's documented recipe
for exact arithmetic), never through a float ratio. This is the same exact rational
decision as ``Fraction`` arithmetic, at ~1/10 of its cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    ``components`` (one :class:`AcrComponentOutcome` per core measure, for audit) is built
    on first access: a study derivation decides ~150,000 responses and reads none of them.
    """

    n: int
    reactant: AcutePhaseReactant
    evaluable: bool
    met: bool | None
    reason: str | None
    core_present: int
    core_improved: int
    _checked: tuple["_Checked", ...] = field(repr=False, compare=False)
    _flags: tuple[bool | None, ...] = field(repr=False, compare=False)
    """Per component of ``_checked``: improved ≥ N % (``None``: absent at either visit)."""

    @property
    def used_components(self) -> tuple[str, ...]:
        """Names of the components present (and valid) at both visits — the inputs the
        decision used (the same for every N)."""
        return tuple(c.name for c in self._checked if c.gain is not None)

    @property
    def components(self) -> tuple[AcrComponentOutcome, ...]:
        """TJC28, SJC28, pain, PtGA, EGA, HAQ-DI and the acute-phase reactant, in that order."""
        return tuple(
            AcrComponentOutcome(c.name, c.baseline, c.visit, improved, None if improved is not None else c.problem)
            for c, improved in zip(self._checked, self._flags)
        )

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
_COUNT_DECIMALS = tuple(Decimal(i) for i in range(29))
"""Decimal(0) … Decimal(28): a valid joint count as a Decimal without a conversion."""


def _checked(name: str, value: Number | None) -> Result[Decimal]:
    label = _CORE_LABELS[name]
    if name in ("tjc28", "sjc28"):
        return count_input(label, value).map(Decimal)
    return decimal_input(label, value, minimum=_ZERO, maximum=_MAXIMA.get(name))


def _valid(name: str, value: Number | None) -> Decimal | None:
    """``value`` as a Decimal when it is already an exact, in-range input of ``name`` (the
    common case, decided without building Results); ``None`` sends it to :func:`_checked`."""
    if name == "tjc28" or name == "sjc28":
        return _COUNT_DECIMALS[value] if type(value) is int and 0 <= value <= 28 else None
    if type(value) is Decimal and value.is_finite() and value >= 0:
        maximum = _MAXIMA.get(name)
        if maximum is None or value <= maximum:
            return value
    return None


@dataclass(slots=True)
class _Checked:
    """One component at both visits: valid values (``None`` when absent or invalid), the
    exact gain (baseline − visit) × 100 when both are valid, else why not."""

    name: str
    baseline: Decimal | None
    visit: Decimal | None
    gain: Decimal | None
    problem: str | None


def _problem(name: str, b: Result[Decimal], v: Result[Decimal]) -> str:
    label = _CORE_LABELS[name]
    missing = [when for when, r in (("baseline", b), ("visit", v)) if isinstance(r, NotComputable) and r.reason.startswith("missing")]
    problems = [f"{label} missing at {' and '.join(missing)}"] if missing else []
    problems += [
        f"{r.reason} at {when}"
        for when, r in (("baseline", b), ("visit", v))
        if isinstance(r, NotComputable) and not r.reason.startswith("missing")
    ]
    return "; ".join(problems)


def _check_pair(name: str, baseline: Number | None, visit: Number | None) -> _Checked:
    b, v = _valid(name, baseline), _valid(name, visit)
    if b is not None and v is not None:
        return _Checked(name, b, v, _EXACT.multiply(_EXACT.subtract(b, v), _HUNDRED), None)
    rb, rv = _checked(name, baseline), _checked(name, visit)  # at least one is absent or invalid: say why
    bv = rb.value if isinstance(rb, Computed) else None
    vv = rv.value if isinstance(rv, Computed) else None
    if bv is not None and vv is not None:  # valid after all (e.g. a float or an integral Decimal count)
        return _Checked(name, bv, vv, _EXACT.multiply(_EXACT.subtract(bv, vv), _HUNDRED), None)
    return _Checked(name, bv, vv, None, _problem(name, rb, rv))


def _improved(n: Decimal, c: _Checked) -> bool | None:
    """Whether component ``c`` improves ≥ ``n`` %; ``None`` when absent at either visit.

    improves ≥ N %  ⇔  (b − v) × 100 ≥ N × b, exactly; a baseline ≤ 0 is not improved."""
    if c.gain is None:
        return None
    b = c.baseline
    return b > 0 and c.gain >= _EXACT.multiply(n, b)  # type: ignore[operator, arg-type]


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 100:
        raise ValueError(f"ACR-N needs 0 < N ≤ 100, got {n!r}")


_FIELDS = (
    ("tjc28", "tjc28"),
    ("sjc28", "sjc28"),
    ("pain", "pain_mm_0_100"),
    ("ptga", "ptga_0_10"),
    ("ega", "ega_0_10"),
    ("haq-di", "haq_di_0_3"),
)


def _checked_components(baseline: AcrComponents, visit: AcrComponents, reactant: AcutePhaseReactant) -> tuple[_Checked, ...]:
    reactant_field = "crp_mg_l" if reactant is AcutePhaseReactant.CRP else "esr_mm_h"
    out = [_check_pair(name, getattr(baseline, attr), getattr(visit, attr)) for name, attr in _FIELDS]
    out.append(_check_pair(reactant.value, getattr(baseline, reactant_field), getattr(visit, reactant_field)))
    return tuple(out)


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


_N_DECIMALS = {n: Decimal(n) for n in (20, 50, 70)}


def _decide(n: int, reactant: AcutePhaseReactant, checked: tuple[_Checked, ...]) -> AcrResult:
    threshold = _N_DECIMALS.get(n) or Decimal(n)
    improved = tuple([_improved(threshold, c) for c in checked])
    tjc, sjc, core = improved[0], improved[1], improved[2:]
    core_present = sum(1 for i in core if i is not None)
    core_improved = sum(1 for i in core if i)
    if tjc is None or sjc is None or core_present < 3:
        parts = []
        if tjc is None or sjc is None:
            parts.append("TJC28 and SJC28 must both be present (and valid) at both visits")
        if core_present < 3:
            parts.append(
                f"only {core_present} of pain, PtGA, EGA, HAQ-DI, {_CORE_LABELS[reactant.value]} "
                "present at both visits (3 needed)"
            )
        details = "; ".join(c.problem or "" for c, i in zip(checked, improved) if i is None)
        reason = f"ACR{n} not evaluable: {'; '.join(parts)} — {details}"
        return AcrResult(n, reactant, False, None, reason, core_present, core_improved, checked, improved)
    return AcrResult(n, reactant, True, tjc and sjc and core_improved >= 3, None, core_present, core_improved, checked, improved)


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
    if _valid("tjc28", tjc28) is not None and _valid("sjc28", sjc28) is not None and _valid("crp", crp_mg_dl) is not None and _valid("ptga", ptga_0_10) is not None:
        return Computed(tjc28 <= 1 and sjc28 <= 1 and crp_mg_dl <= 1 and ptga_0_10 <= cutoff)  # type: ignore[operator]
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
    if _valid("haq-di", baseline_haq_di) is not None and _valid("haq-di", visit_haq_di) is not None:
        return Computed(_exact_difference(visit_haq_di, baseline_haq_di))  # type: ignore[arg-type]
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
    if _valid("pain", baseline_pain_mm) is not None and _valid("pain", visit_pain_mm) is not None:
        return Computed(_exact_difference(visit_pain_mm, baseline_pain_mm))  # type: ignore[arg-type]
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
