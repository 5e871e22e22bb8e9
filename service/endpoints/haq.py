"""HAQ-DI from item answers (ra-domain.md §1.7; LOINC 75874-8 scoring text).

Input is a plain mapping category → (item scores, aids_or_help). Mapping a FHIR
QuestionnaireResponse onto it is done elsewhere; the category keys and item counts here are
the constants that mapping should target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from enum import Enum
from typing import NamedTuple

from service.endpoints.result import Computed, NotComputable, Result

DRESSING_GROOMING = "dressing-grooming"
ARISING = "arising"
EATING = "eating"
WALKING = "walking"
HYGIENE = "hygiene"
REACH = "reach"
GRIP = "grip"
ACTIVITIES = "activities"

HAQ_CATEGORIES: Mapping[str, int] = {
    DRESSING_GROOMING: 2,
    ARISING: 2,
    EATING: 3,
    WALKING: 2,
    HYGIENE: 3,
    REACH: 2,
    GRIP: 3,
    ACTIVITIES: 3,
}
"""The 8 HAQ-DI categories and how many items each has (20 in all; Stanford HAQ)."""

MIN_CATEGORIES_ANSWERED = 6


class HaqScoring(str, Enum):
    """HAQ-DI scoring variant (per-study setting, contract §3; default adjusted)."""

    ADJUSTED = "adjusted"
    """Aids/devices or help from another person raise a category score of 0 or 1 to 2."""
    UNADJUSTED = "unadjusted"
    """Aids/devices and help are ignored (lower scores; J Rheumatol 2008;35:466)."""


class HaqCategoryAnswer(NamedTuple):
    """Answers for one category: item scores (0–3, ``None`` = unanswered) and aids/help used."""

    item_scores: Sequence[int | None]
    aids_or_help: bool = False


def haq_category_score(answer: HaqCategoryAnswer, scoring: HaqScoring = HaqScoring.ADJUSTED) -> int | None:
    """Category score = highest item score; adjusted for aids/help (0 or 1 → 2); ``None`` if no item answered.

    Source: LOINC 75874-8 term description (HAQ-DI scoring); Fries JF et al., Arthritis
    Rheum 1980;23:137–45; Bruce B, Fries JF, J Rheumatol 2003;30:167–78. Items must already
    be valid (see :func:`haq_di`).
    """
    answered = [score for score in answer.item_scores if score is not None]
    if not answered:
        return None
    score = max(answered)
    if scoring is HaqScoring.ADJUSTED and answer.aids_or_help and score < 2:
        score = 2
    return score


def _validate(answers: Mapping[str, HaqCategoryAnswer | tuple[Sequence[int | None], bool]]) -> list[str]:
    problems: list[str] = []
    for category, raw in answers.items():
        if category not in HAQ_CATEGORIES:
            problems.append(f"unknown HAQ-DI category {category!r}")
            continue
        try:
            items, aids = raw
            items = list(items)
        except (TypeError, ValueError):
            problems.append(f"{category}: expected (item scores, aids_or_help), got {raw!r}")
            continue
        if not isinstance(aids, bool):
            problems.append(f"{category}: aids_or_help must be true or false, got {aids!r}")
        if len(items) > HAQ_CATEGORIES[category]:
            problems.append(f"{category}: {len(items)} item scores given, the category has {HAQ_CATEGORIES[category]}")
        for score in items:
            if score is None:
                continue
            if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 3:
                problems.append(f"{category}: item score {score!r} is not one of 0, 1, 2, 3")
    return problems


def haq_di(
    answers: Mapping[str, HaqCategoryAnswer | tuple[Sequence[int | None], bool]],
    scoring: HaqScoring = HaqScoring.ADJUSTED,
) -> Result[Decimal]:
    """HAQ-DI = sum of category scores ÷ number of categories answered (0–3; higher is worse).

    Source: LOINC 75874-8 "Total score [HAQ-DI]" scoring rule; Fries JF et al., Arthritis
    Rheum 1980;23:137–45. Categories absent from ``answers`` or with no item answered are
    not answered; with fewer than 6 answered the score is not computed. Invalid answers
    (unknown category, item outside 0–3, too many items) make it not computable with the
    reason. The quotient is exact when it terminates (÷ 8), otherwise 28 significant digits.
    """
    scoring = HaqScoring(scoring)
    problems = _validate(answers)
    if problems:
        return NotComputable("; ".join(problems))
    scores = [
        score
        for raw in answers.values()
        if (score := haq_category_score(HaqCategoryAnswer(*raw), scoring)) is not None
    ]
    if len(scores) < MIN_CATEGORIES_ANSWERED:
        return NotComputable(
            f"only {len(scores)} of 8 HAQ-DI categories answered ({MIN_CATEGORIES_ANSWERED} needed)"
        )
    with localcontext() as ctx:
        ctx.prec = 28
        return Computed(Decimal(sum(scores)) / Decimal(len(scores)))


__all__ = [
    "ACTIVITIES",
    "ARISING",
    "DRESSING_GROOMING",
    "EATING",
    "GRIP",
    "HAQ_CATEGORIES",
    "HYGIENE",
    "MIN_CATEGORIES_ANSWERED",
    "REACH",
    "WALKING",
    "HaqCategoryAnswer",
    "HaqScoring",
    "haq_category_score",
    "haq_di",
]
