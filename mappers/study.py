"""Study ↔ ResearchStudy + PlanDefinition (schedule) + Group (cohort) + Medication (product).

**ResearchStudy** ``{study}``: ``identifier`` = the study code
(:data:`~mappers.codes.STUDY_IDENTIFIER_SYSTEM`) then the external/registry ids; title,
status, phase, condition, arms; ``focus`` = the product code in the local system;
``protocol`` → ``PlanDefinition/{study}-soa``; ``enrollment`` → ``Group/{study}-enrolled``;
the per-study settings in the ``study-endpoint-settings`` extension (documented in
:mod:`mappers.codes`; every setting written, defaults applied to missing ones on read).

**PlanDefinition** ``{study}-soa`` (Vulcan Schedule-of-Activities pattern, a
``StudyProtocolSoa``): ``type`` clinical-protocol and one action per study event:

- the index event, ``action.id`` = ``day-0`` (title "Day 0"): the start of the subject's
  first completed infusion of the study product (contract §3);
- one action per visit, ``title`` = the visit name, ``id`` = ``visit-{name}``, with one
  ``relatedAction`` to ``day-0``: ``relationship`` ``after-start`` (``before-start`` for a
  visit before day 0), ``offsetDuration`` = the target day in UCUM ``d``, and the
  window in the Vulcan ``AcceptableOffsetRangeSoa`` extension (``valueRange`` in ``d``,
  measured like the offset — from day 0 in the relationship's direction — so W4 ±7 is
  ``after-start`` 28 d, range 21–35 d and BL is ``after-start`` 0 d, range −28–0 d).

:func:`plan_definition_to_visits` reads that form and the variants other Vulcan
producers write: relationships ``before*``/``after*``/``concurrent*``, offsets in ``d``
or ``wk``, actions timed from another visit (offsets add up along the chain), an index
action that is itself a titled visit (day 0, window 0–0), and no range (window 0–0).

**Group** ``{study}-enrolled``: ``type`` person, ``actual`` true, one member per
subject (``entity`` → Patient, with the subject code as ``entity.identifier``).

**Medication** ``{product}``: ``code`` = the product code in the local system.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, NamedTuple, Optional

from mappers import codes, ids
from mappers._fhir import (
    MappingError,
    code_in,
    codings,
    concept,
    days,
    expect_type,
    extension,
    identifier_value,
)
from schemas.trial import (
    Arm,
    Coding,
    Das28CutPoints,
    EndpointSettings,
    Product,
    Study,
    StudyIdentifier,
    Subject,
    Visit,
    default_schedule,
)

__all__ = [
    "Cohort",
    "StudyResources",
    "group_to_cohort",
    "medication_to_product",
    "plan_definition_to_visits",
    "product_to_medication",
    "research_study_to_study",
    "settings_from_research_study",
    "settings_to_extension",
    "study_to_fhir",
    "study_to_group",
    "study_to_plan_definition",
    "study_to_research_study",
]


class StudyResources(NamedTuple):
    """The four resources a study maps to (iterate to get them in write order)."""

    research_study: dict[str, Any]
    plan_definition: dict[str, Any]
    group: dict[str, Any]
    medication: dict[str, Any]


class Cohort(NamedTuple):
    """What a study's Group says: the study and the subject codes of its members."""

    study_code: str
    subject_codes: list[str]


# --- settings extension -------------------------------------------------------------


def settings_to_extension(settings: EndpointSettings) -> dict[str, Any]:
    """The ``study-endpoint-settings`` extension holding every setting."""
    cuts = settings.das28_crp_cut_points
    sub: list[dict[str, Any]] = [
        {"url": codes.SETTING_ACR_APR, "valueCode": settings.acr_acute_phase_reactant},
        {
            "url": codes.SETTING_DAS28_CRP_CUT_POINTS,
            "extension": [
                {"url": codes.SETTING_CUT_REMISSION, "valueDecimal": cuts.remission},
                {"url": codes.SETTING_CUT_LOW, "valueDecimal": cuts.low},
                {"url": codes.SETTING_CUT_MODERATE, "valueDecimal": cuts.moderate},
            ],
        },
        {"url": codes.SETTING_HAQ_DI_SCORING, "valueCode": settings.haq_di_scoring},
    ]
    for definition, url in codes.SETTING_BOOLEAN_REMISSION.items():
        sub.append({"url": url, "valueBoolean": definition in settings.boolean_remission})
    return {"url": codes.EXT_STUDY_ENDPOINT_SETTINGS, "extension": sub}


def settings_from_research_study(research_study: dict[str, Any]) -> EndpointSettings:
    """The per-study settings of a ResearchStudy; defaults for whatever is not set."""
    ext = extension(research_study, codes.EXT_STUDY_ENDPOINT_SETTINGS)
    if ext is None:
        return EndpointSettings()
    values: dict[str, Any] = {}
    apr = extension(ext, codes.SETTING_ACR_APR)
    if apr is not None:
        values["acr_acute_phase_reactant"] = apr.get("valueCode")
    cuts = extension(ext, codes.SETTING_DAS28_CRP_CUT_POINTS)
    if cuts is not None:
        parts = {}
        for key in (codes.SETTING_CUT_REMISSION, codes.SETTING_CUT_LOW, codes.SETTING_CUT_MODERATE):
            part = extension(cuts, key)
            if part is None or "valueDecimal" not in part:
                raise MappingError(f"{codes.SETTING_DAS28_CRP_CUT_POINTS} lacks '{key}'")
            parts[key] = part["valueDecimal"]
        values["das28_crp_cut_points"] = Das28CutPoints(**parts)
    haq = extension(ext, codes.SETTING_HAQ_DI_SCORING)
    if haq is not None:
        values["haq_di_scoring"] = haq.get("valueCode")
    reported = []
    for definition, url in codes.SETTING_BOOLEAN_REMISSION.items():
        flag = extension(ext, url)
        if flag is None or flag.get("valueBoolean") is not False:
            reported.append(definition)
    values["boolean_remission"] = reported
    return EndpointSettings(**values)


# --- ResearchStudy ------------------------------------------------------------------


def study_to_research_study(study: Study) -> dict[str, Any]:
    """The ResearchStudy of ``study`` (see the module docstring)."""
    sid = ids.study_id(study.code)
    resource: dict[str, Any] = {
        "resourceType": "ResearchStudy",
        "id": sid,
        "extension": [settings_to_extension(study.settings)],
        "identifier": [
            {"use": "official", "system": codes.STUDY_IDENTIFIER_SYSTEM, "value": study.code},
            *({"system": i.system, "value": i.value} for i in study.identifiers),
        ],
        "title": study.title,
        "protocol": [ids.reference("PlanDefinition", ids.plan_definition_id(study.code))],
        "status": study.status,
        "phase": concept(codes.RESEARCH_STUDY_PHASE, study.phase, codes.RESEARCH_STUDY_PHASE_DISPLAY[study.phase]),
        "focus": [concept(codes.RA, study.product_code)],
        "condition": [{"coding": [_coding_json(study.condition)]}],
        "enrollment": [ids.reference("Group", ids.group_id(study.code))],
    }
    if study.arms:
        resource["arm"] = [_arm_json(arm) for arm in study.arms]
    return resource


def _coding_json(c: Coding) -> dict[str, Any]:
    out: dict[str, Any] = {"system": c.system, "code": c.code}
    if c.display:
        out["display"] = c.display
    return out


def _arm_json(arm: Arm) -> dict[str, Any]:
    out: dict[str, Any] = {"name": arm.name}
    if arm.type:
        out["type"] = concept(codes.RESEARCH_STUDY_ARM_TYPE, arm.type, codes.ARM_TYPE_DISPLAY[arm.type])
    if arm.description:
        out["description"] = arm.description
    return out


def research_study_to_study(
    research_study: dict[str, Any], plan_definition: Optional[dict[str, Any]] = None
) -> Study:
    """The Study of a ResearchStudy and its schedule PlanDefinition.

    Without ``plan_definition`` the schedule is the contract's default (§3).
    """
    rs = expect_type(research_study, "ResearchStudy")
    code = identifier_value(rs.get("identifier"), codes.STUDY_IDENTIFIER_SYSTEM)
    if code is None:
        raise MappingError(f"ResearchStudy has no identifier with system {codes.STUDY_IDENTIFIER_SYSTEM}")
    identifiers = [
        StudyIdentifier(system=i["system"], value=i["value"])
        for i in rs.get("identifier") or ()
        if isinstance(i, dict) and i.get("system") not in (None, codes.STUDY_IDENTIFIER_SYSTEM) and i.get("value")
    ]
    phase = code_in(rs.get("phase"), codes.RESEARCH_STUDY_PHASE)
    if phase is None:
        raise MappingError("ResearchStudy.phase has no research-study-phase code")
    values: dict[str, Any] = {
        "code": code,
        "identifiers": identifiers,
        "title": rs.get("title"),
        "phase": phase,
        "status": rs.get("status"),
        "arms": [_arm_from_json(a) for a in rs.get("arm") or ()],
        "settings": settings_from_research_study(rs),
    }
    condition = next((c for cc in rs.get("condition") or () for c in codings(cc)), None)
    if condition is not None:
        values["condition"] = Coding(**{k: condition[k] for k in ("system", "code", "display") if k in condition})
    product = next((code_in(f, codes.RA) for f in rs.get("focus") or () if code_in(f, codes.RA)), None)
    if product is not None:
        values["product_code"] = product
    if plan_definition is not None:
        values["schedule"] = plan_definition_to_visits(plan_definition)
    else:
        values["schedule"] = default_schedule()
    return Study(**values)


def _arm_from_json(arm: dict[str, Any]) -> Arm:
    return Arm(
        name=arm.get("name"),
        type=code_in(arm.get("type"), codes.RESEARCH_STUDY_ARM_TYPE),
        description=arm.get("description"),
    )


# --- PlanDefinition (schedule of activities) ----------------------------------------


def study_to_plan_definition(study: Study) -> dict[str, Any]:
    """The schedule PlanDefinition of ``study`` (Vulcan SoA pattern, module docstring)."""
    actions: list[dict[str, Any]] = [
        {
            "id": codes.DAY0_ACTION_ID,
            "title": "Day 0",
            "description": (
                "Index event: start of the subject's first completed infusion of the study "
                "product (ResearchSubject.period.start when there is none)."
            ),
        }
    ]
    for visit in study.schedule:
        after = visit.target_day >= 0
        sign = 1 if after else -1
        low, high = sorted((sign * visit.first_day, sign * visit.last_day))
        actions.append(
            {
                "id": f"visit-{visit.name}",
                "title": visit.name,
                "relatedAction": [
                    {
                        "extension": [
                            {
                                "url": codes.EXT_VULCAN_OFFSET_RANGE,
                                "valueRange": {"low": days(low), "high": days(high)},
                            }
                        ],
                        "actionId": codes.DAY0_ACTION_ID,
                        "relationship": "after-start" if after else "before-start",
                        "offsetDuration": days(sign * visit.target_day),
                    }
                ],
            }
        )
    return {
        "resourceType": "PlanDefinition",
        "id": ids.plan_definition_id(study.code),
        "title": f"Schedule of activities: {study.title}",
        "type": concept(codes.PLAN_DEFINITION_TYPE, "clinical-protocol", "Clinical Protocol"),
        "status": "active",
        "action": actions,
    }


_UNIT_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7}


def _to_days(q: Any, what: str) -> int:
    if not isinstance(q, dict) or "value" not in q:
        raise MappingError(f"{what} has no value")
    unit = q.get("code") if q.get("code") is not None else q.get("unit")
    factor = _UNIT_DAYS.get(unit) if isinstance(unit, str) else None
    if factor is None:
        raise MappingError(f"{what} is in '{unit}'; days (d) or weeks (wk) are needed")
    value = Decimal(str(q["value"])) * factor
    if value != value.to_integral_value():
        raise MappingError(f"{what} is not a whole number of days")
    comparator = q.get("comparator")
    if comparator:
        raise MappingError(f"{what} has a comparator ({comparator}); an exact offset is needed")
    return int(value)


def plan_definition_to_visits(plan_definition: dict[str, Any]) -> list[Visit]:
    """The visits of a schedule PlanDefinition, sorted by target day (module docstring)."""
    pd = expect_type(plan_definition, "PlanDefinition")
    actions = [a for a in pd.get("action") or () if isinstance(a, dict)]
    by_id = {a["id"]: a for a in actions if isinstance(a.get("id"), str)}
    referenced = {
        ra.get("actionId") for a in actions for ra in a.get("relatedAction") or () if isinstance(ra, dict)
    }
    resolved: dict[int, tuple[int, int, int]] = {}  # id(action) -> (target, first, last)

    def timing(action: dict[str, Any], trail: tuple[int, ...]) -> tuple[int, int, int]:
        key = id(action)
        if key in resolved:
            return resolved[key]
        if key in trail:
            raise MappingError(f"PlanDefinition actions are timed from each other in a cycle ('{action.get('title')}')")
        related = [ra for ra in action.get("relatedAction") or () if isinstance(ra, dict)]
        if not related:
            result = (0, 0, 0)  # the index event
        else:
            ra = related[0]
            what = f"PlanDefinition action '{action.get('title') or action.get('id')}'"
            anchor = by_id.get(ra.get("actionId"))
            if anchor is None:
                raise MappingError(f"{what} is timed from unknown action '{ra.get('actionId')}'")
            base = timing(anchor, trail + (key,))[0]
            relationship = ra.get("relationship") or ""
            sign = -1 if relationship.startswith("before") else 1
            if "offsetDuration" in ra:
                offset = _to_days(ra["offsetDuration"], f"{what} offsetDuration")
            elif "offsetRange" in ra:
                raise MappingError(f"{what} has offsetRange only; the target day needs offsetDuration")
            else:
                offset = 0
            window = extension(ra, codes.EXT_VULCAN_OFFSET_RANGE)
            if window is not None:
                rng = window.get("valueRange") or {}
                low = _to_days(rng.get("low"), f"{what} window low")
                high = _to_days(rng.get("high"), f"{what} window high")
            else:
                low = high = offset
            if not low <= offset <= high:
                raise MappingError(f"{what}: the window {low}..{high} d does not hold the offset {offset} d")
            target = base + sign * offset
            first, last = sorted((base + sign * low, base + sign * high))
            result = (target, first, last)
        resolved[key] = result
        return result

    visits = []
    for action in actions:
        if action.get("id") == codes.DAY0_ACTION_ID or not action.get("title"):
            continue
        if not action.get("relatedAction") and action.get("id") not in referenced:
            continue  # neither timed nor an index event: not a scheduled visit
        target, first, last = timing(action, ())
        visits.append(
            Visit(name=action["title"], target_day=target, window_low=first - target, window_high=last - target)
        )
    return sorted(visits, key=lambda v: (v.target_day, v.name))


# --- Group (cohort) -----------------------------------------------------------------


def study_to_group(study: Study, subjects: Iterable[Subject] = ()) -> dict[str, Any]:
    """The enrolled-cohort Group of ``study`` with ``subjects`` as members (in order)."""
    members = []
    for subject in subjects:
        if subject.study_code != study.code:
            raise MappingError(f"subject {subject.subject_code} belongs to study {subject.study_code}, not {study.code}")
        members.append(
            {
                "entity": {
                    "reference": f"Patient/{ids.patient_id(subject.study_code, subject.subject_code)}",
                    "identifier": {
                        "system": codes.subject_identifier_system(subject.study_code),
                        "value": subject.subject_code,
                    },
                }
            }
        )
    group: dict[str, Any] = {
        "resourceType": "Group",
        "id": ids.group_id(study.code),
        "identifier": [{"system": codes.COHORT_IDENTIFIER_SYSTEM, "value": study.code}],
        "type": "person",
        "actual": True,
        "name": f"Enrolled subjects of {study.code}",
        "quantity": len(members),
    }
    if members:
        group["member"] = members
    return group


def group_to_cohort(group: dict[str, Any]) -> Cohort:
    """The study code and member subject codes of a cohort Group."""
    g = expect_type(group, "Group")
    study_code = identifier_value(g.get("identifier"), codes.COHORT_IDENTIFIER_SYSTEM)
    if study_code is None:
        raise MappingError(f"Group has no identifier with system {codes.COHORT_IDENTIFIER_SYSTEM}")
    system = codes.subject_identifier_system(study_code)
    subject_codes = []
    for member in g.get("member") or ():
        code = identifier_value((member.get("entity") or {}).get("identifier"), system)
        if code is None:
            raise MappingError(f"Group member {member.get('entity')} has no subject code of study {study_code}")
        subject_codes.append(code)
    return Cohort(study_code, subject_codes)


# --- Medication (product) -----------------------------------------------------------


def product_to_medication(product: Product) -> dict[str, Any]:
    """The study-product Medication (code in the local system)."""
    return {
        "resourceType": "Medication",
        "id": ids.medication_id(product.code),
        "code": concept(codes.RA, product.code, product.display, text=product.display),
    }


def medication_to_product(medication: dict[str, Any]) -> Product:
    """The Product of a study-product Medication."""
    med = expect_type(medication, "Medication")
    for c in codings(med.get("code")):
        if c.get("system") == codes.RA and c.get("code"):
            display = c.get("display") or (med.get("code") or {}).get("text")
            return Product(code=c["code"], **({"display": display} if display else {}))
    raise MappingError(f"Medication has no code in {codes.RA}")


# --- all together -------------------------------------------------------------------


def study_to_fhir(
    study: Study, subjects: Iterable[Subject] = (), product: Optional[Product] = None
) -> StudyResources:
    """ResearchStudy, PlanDefinition, Group (members = ``subjects``) and Medication."""
    if product is None:
        display = codes.PRODUCT_DISPLAY if study.product_code == codes.PRODUCT_CODE else study.product_code
        product = Product(code=study.product_code, display=display)
    elif product.code != study.product_code:
        raise MappingError(f"product {product.code} is not the study's product {study.product_code}")
    return StudyResources(
        research_study=study_to_research_study(study),
        plan_definition=study_to_plan_definition(study),
        group=study_to_group(study, subjects),
        medication=product_to_medication(product),
    )
