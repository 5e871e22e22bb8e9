"""PATCH bodies: JSON Patch (RFC 6902) and JSON merge patch (RFC 7386).

https://hl7.org/fhir/R4/http.html#patch names JSON Patch. fhirpy's ``resource.patch()``
sends a partial resource as ``application/json``; that is a merge patch, accepted too.
A malformed patch is a 400; a patch that cannot be applied (a failed ``test``, a path
that does not exist) is a 422.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from service.fhir.outcome import error


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(resource: dict[str, Any], patch_doc: Any, media_type: str) -> Any:
    """The patched resource (a new object; ``resource`` is not modified)."""
    if media_type == "application/json-patch+json" or isinstance(patch_doc, list):
        if not isinstance(patch_doc, list):
            raise error(400, "structure", "A JSON Patch body must be an array of operations (RFC 6902).")
        try:
            patch = jsonpatch.JsonPatch(patch_doc)
            return patch.apply(resource, in_place=False)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise error(422, "processing", f"The patch's test operation failed: {exc}") from None
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise error(422, "processing", f"The patch cannot be applied: {exc}") from None
        except (jsonpatch.InvalidJsonPatch, TypeError, KeyError, ValueError) as exc:
            raise error(400, "structure", f"The JSON Patch is malformed: {exc}") from None
    if isinstance(patch_doc, dict):
        if patch_doc.get("resourceType") == "Parameters":
            raise error(
                415,
                "not-supported",
                "FHIRPath Patch (a Parameters body) is not supported; send JSON Patch as application/json-patch+json.",
            )
        return merge_patch(resource, patch_doc)
    raise error(400, "structure", "A PATCH body must be a JSON Patch array or a JSON merge-patch object.")
