"""The resource repository: every SQL statement that reads or writes resource versions.

This is the only module that knows the storage tables. It works on an open
``Connection`` inside a transaction the caller owns (see :mod:`service.db.engine`), so
a conditional interaction, its search and its write commit or roll back together.
Content is opaque bytes here: validation, ids and meta are the service's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, insert, select, tuple_, update

from service.db.engine import TransactionConflict
from service.db.schema import INDEX_TABLES, resource, resource_version


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of one resource as stored."""

    res_key: int
    resource_type: str
    id: str
    version_id: int
    last_updated_us: int
    deleted: bool
    content: bytes | None
    method: str = ""
    seq: int = 0


_CURRENT_COLS = (
    resource.c.res_key,
    resource.c.resource_type,
    resource.c.id,
    resource.c.version_id,
    resource.c.last_updated_us,
    resource.c.deleted,
    resource.c.content,
)
_VERSION_COLS = (
    resource_version.c.res_key,
    resource_version.c.resource_type,
    resource_version.c.id,
    resource_version.c.version_id,
    resource_version.c.last_updated_us,
    resource_version.c.deleted,
    resource_version.c.content,
    resource_version.c.method,
    resource_version.c.seq,
)


@dataclass(slots=True)
class PendingWrite:
    """One version to write in a batch: ``content`` None is a delete."""

    resource_type: str
    id: str
    version_id: int
    last_updated_us: int
    method: str
    content: bytes | None
    previous: StoredVersion | None
    #: index rows per table (None for a delete)
    index: dict[str, list[dict]] | None


#: Built once: the hot paths should not rebuild their statements on every request.
_INSERT_RESOURCE_RETURNING = insert(resource).returning(resource.c.res_key, sort_by_parameter_order=True)
_INSERT_VERSION = insert(resource_version)
_INSERT_INDEX = {t.name: insert(t) for t in INDEX_TABLES}
_UPDATE_CURRENT = (
    update(resource)
    .where(resource.c.res_key == bindparam("k"), resource.c.version_id == bindparam("expected"))
    .values(version_id=bindparam("v"), last_updated_us=bindparam("lu"), deleted=bindparam("del"), content=bindparam("c"))
)
_CURRENT_BY_ID = select(*_CURRENT_COLS).where(resource.c.resource_type == bindparam("rt"), resource.c.id == bindparam("rid"))
_CURRENT_BY_ID_LOCKED = _CURRENT_BY_ID.with_for_update()


class ResourceRepository:
    """SQL for the FHIR interactions of https://hl7.org/fhir/R4/http.html."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # --- read / vread -------------------------------------------------------------

    def current(self, resource_type: str, id: str, *, for_update: bool = False) -> StoredVersion | None:
        """The current version (deleted or not) — https://hl7.org/fhir/R4/http.html#read."""
        stmt = _CURRENT_BY_ID_LOCKED if for_update and self.conn.dialect.name == "postgresql" else _CURRENT_BY_ID
        row = self.conn.execute(stmt, {"rt": resource_type, "rid": id}).first()
        return StoredVersion(*row) if row else None

    def current_many(self, refs: Sequence[tuple[str, str]], *, for_update: bool = False) -> dict[tuple[str, str], StoredVersion]:
        """Current versions of many (type, id) pairs in one query (a transaction's updates)."""
        out: dict[tuple[str, str], StoredVersion] = {}
        unique = list(dict.fromkeys(refs))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            stmt = select(*_CURRENT_COLS).where(tuple_(resource.c.resource_type, resource.c.id).in_(chunk))
            if for_update and self.conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            for row in self.conn.execute(stmt).all():
                v = StoredVersion(*row)
                out[(v.resource_type, v.id)] = v
        return out

    def current_by_keys(self, res_keys: Sequence[int]) -> list[StoredVersion]:
        """Current versions for index hits, in the order of ``res_keys``."""
        if not res_keys:
            return []
        rows = self.conn.execute(select(*_CURRENT_COLS).where(resource.c.res_key.in_(list(res_keys)))).all()
        by_key = {r.res_key: StoredVersion(*r) for r in rows}
        return [by_key[k] for k in res_keys if k in by_key]

    def version(self, resource_type: str, id: str, version_id: int) -> StoredVersion | None:
        """One historical version — https://hl7.org/fhir/R4/http.html#vread."""
        row = self.conn.execute(
            select(*_VERSION_COLS).where(
                resource_version.c.resource_type == resource_type,
                resource_version.c.id == id,
                resource_version.c.version_id == version_id,
            )
        ).first()
        return StoredVersion(*row) if row else None

    # --- write --------------------------------------------------------------------

    def write_version(
        self,
        *,
        previous: StoredVersion | None,
        resource_type: str,
        id: str,
        version_id: int,
        last_updated_us: int,
        method: str,
        content: bytes | None,
    ) -> int:
        """Store a new version and make it current; returns the resource's ``res_key``.

        ``content`` is None for a delete. The unique constraints on (type, id) and
        (res_key, version) turn a lost race into an IntegrityError, which the
        transaction runner retries.
        """
        deleted = content is None
        if previous is None:
            res_key = self.conn.execute(
                insert(resource)
                .values(
                    resource_type=resource_type,
                    id=id,
                    version_id=version_id,
                    last_updated_us=last_updated_us,
                    deleted=deleted,
                    content=content,
                )
                .returning(resource.c.res_key)
            ).scalar_one()
        else:
            res_key = previous.res_key
            result = self.conn.execute(
                update(resource)
                .where(resource.c.res_key == res_key, resource.c.version_id == previous.version_id)
                .values(version_id=version_id, last_updated_us=last_updated_us, deleted=deleted, content=content)
            )
            if result.rowcount != 1:
                raise StaleVersionError(resource_type, id)
        self.conn.execute(
            insert(resource_version).values(
                res_key=res_key,
                resource_type=resource_type,
                id=id,
                version_id=version_id,
                last_updated_us=last_updated_us,
                method=method,
                deleted=deleted,
                content=content,
            )
        )
        return res_key

    def replace_index(self, res_key: int, resource_type: str, tables: dict[str, list[dict]] | None, *, fresh: bool = False) -> None:
        """Replace the search index rows of one resource (``tables`` None: remove them all).

        ``fresh`` skips the deletes for a resource that never had rows (a create).
        One executemany per non-empty table.
        """
        if not fresh:
            for table in INDEX_TABLES:
                self.conn.execute(delete(table).where(table.c.res_key == res_key))
        if not tables:
            return
        by_name = {t.name: t for t in INDEX_TABLES}
        for name, rows in tables.items():
            if rows:
                for row in rows:
                    row["res_key"] = res_key
                    row["resource_type"] = resource_type
                self.conn.execute(insert(by_name[name]), rows)

    def write_many(self, writes: list[PendingWrite]) -> list[StoredVersion]:
        """Write many versions with one statement per table (a transaction's fast path).

        New resources are inserted with executemany + RETURNING; existing ones are
        updated under their expected version (a concurrent change raises
        :class:`StaleVersionError`, retried by the transaction runner); every version
        goes to the history and every index row to its table in one executemany each.
        """
        if not writes:
            return []
        keys: list[int | None] = [w.previous.res_key if w.previous else None for w in writes]
        fresh = [i for i, w in enumerate(writes) if w.previous is None]
        if fresh:
            result = self.conn.execute(
                _INSERT_RESOURCE_RETURNING,
                [
                    {
                        "resource_type": writes[i].resource_type,
                        "id": writes[i].id,
                        "version_id": writes[i].version_id,
                        "last_updated_us": writes[i].last_updated_us,
                        "deleted": writes[i].content is None,
                        "content": writes[i].content,
                    }
                    for i in fresh
                ],
            )
            for i, row in zip(fresh, result.all()):
                keys[i] = row[0]
        for i, w in enumerate(writes):
            if w.previous is None:
                continue
            res = self.conn.execute(
                _UPDATE_CURRENT,
                {"k": w.previous.res_key, "expected": w.previous.version_id, "v": w.version_id, "lu": w.last_updated_us, "del": w.content is None, "c": w.content},
            )
            if res.rowcount != 1:
                raise StaleVersionError(w.resource_type, w.id)
        self.conn.execute(
            _INSERT_VERSION,
            [
                {
                    "res_key": keys[i],
                    "resource_type": w.resource_type,
                    "id": w.id,
                    "version_id": w.version_id,
                    "last_updated_us": w.last_updated_us,
                    "method": w.method,
                    "deleted": w.content is None,
                    "content": w.content,
                }
                for i, w in enumerate(writes)
            ],
        )
        stale = [keys[i] for i, w in enumerate(writes) if w.previous is not None]
        if stale:
            for table in INDEX_TABLES:
                self.conn.execute(delete(table).where(table.c.res_key.in_(stale)))
        by_table: dict[str, list[dict]] = {}
        for i, w in enumerate(writes):
            if not w.index:
                continue
            for name, rows in w.index.items():
                if rows:
                    bucket = by_table.setdefault(name, [])
                    for row in rows:
                        row["res_key"] = keys[i]
                        row["resource_type"] = w.resource_type
                    bucket.extend(rows)
        for name, rows in by_table.items():
            self.conn.execute(_INSERT_INDEX[name], rows)
        return [
            StoredVersion(keys[i], w.resource_type, w.id, w.version_id, w.last_updated_us, w.content is None, w.content, w.method)  # type: ignore[arg-type]
            for i, w in enumerate(writes)
        ]

    def amend(self, stored: StoredVersion, write: PendingWrite) -> StoredVersion:
        """Replace the content and index rows of a version written earlier in this transaction."""
        self.conn.execute(
            update(resource).where(resource.c.res_key == stored.res_key, resource.c.version_id == stored.version_id).values(content=write.content)
        )
        self.conn.execute(
            update(resource_version)
            .where(resource_version.c.res_key == stored.res_key, resource_version.c.version_id == stored.version_id)
            .values(content=write.content)
        )
        self.replace_index(stored.res_key, stored.resource_type, write.index)
        return StoredVersion(stored.res_key, stored.resource_type, stored.id, stored.version_id, stored.last_updated_us, False, write.content, stored.method)

    # --- history --------------------------------------------------------------------

    def history(
        self,
        *,
        resource_type: str | None,
        id: str | None,
        since_us: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[StoredVersion]:
        """Versions newest first — https://hl7.org/fhir/R4/http.html#history.

        Paged by keyset on ``seq`` (``before_seq`` is the last seq of the previous page),
        so pages stay correct while new versions are written.
        """
        stmt = self._history_filter(select(*_VERSION_COLS), resource_type, id, since_us)
        if before_seq is not None:
            stmt = stmt.where(resource_version.c.seq < before_seq)
        stmt = stmt.order_by(resource_version.c.seq.desc()).limit(limit)
        return [StoredVersion(*r) for r in self.conn.execute(stmt).all()]

    def history_count(self, *, resource_type: str | None, id: str | None, since_us: int | None) -> int:
        stmt = self._history_filter(select(func.count()).select_from(resource_version), resource_type, id, since_us)
        return int(self.conn.execute(stmt).scalar_one())

    @staticmethod
    def _history_filter(stmt, resource_type: str | None, id: str | None, since_us: int | None):  # type: ignore[no-untyped-def]
        if resource_type is not None:
            stmt = stmt.where(resource_version.c.resource_type == resource_type)
        if id is not None:
            stmt = stmt.where(resource_version.c.id == id)
        if since_us is not None:
            stmt = stmt.where(resource_version.c.last_updated_us >= since_us)
        return stmt


class StaleVersionError(TransactionConflict):
    """The current version changed between reading and writing (a concurrent writer)."""

    def __init__(self, resource_type: str, id: str) -> None:
        super().__init__(f"{resource_type}/{id} changed concurrently")

