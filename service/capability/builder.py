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


def security(base_url: str, smart: bool) -> dict[str, Any]:
    """``rest.security`` (https://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.security):
    SMART-on-FHIR with the token endpoint in the ``oauth-uris`` extension (SMART App Launch
    v2, conformance.html), or a plain statement that authorization is off."""
    if not smart:
        return {"cors": False, "description": "Authorization is off (TRIALFHIR_AUTH=off, loopback only): every local caller has all rights."}
    return {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": f"{base_url}/auth/token"}],
            }
        ],
        "cors": False,
        "service": [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}],
                "text": "SMART Backend Services (client_credentials, private_key_jwt RS384/ES384)",
            }
        ],
        "description": (
            "SMART App Launch v2 Backend Services: register with 'trialfhir clients add', sign a client assertion "
            f"(aud {base_url}/auth/token, exp at most 5 minutes), exchange it for a bearer token and send it as "
            "'Authorization: Bearer'. Scopes system/<Type|*>.<cruds> (v2) or .read/.write (v1) are enforced on every "
            "interaction, Bundle entry, _include/_revinclude, $everything, $export and $endpoints; a client bound to "
            f"studies sees only those studies' resources. Discovery: {base_url}/.well-known/smart-configuration."
        ),
    }


def capability_statement(base_url: str, software_version: str, now: str, *, smart: bool = False) -> dict[str, Any]:
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
                "security": security(base_url, smart),
                "resource": resources,
                "interaction": [{"code": c} for c in SYSTEM_INTERACTIONS],
                "operation": SYSTEM_OPERATIONS,
            }
        ],
    }
