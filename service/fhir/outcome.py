"""OperationOutcome: how every FHIR error and informational message is expressed.

Raise :class:`FhirError` anywhere below the HTTP layer; the exception handler in
:mod:`service.errors` turns it into an ``OperationOutcome`` with the right status and no
stack trace. Issue codes come from http://hl7.org/fhir/R4/valueset-issue-type.html.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: severity, issue-type code, human text, FHIRPath locations."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """A request that cannot be honoured; ``status`` is the HTTP status to answer with."""

    status: int
    issues: list[Issue]
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # pragma: no cover - for logs
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)


def error(status: int, code: str, diagnostics: str, *, expression: tuple[str, ...] = (), headers: dict[str, str] | None = None) -> FhirError:
    """Shorthand for a one-issue :class:`FhirError`."""
    return FhirError(status, [Issue(code, diagnostics, expression=expression)], headers or {})


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """The OperationOutcome resource for ``issues`` (at least one issue, as R4 requires)."""
    if not issues:
        issues = [Issue("informational", "All OK", severity="information")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def info(diagnostics: str) -> dict[str, Any]:
    """An informational OperationOutcome (for ``Prefer: return=OperationOutcome``)."""
    return operation_outcome([Issue("informational", diagnostics, severity="information")])
