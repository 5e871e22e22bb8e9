"""The caller's rights for the current unit of work.

:class:`Access` is resolved once per request by :func:`service.context.request_context`
from the bearer token (SMART App Launch v2 Backend Services: the token carries the granted
``system/`` scopes; trialfhir also binds it to the client's studies) and held in a context
variable, so the service layer — REST interactions, search and includes, transaction and
batch entries, $everything, $export, $endpoints — checks the same rights wherever it runs
(``anyio.to_thread`` copies the context into worker threads).

The default, for code that runs outside a request (the CLI, the demo loader, the export
worker, tests that call the services directly), is :data:`FULL`: those are the server's own
actions. For HTTP requests with authorization on, the middleware first sets :data:`NO_TOKEN`,
so a route that forgot to resolve the caller is refused rather than served.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from service.auth.scopes import ADMIN_TYPES, INTERACTION_NAMES, ScopeSet, needed_scope
from service.fhir.outcome import FhirError, Issue


@dataclass(frozen=True, slots=True)
class Access:
    """Who acts and what they may do. ``scopes`` None = unrestricted (the server itself)."""

    client_id: str | None
    scopes: ScopeSet | None
    #: ResearchStudy ids (or study identifiers) the client is bound to; None = all studies.
    studies: frozenset[str] | None = None
    #: Why nothing is allowed (a request without a verified token), for the 403 text.
    denial: str = ""

    @property
    def unrestricted(self) -> bool:
        return self.scopes is None

    @property
    def study_bound(self) -> bool:
        return self.studies is not None

    def allows(self, resource_type: str, letter: str) -> bool:
        if self.scopes is None:
            return True
        if letter in "cud" and resource_type in ADMIN_TYPES:
            return False  # the audit trail is written by the server only
        return self.scopes.allows(resource_type, letter)

    def require(self, resource_type: str, letter: str, context: str = "") -> None:
        """403 naming the missing scope unless ``letter`` (c r u d s) is allowed on the type."""
        if self.allows(resource_type, letter):
            return
        raise forbidden(self._why(resource_type, letter, context))

    def _why(self, resource_type: str, letter: str, context: str) -> str:
        where = f"{context}: " if context else ""
        action = INTERACTION_NAMES[letter]
        if self.denial:
            return f"{where}{self.denial}"
        if letter in "cud" and resource_type in ADMIN_TYPES:
            return f"{where}{resource_type} resources are the audit trail; only the server writes them."
        granted = self.scopes.text if self.scopes is not None else ""
        return (
            f"{where}{action} on {resource_type} needs the scope {needed_scope(resource_type, letter)} "
            f"(or system/*.{letter}); this token was granted '{granted}'. Ask the server's administrator "
            f"to allow it for client {self.client_id} and request a new token with that scope."
        )


def forbidden(text: str) -> FhirError:
    return FhirError(403, [Issue("forbidden", text)])


#: The server's own work (CLI, background jobs, authorization off).
FULL = Access(client_id=None, scopes=None)
#: An HTTP request whose caller was not (yet) resolved: nothing is allowed.
NO_TOKEN = Access(client_id=None, scopes=ScopeSet(()), studies=frozenset(), denial="no verified access token was resolved for this request.")

_current: ContextVar[Access] = ContextVar("trialfhir_access", default=FULL)


def current_access() -> Access:
    """The rights of whoever the current unit of work acts for."""
    return _current.get()


def set_access(access: Access) -> None:
    """Set the rights for the rest of the current context (a request's dependency)."""
    _current.set(access)


@contextmanager
def acting_as(access: Access) -> Iterator[None]:
    """Run a block with other rights (the server's own writes of derived outputs)."""
    token = _current.set(access)
    try:
        yield
    finally:
        _current.reset(token)


__all__ = ["Access", "FULL", "NO_TOKEN", "acting_as", "current_access", "forbidden", "set_access"]
