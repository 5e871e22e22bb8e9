"""What the CapabilityStatement says about Bulk Data and $everything (read by
:mod:`service.capability.builder`, so the statement names only operations served here)."""

from __future__ import annotations

from typing import Any

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"

SYSTEM_OPERATIONS: list[dict[str, Any]] = [
    {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"},
]
TYPE_OPERATIONS: dict[str, list[dict[str, Any]]] = {
    "Patient": [
        {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"},
        {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
    ],
    "Group": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}],
    "ResearchStudy": [{"name": "everything", "definition": "http://trialfhir.org/fhir/OperationDefinition/ResearchStudy-everything"}],
}
