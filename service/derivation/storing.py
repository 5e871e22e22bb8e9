"""Which outputs a derivation must write, and which stored ones no longer exist (contract §5).

**Unchanged outputs are not sent.** Storing a resource makes the bytes
``{"resourceType":…,"id":…,"meta":{"versionId":…,"lastUpdated":…},<the rest>}``
(:func:`service.rest.service.stamp`). :func:`same_as_stored` tells whether an output's
serialisation equals a stored version apart from that ``meta`` — i.e. whether storing it
again would change nothing — without re-stamping (formatting the instant alone cost a
third of the comparison). Any layout it does not recognise counts as changed, which only
costs a write that the store then finds unchanged.

**Outputs that are no longer produced are deleted.** When an input disappears — deleted,
``entered-in-error``, a ResearchSubject removed from the study, a visit dropped from the
schedule, a Boolean remission definition no longer reported — the derivation stops
producing some ``Observation/{study}-{subject}-{visit}-{code}`` or
``MeasureReport/{study}-{code}-{visit}``. (A value whose inputs vanish while its subject ×
visit × code still exists is not stale: it is produced again without a value, with
``dataAbsentReason`` and the reason, as a new version.) The stored one is then deleted
through the one write path (a FHIR ``DELETE`` in a transaction Bundle: a new, deleted
version; a read answers 410 Gone; searches and Bulk export no longer return it; its
history keeps every version that was ever served). This is the FHIR-correct choice here,
rather than a status change:

- the R4 Observation status ``entered-in-error`` says the record "should never have
  existed", which is false — the value was right for the inputs it was derived from —
  and ``cancelled`` says the observation was not started or not completed, also false;
- R4 ``MeasureReport.status`` has no such code at all (``complete | pending | error``);
- clients that count search results (``Observation?code=…|acr20``) would have to know to
  filter by status; a deleted resource cannot be mistaken for a current one;
- if the output comes back (the input is restored), the next derivation recreates the
  same id (a new version after the deleted one), never a duplicate.

A stored output belongs to a study when its ``identifier``
(``http://trialfhir.org/fhir/sid/derived``) starts with ``{study code}|`` *and* its
``workflow-researchStudy`` extension names the study's ResearchStudy (so a study whose
code is a prefix of another's never touches the other's outputs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final, Mapping

from mappers import codes
from service.derivation.catalog import DERIVED_IDENTIFIER_SYSTEM
from service.derivation.queries import Row
from service.derivation.reading import extension_value, loads
from service.derivation.records import StudyContext
from service.fhir import jsonio

#: The resource types the derivation stores per study (Measures are shared by all studies).
OUTPUT_TYPES: Final = ("Observation", "MeasureReport")
_META: Final = re.compile(rb'"meta":\{"versionId":"[0-9]+","lastUpdated":"[0-9T:.Z-]+"\},')


def same_as_stored(content: bytes, resource: dict[str, Any]) -> bool:
    """Whether storing ``resource`` (which has no ``meta``) would give ``content`` again,
    apart from ``meta.versionId`` and ``meta.lastUpdated`` (module docstring)."""
    if "meta" in resource:
        return False
    ours = jsonio.dumps(resource)
    head = b'{"resourceType":"%s","id":"%s",' % (resource["resourceType"].encode(), resource["id"].encode())
    if not ours.startswith(head) or not content.startswith(head):
        return False
    meta = _META.match(content, len(head))
    return meta is not None and content[meta.end():] == ours[len(head):]


def output_prefix(study: StudyContext) -> str:
    """The start of the identifier value of every output of ``study``."""
    return f"{study.code}|"


def _belongs(doc: Any, study: StudyContext) -> bool:
    if not isinstance(doc, dict):
        return False
    reference = extension_value(doc, codes.EXT_WORKFLOW_RESEARCH_STUDY, "valueReference")
    if not isinstance(reference, dict) or reference.get("reference") != f"ResearchStudy/{study.resource_id}":
        return False
    prefix = output_prefix(study)
    return any(
        isinstance(i, dict) and i.get("system") == DERIVED_IDENTIFIER_SYSTEM and isinstance(i.get("value"), str) and i["value"].startswith(prefix)
        for i in doc.get("identifier") or ()
    )


def stale_outputs(stored: Mapping[str, Row], produced: Iterable[str], study: StudyContext) -> list[str]:
    """``Type/id`` of the stored outputs of ``study`` that the derivation no longer produces."""
    keep = set(produced)
    return sorted(key for key, row in stored.items() if key not in keep and _belongs(loads(row.content), study))


__all__ = ["OUTPUT_TYPES", "output_prefix", "same_as_stored", "stale_outputs"]
