"""The checks the service layer runs for every interaction, on the current :class:`Access`.

- scopes (SMART App Launch v2, scopes-and-launch-context.html): each interaction needs its
  letter on the resource type — read/vread/history ``r``, search ``s``, create ``c``,
  update/patch ``u`` (an update that creates also ``c``), delete ``d``; a missing letter is
  a 403 OperationOutcome naming the scope that would allow it;
- studies (:mod:`service.auth.studies`): a study-bound client reads only what its studies
  may see (anything else answers 404, as if absent, and is left out of searches and
  includes) and writes only resources that are visible both before and after the write
  (otherwise 403), all inside the write's own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, select

from service.auth.access import FULL, Access, acting_as, current_access, forbidden
from service.auth.studies import StudyView
from service.db.schema import resource
from service.fhir import jsonio
from service.fhir.outcome import FhirError, error
from service.search.indexing import parse_reference
from service.storage.repository import StoredVersion

#: Write methods (HTTP or Bundle.entry.request.method) → the scope letter they need.
WRITE_LETTER = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


def require(resource_type: str, letter: str, context: str = "") -> None:
    """403 unless the current caller's scopes allow ``letter`` on ``resource_type``."""
    current_access().require(resource_type, letter, context)


def allows(resource_type: str, letter: str) -> bool:
    return current_access().allows(resource_type, letter)


def study_view(conn: Connection) -> StudyView | None:
    """The visibility rule of the current caller, or None when it sees every study."""
    access = current_access()
    return StudyView(conn, access.studies) if access.studies is not None else None


def search_condition(conn: Connection, resource_type: str | None) -> Any | None:
    """A WHERE condition on ``resource`` limiting rows to what the caller may see (None: all)."""
    view = study_view(conn)
    return view.condition(resource_type) if view is not None else None


def readable(conn: Connection, versions: Sequence[StoredVersion], letter: str = "r") -> list[StoredVersion]:
    """``versions`` without those the caller may not read: types outside its scopes and,
    for a study-bound caller, resources outside its studies (``_include``/``_revinclude``)."""
    access = current_access()
    if access.unrestricted:
        return list(versions)
    kept = [v for v in versions if access.allows(v.resource_type, letter)]
    view = study_view(conn)
    if view is None or not kept:
        return kept
    visible = view.visible_keys(v.res_key for v in kept)
    return [v for v in kept if v.res_key in visible]


def not_found(resource_type: str, id: str) -> FhirError:
    return error(404, "not-found", f"{resource_type}/{id} does not exist.")


def check_visible(conn: Connection, version: StoredVersion) -> None:
    """404 (exactly as for an absent resource) unless a study-bound caller may see it.
    A deleted resource is not visible to a study-bound caller (its studies cannot be told)."""
    view = study_view(conn)
    if view is None:
        return
    if version.deleted or version.res_key not in view.visible_keys([version.res_key]):
        raise not_found(version.resource_type, version.id)


def check_visible_by_id(engine: Engine, resource_type: str, id: str) -> None:
    """:func:`check_visible` on the current version of ``resource_type/id`` (vread, history)."""
    if current_access().studies is None:
        return
    from service.db.engine import read_transaction
    from service.storage.repository import ResourceRepository

    with read_transaction(engine) as conn:
        found = ResourceRepository(conn).current(resource_type, id)
        if found is None:
            raise not_found(resource_type, id)
        check_visible(conn, found)


def _outside(access: Access, what: str) -> FhirError:
    studies = ", ".join(sorted(access.studies or ()))
    return forbidden(
        f"{what} is outside the studies this client is bound to ({studies}): it may write only those studies' own "
        "resources and the data of their subjects (ResearchSubject.study → individual Patient → the Patient's compartment). "
        "To enrol a new subject, write its Patient and ResearchSubject together in one transaction Bundle."
    )


def before_write(conn: Connection, previous: Iterable[StoredVersion | None]) -> None:
    """Inside the write transaction, before the write: the versions about to be replaced
    (or deleted) must be visible to a study-bound caller — else 403, nothing written."""
    access = current_access()
    if access.studies is None:
        return
    live = [p for p in previous if p is not None]
    if not live:
        return
    view = StudyView(conn, access.studies)
    for p in live:
        if p.deleted and p.version_id > 0:
            raise _outside(access, f"{p.resource_type}/{p.id} (a deleted resource whose history this client cannot see)")
    visible = view.visible_keys(p.res_key for p in live)
    for p in live:
        if p.res_key not in visible:
            raise _outside(access, f"{p.resource_type}/{p.id}")


def after_write(conn: Connection, written: Iterable[tuple[StoredVersion, StoredVersion | None]]) -> None:
    """Inside the write transaction, after the writes (index rows included): every new
    version must be visible to a study-bound caller, and a ResearchSubject may enrol only a
    Patient that was already a subject of the caller's studies or is created by this same
    request — else 403 and the whole transaction rolls back."""
    access = current_access()
    if access.studies is None:
        return
    pairs = [(v, p) for v, p in written if v is not None]
    live = [v for v, _ in pairs if not v.deleted]
    if not live:
        return
    view = StudyView(conn, access.studies)
    visible = view.visible_keys(v.res_key for v in live)
    for v in live:
        if v.res_key not in visible:
            raise _outside(access, f"{v.resource_type}/{v.id}")
    subjects = [v for v in live if v.resource_type == "ResearchSubject"]
    if not subjects:
        return
    created = {v.id for v, p in pairs if v.resource_type == "Patient" and not v.deleted and (p is None or p.deleted)}
    wanted: dict[str, StoredVersion] = {}
    for v in subjects:
        doc = jsonio.loads(v.content or b"{}")
        ref = (doc.get("individual") or {}).get("reference") if isinstance(doc.get("individual"), dict) else None
        if isinstance(ref, str):
            rtype, rid, _, _ = parse_reference(ref)
            if rtype == "Patient" and rid and rid not in created:
                wanted[rid] = v
    if not wanted:
        return
    r = resource.c
    existing = {row[0] for row in conn.execute(select(r.id).where(r.resource_type == "Patient", r.id.in_(sorted(wanted)))).all()}
    before = view.enrolled(existing, exclude_subject_keys=[v.res_key for v in subjects])
    for pid in sorted(existing - before):
        raise _outside(access, f"Patient/{pid} (enrolled by {wanted[pid].resource_type}/{wanted[pid].id})")


@contextmanager
def study_operation(study_id: str, reads: Sequence[str], *, engine: Engine, operation: str = "$endpoints") -> Iterator[None]:
    """An operation about one study that the server carries out itself ($endpoints, the
    study report): the
    caller needs ``r`` on ResearchStudy and on every type in ``reads`` and must see the
    study; the block then runs with the server's rights (its derived outputs are the
    server's writes, and touch only that study's data)."""
    access = current_access()
    if access.unrestricted:
        yield
        return
    for rtype in ("ResearchStudy", *reads):
        access.require(rtype, "r", f"{operation} of ResearchStudy/{study_id}")
    check_visible_by_id(engine, "ResearchStudy", study_id)
    with acting_as(FULL):
        yield


__all__ = [
    "WRITE_LETTER",
    "after_write",
    "allows",
    "before_write",
    "check_visible",
    "check_visible_by_id",
    "readable",
    "require",
    "search_condition",
    "study_operation",
    "study_view",
]


def export_types(types: list[str] | None, allowed: set[str], what: str) -> list[str] | None:
    """The types an export or ``$everything`` may return: each requested type needs ``r``
    (403 naming the scope); without ``_type``, the allowed types the caller may read
    (SMART Bulk Data: an export holds only what the client is authorised to read)."""
    access = current_access()
    if access.unrestricted:
        return types
    if types:
        for t in types:
            access.require(t, "r", what)
        return types
    readable = sorted(t for t in allowed if access.allows(t, "r"))
    if not readable:
        raise forbidden(f"{what}: this token may read none of the types it would return; ask for e.g. system/*.rs.")
    return readable


def audit_read(versions: Sequence[StoredVersion]) -> None:
    """Record resources returned to the caller in the request's AuditEvent."""
    from service.auth import audit

    audit.note_read(versions)
