"""Infusion ↔ MedicationAdministration.

``MedicationAdministration/{study}-{subject}-{infusion}``:

- ``identifier``: system ``http://trialfhir.org/fhir/sid/infusion``, value
  ``{study}|{subject}|{infusion}``;
- ``status`` (``completed`` for a given infusion), ``medicationReference`` →
  ``Medication/{product}``, ``subject`` → the Patient, ``effectivePeriod`` start/end;
- ``dosage.route`` SNOMED 47625008, ``dosage.dose`` in UCUM ``10*6/kg``;
- the lot in the ``lot-number`` extension (``valueString``): R4 MedicationAdministration
  has no lot element (rationale in :mod:`mappers.codes`);
- the study in the R4 core ``workflow-researchStudy`` extension.
"""

from __future__ import annotations

from typing import Any

from mappers import codes, ids
from mappers._fhir import (
    MappingError,
    codings,
    expect_type,
    extension,
    fhir_datetime,
    identifier_value,
    parse_datetime,
    quantity,
    split_key,
    to_decimal,
)
from schemas.trial import Coding, Infusion

__all__ = ["infusion_to_medication_administration", "medication_administration_to_infusion"]


def infusion_to_medication_administration(infusion: Infusion) -> dict[str, Any]:
    """The MedicationAdministration of ``infusion``."""
    s, p, i = infusion.study_code, infusion.subject_code, infusion.infusion_code
    extensions: list[dict[str, Any]] = [
        {
            "url": codes.EXT_WORKFLOW_RESEARCH_STUDY,
            "valueReference": ids.reference("ResearchStudy", ids.study_id(s)),
        }
    ]
    if infusion.lot is not None:
        extensions.append({"url": codes.EXT_LOT_NUMBER, "valueString": infusion.lot})
    period = {"start": fhir_datetime(infusion.start)}
    if infusion.end is not None:
        period["end"] = fhir_datetime(infusion.end)
    route: dict[str, Any] = {"system": infusion.route.system, "code": infusion.route.code}
    if infusion.route.display:
        route["display"] = infusion.route.display
    return {
        "resourceType": "MedicationAdministration",
        "id": ids.medication_administration_id(s, p, i),
        "extension": extensions,
        "identifier": [{"system": codes.INFUSION_IDENTIFIER_SYSTEM, "value": f"{s}|{p}|{i}"}],
        "status": infusion.status,
        "medicationReference": ids.reference("Medication", ids.medication_id(infusion.product_code)),
        "subject": ids.reference("Patient", ids.patient_id(s, p)),
        "effectivePeriod": period,
        "dosage": {
            "route": {"coding": [route]},
            "dose": quantity(infusion.dose_value, infusion.dose_unit, codes.DOSE_UNIT_DISPLAY),
        },
    }


def medication_administration_to_infusion(
    medication_administration: dict[str, Any], *, product_code: str | None = None
) -> Infusion:
    """The Infusion of a MedicationAdministration written by this module.

    The product code is the id of the referenced Medication unless ``product_code`` is
    given (ids are lower-cased; pass the code when it has capitals).
    """
    ma = expect_type(medication_administration, "MedicationAdministration")
    study_code, subject_code, infusion_code = split_key(
        identifier_value(ma.get("identifier"), codes.INFUSION_IDENTIFIER_SYSTEM), 3, "MedicationAdministration"
    )
    if product_code is None:
        product_code = ids.reference_id(ma.get("medicationReference"), "Medication")
        if product_code is None:
            raise MappingError("MedicationAdministration.medicationReference does not reference a Medication")
    period = ma.get("effectivePeriod")
    if isinstance(period, dict):
        start, end = period.get("start"), period.get("end")
    else:
        start, end = ma.get("effectiveDateTime"), None
    dosage = ma.get("dosage") or {}
    dose = dosage.get("dose")
    if not isinstance(dose, dict):
        raise MappingError("MedicationAdministration.dosage.dose is missing")
    if dose.get("system") != codes.UCUM:
        raise MappingError("MedicationAdministration.dosage.dose is not a UCUM quantity")
    values: dict[str, Any] = {
        "study_code": study_code,
        "subject_code": subject_code,
        "infusion_code": infusion_code,
        "start": parse_datetime(start, "MedicationAdministration effective start"),
        "product_code": product_code,
        "dose_value": to_decimal(dose.get("value"), "dosage.dose.value"),
        "dose_unit": dose.get("code"),
        "status": ma.get("status"),
    }
    if end is not None:
        values["end"] = parse_datetime(end, "MedicationAdministration effective end")
    route = next(codings(dosage.get("route")), None)
    if route is not None:
        values["route"] = Coding(**{k: route[k] for k in ("system", "code", "display") if k in route})
    lot = extension(ma, codes.EXT_LOT_NUMBER)
    if lot is not None:
        values["lot"] = lot.get("valueString")
    return Infusion(**values)
