"""Cohort summaries (contract §4 "Cohort summaries per visit").

Proportions, means, SDs and medians are computed in exact rational arithmetic and given
as ``Decimal`` (28 significant digits), so a summary never depends on the order of its
inputs. Confidence limits come from ``scipy.stats.beta.ppf`` as ``float``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

from scipy.stats import beta

from service.endpoints.inputs import Number, as_decimal

_DIGITS = 28


def _to_decimal(value: Fraction) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        return Decimal(value.numerator) / Decimal(value.denominator)


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """A two-sided confidence interval for a proportion."""

    lower: float
    upper: float
    level: float


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> ConfidenceInterval | None:
    """Exact (Clopper–Pearson) two-sided CI for a binomial proportion; ``None`` when ``trials`` is 0.

    Source: Clopper CJ, Pearson ES, Biometrika 1934;26:404–13. With α = 1 − level:
    lower = Beta⁻¹(α/2; x, n − x + 1), upper = Beta⁻¹(1 − α/2; x + 1, n − x), with lower 0
    when x = 0 and upper 1 when x = n. Quantiles from ``scipy.stats.beta.ppf``.
    4/6 → 0.2228–0.9567.
    """
    for name, number in (("successes", successes), ("trials", trials)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{name} must be an int, got {number!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 ≤ successes ≤ trials, got {successes}/{trials}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if trials == 0:
        return None
    alpha = 1.0 - level
    x, n = successes, trials
    lower = 0.0 if x == 0 else float(beta.ppf(alpha / 2, x, n - x + 1))
    upper = 1.0 if x == n else float(beta.ppf(1 - alpha / 2, x + 1, n - x))
    return ConfidenceInterval(lower=lower, upper=upper, level=level)


@dataclass(frozen=True, slots=True)
class BinarySummary:
    """Summary of a binary endpoint at one visit (contract §4, §5 ``observed`` and ``nri`` groups)."""

    cohort: int
    evaluable: int
    responders: int
    proportion: Decimal | None
    """responders / evaluable; ``None`` when nobody is evaluable."""
    ci: ConfidenceInterval | None
    """Clopper–Pearson CI of ``proportion``."""
    proportion_nri: Decimal | None
    """responders / cohort (non-responder imputation); ``None`` for an empty cohort."""
    ci_nri: ConfidenceInterval | None
    """Clopper–Pearson CI of ``proportion_nri``."""


def binary_summary(responders: int, evaluable: int, cohort: int, level: float = 0.95) -> BinarySummary:
    """Observed proportion and non-responder-imputed proportion, each with an exact CI.

    Source: contract §4 (denominator = evaluable subjects for the observed proportion, the
    whole cohort for NRI, where subjects who are not evaluable count as non-responders);
    CI per Clopper & Pearson 1934. Requires 0 ≤ responders ≤ evaluable ≤ cohort.
    """
    if not 0 <= responders <= evaluable <= cohort:
        raise ValueError(f"need 0 ≤ responders ≤ evaluable ≤ cohort, got {responders}, {evaluable}, {cohort}")
    return BinarySummary(
        cohort=cohort,
        evaluable=evaluable,
        responders=responders,
        proportion=_to_decimal(Fraction(responders, evaluable)) if evaluable else None,
        ci=clopper_pearson(responders, evaluable, level),
        proportion_nri=_to_decimal(Fraction(responders, cohort)) if cohort else None,
        ci_nri=clopper_pearson(responders, cohort, level),
    )


@dataclass(frozen=True, slots=True)
class ContinuousSummary:
    """n, mean, SD (sample, n − 1), median, min, max; statistics are ``None`` when undefined."""

    n: int
    mean: Decimal | None
    sd: Decimal | None
    median: Decimal | None
    minimum: Decimal | None
    maximum: Decimal | None


def continuous_summary(values: Iterable[Number | None]) -> ContinuousSummary:
    """Descriptive statistics of the non-missing ``values`` (``None`` entries are skipped).

    Source: contract §4 "continuous endpoints: n, mean, SD, median, min, max". SD is the
    sample SD (divisor n − 1), ``None`` for n < 2; the median of an even count is the mean
    of the two middle values. Computed exactly (SD: exact variance, then a 28-digit square
    root), so any permutation of ``values`` gives an identical result. Empty → n 0, Nones.
    """
    # Sort by value, then exponent, so equal values written differently (1 vs 1.0) order deterministically.
    numbers = sorted((as_decimal(v) for v in values if v is not None), key=lambda d: (d, d.as_tuple().exponent, d.is_signed()))
    n = len(numbers)
    if n == 0:
        return ContinuousSummary(n=0, mean=None, sd=None, median=None, minimum=None, maximum=None)
    exact = [Fraction(x) for x in numbers]
    mean = sum(exact, Fraction(0)) / n
    sd: Decimal | None = None
    if n >= 2:
        variance = sum(((x - mean) ** 2 for x in exact), Fraction(0)) / (n - 1)
        with localcontext() as ctx:
            ctx.prec = _DIGITS
            sd = (Decimal(variance.numerator) / Decimal(variance.denominator)).sqrt() if variance else Decimal(0)
    middle = n // 2
    median = exact[middle] if n % 2 else (exact[middle - 1] + exact[middle]) / 2
    return ContinuousSummary(
        n=n,
        mean=_to_decimal(mean),
        sd=sd,
        median=_to_decimal(median),
        minimum=numbers[0],
        maximum=numbers[-1],
    )


__all__ = [
    "BinarySummary",
    "ConfidenceInterval",
    "ContinuousSummary",
    "binary_summary",
    "clopper_pearson",
    "continuous_summary",
]
