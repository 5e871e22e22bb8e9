"""The CapabilityStatement, generated from what the server actually implements.

It reads the same tables routing and validation use — the R4 resource types, the
interactions the REST router serves and the search parameters that are indexed — so
the statement cannot promise something the server does not do.
"""

from __future__ import annotations

from typing import Any

from service.bulk.capability import BULK_DATA, SYSTEM_OPERATIONS, TYPE_OPERATIONS
from service.fhir.resource_types import FHIR_VERSION, RESOURCE_TYPES
from service.search.indexing import indexed_params
from service.search.registry import registry

#: Type-level interactions served by service.rest.router for every resource type.
TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type")
SYSTEM_INTERACTIONS = ("history-system",)


def capability_statement(base_url: str, software_version: str, now: str) -> dict[str, Any]:
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        params = []
        indexed = indexed_params(rtype)
        for code, p in sorted(registry().for_type(rtype).items()):
            if code in indexed or p.type == "special":
                params.append({"name": code, "definition": p.url, "type": p.type})
        resources.append(
            {
                "type": rtype,
                "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
                "interaction": [{"code": c} for c in TYPE_INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "modified-since",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": params,
                **({"operation": TYPE_OPERATIONS[rtype]} if rtype in TYPE_OPERATIONS else {}),
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "publisher": "trialfhir",
        "kind": "instance",
        "software": {"name": "trialfhir", "version": software_version},
        "implementation": {"description": "trialfhir FHIR R4 server for clinical trials", "url": base_url},
        "instantiates": [BULK_DATA],
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json", "application/merge-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "JSON only. Conditional create (If-None-Exist or POST [type]?criteria), "
                "conditional update/patch/delete are race-free on SQLite and PostgreSQL.",
                "resource": resources,
                "interaction": [{"code": c} for c in SYSTEM_INTERACTIONS],
                "operation": SYSTEM_OPERATIONS,
            }
        ],
    }
