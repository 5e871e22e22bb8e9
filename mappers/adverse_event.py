"""AdverseEvent (trial entity) ↔ R4 AdverseEvent (contract §2, AE research back-port IG).

``AdverseEvent/{study}-{subject}-{ae}``:

- ``identifier`` (0..1 in R4): system ``http://trialfhir.org/fhir/sid/adverse-event``,
  value ``{study}|{subject}|{ae}``;
- ``actuality`` ``actual``; ``event``: ``text`` = the reported term, plus a MedDRA coding
  (``https://www.meddra.org``) when a code is given; ``subject`` → the Patient;
  ``date`` = onset;
- ``seriousness`` ``Serious``/``Non-serious`` (adverse-event-seriousness), ``severity``,
  ``outcome`` (R4 codes);
- ``suspectEntity`` (when the event followed an infusion or has a causality):
  ``instance`` → the MedicationAdministration it followed (with the infusion's
  business-key ``identifier`` on the Reference, ids being lower-case), else the product
  Medication; ``causality.assessment`` = the WHO-UMC code (adverse-event-causality-assess);
- ``study`` → the ResearchStudy;
- extensions: ``ae-grade`` (CTCAE grade, NCIt codes 1–4, local ``ctcae-grade-5``),
  ``resolve-date`` (the end date: R4 has no end element), one ``seriousness-criteria``
  per criterion met (``criterionCode`` ICH E2B code + ``criterionPresent`` true; serious
  events only, which always have at least one), ``ae-action-taken`` (local codes).
  URLs and rationale in :mod:`mappers.codes`.
"""

from __future__ import annotations

from typing import Any, Optional

from mappers import codes, ids
from mappers._fhir import (
    MappingError,
    code_in,
    codings,
    concept,
    expect_type,
    extension,
    extensions,
    fhir_datetime,
    identifier_value,
    parse_datetime,
    split_key,
)
from schemas.trial import AdverseEvent

__all__ = ["adverse_event_to_fhir", "fhir_to_adverse_event"]


def adverse_event_to_fhir(ae: AdverseEvent, *, product_code: str = codes.PRODUCT_CODE) -> dict[str, Any]:
    """The R4 AdverseEvent of ``ae``.

    ``product_code`` names the Medication used as suspect entity when the event has a
    causality assessment but did not follow a specific infusion.
    """
    s, p = ae.study_code, ae.subject_code
    exts: list[dict[str, Any]] = []
    if ae.grade is not None:
        system, code, display = codes.AE_GRADE_CODINGS[ae.grade]
        exts.append({"url": codes.EXT_AE_GRADE, "valueCodeableConcept": concept(system, code, display)})
    if ae.end is not None:
        exts.append({"url": codes.EXT_AE_RESOLVE_DATE, "valueDateTime": fhir_datetime(ae.end)})
    for criterion in ae.seriousness_criteria:
        code, display = codes.SERIOUSNESS_CRITERIA_CODES[criterion]
        exts.append(
            {
                "url": codes.EXT_AE_SERIOUSNESS_CRITERIA,
                "extension": [
                    {
                        "url": codes.SERIOUSNESS_CRITERION_CODE,
                        "valueCodeableConcept": concept(codes.ICH_E2B, code, display),
                    },
                    {"url": codes.SERIOUSNESS_CRITERION_PRESENT, "valueBoolean": True},
                ],
            }
        )
    if ae.action_taken is not None:
        exts.append(
            {
                "url": codes.EXT_AE_ACTION_TAKEN,
                "valueCodeableConcept": concept(
                    codes.RA, ae.action_taken, codes.AE_ACTION_TAKEN_CODES[ae.action_taken]
                ),
            }
        )
    event: dict[str, Any] = {"text": ae.term}
    if ae.meddra_code is not None:
        event = {"coding": [{"system": codes.MEDDRA, "code": ae.meddra_code, "display": ae.term}], "text": ae.term}
    seriousness = codes.SERIOUS if ae.serious else codes.NON_SERIOUS
    resource: dict[str, Any] = {"resourceType": "AdverseEvent", "id": ids.adverse_event_id(s, p, ae.ae_code)}
    if exts:
        resource["extension"] = exts
    resource.update(
        {
            "identifier": {"system": codes.ADVERSE_EVENT_IDENTIFIER_SYSTEM, "value": f"{s}|{p}|{ae.ae_code}"},
            "actuality": "actual",
            "event": event,
            "subject": ids.reference("Patient", ids.patient_id(s, p)),
            "date": fhir_datetime(ae.onset),
            "seriousness": concept(codes.AE_SERIOUSNESS, seriousness, seriousness),
            "severity": concept(codes.AE_SEVERITY, ae.severity, codes.AE_SEVERITY_DISPLAY[ae.severity]),
        }
    )
    if ae.outcome is not None:
        resource["outcome"] = concept(codes.AE_OUTCOME, ae.outcome, codes.AE_OUTCOME_DISPLAY[ae.outcome])
    if ae.infusion_code is not None or ae.relatedness is not None:
        if ae.infusion_code is not None:
            instance = {
                **ids.reference(
                    "MedicationAdministration", ids.medication_administration_id(s, p, ae.infusion_code)
                ),
                "identifier": {"system": codes.INFUSION_IDENTIFIER_SYSTEM, "value": f"{s}|{p}|{ae.infusion_code}"},
            }
        else:
            instance = ids.reference("Medication", ids.medication_id(product_code))
        suspect: dict[str, Any] = {"instance": instance}
        if ae.relatedness is not None:
            suspect["causality"] = [
                {
                    "assessment": concept(
                        codes.AE_CAUSALITY_ASSESS, ae.relatedness, codes.AE_CAUSALITY_DISPLAY[ae.relatedness]
                    )
                }
            ]
        resource["suspectEntity"] = [suspect]
    resource["study"] = [ids.reference("ResearchStudy", ids.study_id(s))]
    return resource


def _grade(resource: dict[str, Any]) -> Optional[int]:
    ext = extension(resource, codes.EXT_AE_GRADE)
    if ext is None:
        return None
    for c in codings(ext.get("valueCodeableConcept")):
        grade = codes.AE_GRADE_FROM_CODING.get((c.get("system"), c.get("code")))
        if grade is not None:
            return grade
    raise MappingError("the ae-grade extension has no recognised CTCAE grade code")


def _criteria(resource: dict[str, Any]) -> list[str]:
    found = []
    for ext in extensions(resource, codes.EXT_AE_SERIOUSNESS_CRITERIA):
        present = extension(ext, codes.SERIOUSNESS_CRITERION_PRESENT)
        if present is not None and present.get("valueBoolean") is False:
            continue
        code_ext = extension(ext, codes.SERIOUSNESS_CRITERION_CODE)
        code = code_in((code_ext or {}).get("valueCodeableConcept"), codes.ICH_E2B)
        if code not in codes.SERIOUSNESS_CRITERIA_FROM_CODE:
            raise MappingError(f"unrecognised seriousness criterion code {code!r}")
        found.append(codes.SERIOUSNESS_CRITERIA_FROM_CODE[code])
    return found


def _suspect(resource: dict[str, Any], ae_key: tuple[str, str]) -> tuple[Optional[str], Optional[str]]:
    """(infusion code, causality) of the first suspect entity."""
    suspects = [se for se in resource.get("suspectEntity") or () if isinstance(se, dict)]
    if not suspects:
        return None, None
    se = suspects[0]
    infusion_code: Optional[str] = None
    ma_id = ids.reference_id(se.get("instance"), "MedicationAdministration")
    if ma_id is not None:
        # ids are lower-cased: the exact infusion code travels in the reference's identifier
        ident = (se.get("instance") or {}).get("identifier")
        if isinstance(ident, dict) and ident.get("system") == codes.INFUSION_IDENTIFIER_SYSTEM:
            study_code, subject_code, infusion_code = split_key(ident.get("value"), 3, "suspectEntity.instance")
            if (study_code, subject_code) != ae_key:
                raise MappingError(f"suspectEntity infusion {ident.get('value')} is not an infusion of this subject")
        else:
            prefix = ids.make_id(*ae_key) + "-"
            if not ma_id.startswith(prefix) or len(ma_id) == len(prefix):
                raise MappingError(f"suspectEntity MedicationAdministration/{ma_id} is not an infusion of this subject")
            infusion_code = ma_id[len(prefix):]
    causality = None
    for c in se.get("causality") or ():
        causality = code_in(c.get("assessment"), codes.AE_CAUSALITY_ASSESS)
        if causality:
            break
    return infusion_code, causality


def fhir_to_adverse_event(resource: dict[str, Any]) -> AdverseEvent:
    """The trial AdverseEvent of an R4 AdverseEvent written by :func:`adverse_event_to_fhir`."""
    r = expect_type(resource, "AdverseEvent")
    s, p, a = split_key(identifier_value(r.get("identifier"), codes.ADVERSE_EVENT_IDENTIFIER_SYSTEM), 3, "AdverseEvent")
    event = r.get("event") or {}
    term = event.get("text") or next((c.get("display") for c in codings(event) if c.get("display")), None)
    seriousness = code_in(r.get("seriousness"), codes.AE_SERIOUSNESS)
    if seriousness not in (codes.SERIOUS, codes.NON_SERIOUS):
        raise MappingError(f"AdverseEvent.seriousness must be {codes.SERIOUS} or {codes.NON_SERIOUS}, got {seriousness!r}")
    infusion_code, causality = _suspect(r, (s, p))
    values: dict[str, Any] = {
        "study_code": s,
        "subject_code": p,
        "ae_code": a,
        "term": term,
        "meddra_code": code_in(event, codes.MEDDRA),
        "onset": parse_datetime(r.get("date"), "AdverseEvent.date"),
        "severity": code_in(r.get("severity"), codes.AE_SEVERITY),
        "grade": _grade(r),
        "serious": seriousness == codes.SERIOUS,
        "seriousness_criteria": _criteria(r),
        "relatedness": causality,
        "outcome": code_in(r.get("outcome"), codes.AE_OUTCOME),
        "infusion_code": infusion_code,
    }
    end = extension(r, codes.EXT_AE_RESOLVE_DATE)
    if end is not None:
        values["end"] = parse_datetime(end.get("valueDateTime"), "AdverseEvent resolve-date")
    action = extension(r, codes.EXT_AE_ACTION_TAKEN)
    if action is not None:
        values["action_taken"] = code_in(action.get("valueCodeableConcept"), codes.RA)
    return AdverseEvent(**values)
