"""The official examples through fhir.resources' R4B models, classified (used by
``test_examples_corpus.py``).

Lives in its own module so worker processes can import it: validating the 5,306 examples
with the R4B pydantic models is CPU-bound (about a minute in one process), so it runs on
every core, largest files first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

#: R4 resource types that R4B redefined incompatibly (same name, other elements):
#: R4B's Evidence has no ``exposureBackground`` and requires ``variableDefinition``.
REDEFINED_TYPES = frozenset({"Evidence"})

#: (resourceType, kind, detail); kind is None when R4B accepts the example, else one of
#: ``dropped-type`` (no R4B model class: an R4-only type), ``valueX-bug`` (only
#: fhir.resources issue #204), ``redefined-type`` (see REDEFINED_TYPES) or ``other``.
Verdict = tuple[str, str | None, str]


def is_valuex_in_extension(error: dict[str, Any]) -> bool:
    """fhir.resources issue #204: ``…extension[i]._valueString`` refused as an extra input
    (R4B's Extension model has no ``_valueX`` companions for a primitive value[x])."""
    loc = error.get("loc", ())
    return (
        error.get("type") == "extra_forbidden"
        and len(loc) >= 3
        and isinstance(loc[-1], str)
        and loc[-1].startswith("_value")
        and isinstance(loc[-2], int)
        and loc[-3] in ("extension", "modifierExtension")
    )


def verdict(path: str) -> Verdict:
    """Validate one example file, exactly as it is on disk, with its R4B model."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    raw = Path(path).read_bytes()
    resource_type = json.loads(raw)["resourceType"]
    try:
        model = get_fhir_model_class(resource_type)
    except ValueError as exc:
        return resource_type, "dropped-type", str(exc)
    try:
        model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        detail = f"{len(errors)} errors, " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
        if all(is_valuex_in_extension(e) for e in errors):
            return resource_type, "valueX-bug", detail
        if resource_type in REDEFINED_TYPES:
            return resource_type, "redefined-type", detail
        return resource_type, "other", detail
    return resource_type, None, ""


def verdicts(files: list[Path]) -> dict[str, Verdict]:
    """``verdict`` of every file, keyed by file name, on all cores (spawned workers: no
    fork of a process holding database connections)."""
    ordered = sorted(files, key=lambda p: p.stat().st_size, reverse=True)
    workers = max(1, min(os.cpu_count() or 1, 4))
    if workers == 1:
        return {p.name: verdict(str(p)) for p in ordered}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(verdict, [str(p) for p in ordered], chunksize=1)
        return {p.name: v for p, v in zip(ordered, results)}
