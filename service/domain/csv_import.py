"""Bulk entry of assessments from CSV — the way coordinators hold the data.

One row per subject × visit: ``subject,visit,date`` then a column per measure named as
in :class:`schemas.trial.Measure` with its unit in brackets (``crp [mg/L]``,
``pain [mm]``); a measure column without a unit uses the measure's usual unit. Every row
is validated first — unknown subject, visit not in the schedule, date outside the visit's
window (study day from the subject's first completed infusion, else the consent date),
duplicate subject × visit, a value that is not a number, a unit the measure does not
accept, a value off its scale — and the report names row (the header is row 1), column
and reason. Nothing is written when any row is invalid unless ``partial`` is set; then
the valid rows are written and the invalid ones reported.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from schemas.trial import Assessment, Measure
from service.fhir.outcome import FhirError

DEFAULT_UNITS = {
    "tjc28": "{#}", "sjc28": "{#}", "ptga": "{score}", "ega": "{score}", "pain": "mm", "haq_di": "{score}",
    "esr": "mm/h", "crp": "mg/L", "anti_ccp": "U/mL", "rf": "[IU]/mL", "il10": "pg/mL", "tnf_alpha": "pg/mL",
    "il17a": "pg/mL", "treg_pct": "%", "th17_pct": "%",
}
_HEADER = re.compile(r"^\s*(?P<name>[A-Za-z0-9_\-]+)\s*(?:\[(?P<unit>[^\]]*)\])?\s*$")
WRITE_CHUNK = 2000


def _column(name: str) -> tuple[Measure, str] | str:
    m = _HEADER.match(name)
    if not m:
        return f"column '{name}' is not 'measure [unit]'"
    key = m["name"].lower().replace("-", "_")
    try:
        measure = Measure(key)
    except ValueError:
        return f"column '{name}' names no measure (known: {', '.join(x.value for x in Measure)})"
    return measure, (m["unit"].strip() if m["unit"] else DEFAULT_UNITS[measure.value])


def import_assessments_csv(
    service: Any,
    study_code: str,
    text: str,
    *,
    dry_run: bool = False,
    partial: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Validate (and unless ``dry_run``, write) the CSV; returns the validation report."""
    errors: list[dict[str, Any]] = []
    study = service.get_study(study_code)
    subjects = {s.subject_code.lower(): s for s in service.list_subjects(study.code)}
    day0: dict[str, date] = {}
    for infusion in service.list_infusions(study.code):
        if infusion.status == "completed":
            d = infusion.start.date()
            key = infusion.subject_code.lower()
            day0[key] = min(d, day0.get(key, d))
    for key, s in subjects.items():
        day0.setdefault(key, s.consent_date)
    visits = {v.name.upper(): v for v in study.schedule}

    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return {"valid": False, "rows": 0, "assessments": 0, "written": 0, "errors": [{"row": 1, "column": None, "reason": "the file is empty"}], "dry_run": dry_run, "partial": partial}
    header = [h.strip() for h in header]
    lowered = [h.lower() for h in header]
    for required in ("subject", "visit", "date"):
        if required not in lowered:
            errors.append({"row": 1, "column": required, "reason": f"the header has no '{required}' column"})
    columns: list[tuple[int, str, Measure, str]] = []
    for i, name in enumerate(header):
        if name.lower() in ("subject", "visit", "date"):
            continue
        parsed = _column(name)
        if isinstance(parsed, str):
            errors.append({"row": 1, "column": name, "reason": parsed})
        else:
            columns.append((i, name, parsed[0], parsed[1]))
    if errors:
        return {"valid": False, "rows": 0, "assessments": 0, "written": 0, "errors": errors, "dry_run": dry_run, "partial": partial}
    idx = {name: lowered.index(name) for name in ("subject", "visit", "date")}
    rows = list(reader)
    seen: dict[tuple[str, str], int] = {}
    good: list[Assessment] = []
    total = len(rows)
    for n, row in enumerate(rows, start=2):
        if progress and n % 200 == 0:
            progress(n - 1, total)
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (len(header) - len(row))
        row_errors: list[dict[str, Any]] = []
        subject = row[idx["subject"]].strip()
        visit_name = row[idx["visit"]].strip().upper()
        when_text = row[idx["date"]].strip()
        subj = subjects.get(subject.lower())
        if subj is None:
            row_errors.append({"row": n, "column": header[idx["subject"]], "reason": f"subject '{subject}' is not enrolled in study {study.code}"})
        visit = visits.get(visit_name)
        if visit is None:
            row_errors.append({"row": n, "column": header[idx["visit"]], "reason": f"visit '{visit_name}' is not in the schedule ({', '.join(visits)})"})
        when: date | None = None
        try:
            when = date.fromisoformat(when_text)
        except ValueError:
            row_errors.append({"row": n, "column": header[idx["date"]], "reason": f"'{when_text}' is not a date (YYYY-MM-DD)"})
        if subj is not None and visit is not None:
            key = (subj.subject_code, visit.name)
            if key in seen:
                row_errors.append({"row": n, "column": None, "reason": f"duplicate row: subject {subj.subject_code} visit {visit.name} is already on row {seen[key]}"})
            else:
                seen[key] = n
            if when is not None:
                study_day = (when - day0[subject.lower()]).days
                lo, hi = visit.target_day + visit.window_low, visit.target_day + visit.window_high
                if not lo <= study_day <= hi:
                    row_errors.append({"row": n, "column": header[idx["date"]], "reason": f"study day {study_day} is outside the {visit.name} window ({lo}..{hi})"})
        row_good: list[Assessment] = []
        for i, name, measure, unit in columns:
            cell = row[i].strip()
            if not cell:
                continue
            try:
                value = Decimal(cell)
            except InvalidOperation:
                row_errors.append({"row": n, "column": name, "reason": f"'{cell}' is not a number"})
                continue
            if subj is None or visit is None or when is None:
                continue
            try:
                row_good.append(
                    Assessment(study_code=study.code, subject_code=subj.subject_code, visit_name=visit.name, effective=when, measure=measure, value=value, unit=unit)
                )
            except ValidationError as exc:
                reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                row_errors.append({"row": n, "column": name, "reason": reason})
        if row_errors:
            errors.extend(row_errors)
        else:
            good.extend(row_good)
    valid = not errors
    written = 0
    if not dry_run and (valid or partial) and good:
        resources = [service.assessment_resources(a) for a in good]
        for start in range(0, len(resources), WRITE_CHUNK):
            try:
                service.write(resources[start : start + WRITE_CHUNK])
            except FhirError as exc:
                errors.append({"row": None, "column": None, "reason": "; ".join(i.diagnostics for i in exc.issues)})
                break
            written += len(resources[start : start + WRITE_CHUNK])
            if progress:
                progress(total, total)
    return {
        "valid": valid,
        "rows": total,
        "assessments": len(good),
        "written": written,
        "errors": errors,
        "dry_run": dry_run,
        "partial": partial,
    }
