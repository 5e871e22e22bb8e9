"""HAQ-DI from a QuestionnaireResponse, for visits without a reported HAQ-DI total.

Contract §2 names the HAQ-DI total (LOINC 75874-8) as the input; when a subject × visit has
no such Observation, the derivation scores the Stanford HAQ answers of a
QuestionnaireResponse instead (ra-domain.md §1.7, via :func:`service.endpoints.haq.haq_di`,
with the study's ``haqDiScoring`` setting). The questionnaire is recommended to be
``http://trialfhir.org/fhir/Questionnaire/haq-di`` but any QuestionnaireResponse whose
items use these ``linkId`` values is read (items may be nested in groups):

==============================  =============================================================
``linkId``                      answer
==============================  =============================================================
``haq-{category}-{n}``          item ``n`` (1-based) of the category: ``valueInteger`` 0–3,
                                ``valueDecimal`` with a whole value, or ``valueCoding`` whose
                                ``code`` is ``0``…``3`` (0 without any difficulty, 1 with
                                some, 2 with much difficulty, 3 unable to do)
``haq-{category}-aids``         ``valueBoolean``: aids or devices used for the category
``haq-{category}-help``         ``valueBoolean``: help from another person for the category
==============================  =============================================================

``{category}`` is one of ``dressing-grooming`` (2 items), ``arising`` (2), ``eating`` (3),
``walking`` (2), ``hygiene`` (3), ``reach`` (2), ``grip`` (3), ``activities`` (3)
(:data:`service.endpoints.haq.HAQ_CATEGORIES`). Other linkIds are ignored. Only responses
with status ``completed`` or ``amended`` are used; the date is ``authored`` and the visit
comes from it (or from ``encounter``) as for Observations (contract §3). A response that
cannot be scored (fewer than 6 categories answered, an answer outside 0–3, an item number
the category does not have) is set aside with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final, Union

from service.endpoints.haq import HAQ_CATEGORIES, HaqCategoryAnswer, HaqScoring, haq_di
from service.endpoints.result import NotComputable, Result
from service.derivation.reading import number

QUESTIONNAIRE: Final = "http://trialfhir.org/fhir/Questionnaire/haq-di"
USED_STATUSES: Final = frozenset({"completed", "amended"})
_LINK = re.compile(r"^haq-(" + "|".join(map(re.escape, HAQ_CATEGORIES)) + r")-(\d+|aids|help)$")


def _items(items: Any) -> Iterator[dict[str, Any]]:
    for item in items or ():
        if isinstance(item, dict):
            yield item
            yield from _items(item.get("item"))
            for answer in item.get("answer") or ():
                if isinstance(answer, dict):
                    yield from _items(answer.get("item"))


def _score(answer: dict[str, Any]) -> Union[int, str]:
    if "valueInteger" in answer:
        value = answer["valueInteger"]
        return value if isinstance(value, int) and not isinstance(value, bool) else f"{value!r} is not an integer"
    if "valueDecimal" in answer:
        value = number(answer["valueDecimal"])
        if value is not None and value == value.to_integral_value():
            return int(value)
        return f"{answer['valueDecimal']!r} is not a whole number"
    if "valueCoding" in answer:
        code = (answer["valueCoding"] or {}).get("code")
        return int(code) if isinstance(code, str) and code.isdigit() else f"code {code!r} is not 0–3"
    return "no valueInteger, valueDecimal or valueCoding"


def has_haq_items(response: dict[str, Any]) -> bool:
    """Whether the response has at least one HAQ linkId of the table above."""
    return any(isinstance(i.get("linkId"), str) and _LINK.match(i["linkId"]) for i in _items(response.get("item")))


def haq_di_of_response(response: dict[str, Any], scoring: str = "adjusted") -> Result[Decimal]:
    """The HAQ-DI of a QuestionnaireResponse (module docstring), or why it is not computable."""
    scores: dict[str, dict[int, int | None]] = {}
    aids: dict[str, bool] = {}
    problems: list[str] = []
    for item in _items(response.get("item")):
        link = item.get("linkId")
        match = _LINK.match(link) if isinstance(link, str) else None
        if match is None:
            continue
        category, part = match.groups()
        answers = [a for a in item.get("answer") or () if isinstance(a, dict)]
        if part in ("aids", "help"):
            aids[category] = aids.get(category, False) or any(a.get("valueBoolean") is True for a in answers)
            continue
        number_ = int(part)
        if not 1 <= number_ <= HAQ_CATEGORIES[category]:
            problems.append(f"{link}: the {category} category has items 1–{HAQ_CATEGORIES[category]}")
            continue
        if not answers:
            continue
        score = _score(answers[0])
        if isinstance(score, str):
            problems.append(f"{link}: {score}")
            continue
        scores.setdefault(category, {})[number_] = score
    if problems:
        return NotComputable("HAQ-DI QuestionnaireResponse: " + "; ".join(problems))
    answers_by_category = {
        category: HaqCategoryAnswer([items.get(i) for i in range(1, HAQ_CATEGORIES[category] + 1)], aids.get(category, False))
        for category, items in scores.items()
    }
    result = haq_di(answers_by_category, HaqScoring(scoring))
    if isinstance(result, NotComputable):
        return NotComputable(f"HAQ-DI QuestionnaireResponse: {result.reason}")
    return result


__all__ = ["QUESTIONNAIRE", "USED_STATUSES", "haq_di_of_response", "has_haq_items"]
