"""Authorization of transaction and batch Bundles, entry by entry.

https://hl7.org/fhir/R4/http.html#transaction: each entry is an interaction of its own, so
each needs its own scope letter (:data:`service.auth.policy.WRITE_LETTER`; GET by id
``r``, GET search ``s``). In a transaction one forbidden entry fails the whole Bundle
with 403 before anything is written; in a batch only that entry fails. Writes are checked
against the caller's studies inside the Bundle's database transaction (before each flush
and after the last write) and recorded in its AuditEvent.

These hooks take the processor's entries as they are (``method``, ``resource_type``, ``id``,
``previous``, ``result``, ``skip_write``, ``status``, ``label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from service.auth import audit, policy
from service.storage.repository import StoredVersion

_READS = ("GET", "HEAD")


def authorize_entries(entries: Sequence[Any]) -> None:
    """403 for the first entry whose scope letter the caller lacks (before any database work)."""
    access = policy.current_access()
    if access.unrestricted:
        return
    for e in entries:
        if e.method in _READS:
            letter = "r" if e.id is not None else "s"
        else:
            letter = policy.WRITE_LETTER[e.method]
        access.require(e.resource_type, letter, f"{e.label} ({e.method} {e.resource_type})")


def before_flush(conn: Connection, entries: Sequence[Any]) -> None:
    """The versions these entries replace must be visible to a study-bound caller."""
    policy.before_write(conn, [e.previous for e in entries if not e.skip_write])


def _written(entries: Sequence[Any]) -> list[Any]:
    return [e for e in entries if e.method not in _READS and not e.skip_write and e.result is not None]


def after_writes(conn: Connection, entries: Sequence[Any]) -> None:
    """After the Bundle's writes, in its transaction: a PUT that created needs ``c`` too;
    every new version must be visible to a study-bound caller; then the AuditEvent."""
    written = _written(entries)
    if not written:
        return
    access = policy.current_access()
    if not access.unrestricted:
        for e in written:
            if e.method == "PUT" and (e.previous is None or e.previous.deleted):
                access.require(e.resource_type, "c", f"{e.label} (PUT {e.resource_type}/{e.target_id} creates it)")
    versions: list[tuple[StoredVersion, StoredVersion | None]] = [(e.result, e.previous) for e in written]
    policy.after_write(conn, versions)
    audit.record_writes(conn, [v for v, _ in versions])


def check_read(conn: Connection, found: StoredVersion) -> None:
    """A GET-by-id entry: 404 when a study-bound caller may not see the resource."""
    policy.check_visible(conn, found)
    audit.note_read([found])


def entry_failed(index: int, status: int, text: str) -> None:
    """A batch entry failed (the batch still answers 200): recorded in the request's AuditEvent."""
    audit.note_failure(f"Bundle.entry[{index}] {status}: {text}")


__all__ = ["after_writes", "authorize_entries", "before_flush", "check_read", "entry_failed"]
