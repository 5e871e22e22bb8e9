"""The resource repository: every SQL statement that reads or writes resource versions.

This module (with :mod:`service.storage.bulk`, which moves its rows straight to the
driver) is the only one that knows the storage tables. It works on an open
``Connection`` inside a transaction the caller owns (see :mod:`service.db.engine`), so
a conditional interaction, its search and its write commit or roll back together.
Content is opaque bytes here: validation, ids and meta are the service's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter

from sqlalchemy import Connection, bindparam, delete, func, insert, select, tuple_, update

from service.db.engine import TransactionConflict
from service.db.schema import INDEX_TABLES, resource, resource_version
from service.storage.bulk import INDEX, BulkWriter, StaleRow


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
        """Write many versions with one statement per table — every write's path.

        New resources are inserted and get their keys; existing ones are updated under
        their expected version (a concurrent change raises :class:`StaleVersionError`,
        retried by the transaction runner); every version goes to the history, the old
        index rows of updated/deleted resources go and the new index rows are inserted.
        The rows go straight to the driver (:mod:`service.storage.bulk`).
        """
        if not writes:
            return []
        with self.writing() as write:
            return write(writes)

    @contextmanager
    def writing(self) -> Iterator[Callable[[list[PendingWrite]], list[StoredVersion]]]:
        """:meth:`write_many` in slices: ``write(slice)`` for each. A transaction Bundle
        hands over its writes a slice at a time, so their index rows need not all exist at
        once; a concurrent change raises :class:`StaleVersionError`."""
        writer = BulkWriter(self.conn)
        yield lambda writes: self._write(writer, writes)

    @staticmethod
    def _write(writer: BulkWriter, writes: list[PendingWrite]) -> list[StoredVersion]:
        try:
            return ResourceRepository._write_rows(writer, writes)
        except StaleRow as stale:
            raise StaleVersionError(stale.resource_type, stale.id) from None

    @staticmethod
    def _write_rows(writer: BulkWriter, writes: list[PendingWrite]) -> list[StoredVersion]:
        if not writes:
            return []
        fresh = [w for w in writes if w.previous is None]
        updated = [w for w in writes if w.previous is not None]
        new_keys = iter(
            writer.insert_new([(w.resource_type, w.id, w.version_id, w.last_updated_us, w.content is None, w.content) for w in fresh])
        )
        writer.update_current(
            [
                (w.version_id, w.last_updated_us, w.content is None, w.content, w.previous.res_key, w.previous.version_id)  # type: ignore[union-attr]
                for w in updated
            ],
            [(w.resource_type, w.id) for w in updated],
        )
        keys = [next(new_keys) if w.previous is None else w.previous.res_key for w in writes]  # type: ignore[union-attr]
        versions = [
            (key, w.resource_type, w.id, w.version_id, w.last_updated_us, w.method, w.content is None, w.content)
            for key, w in zip(keys, writes)
        ]
        index: dict[str, list[tuple]] = {}
        for key, w in zip(keys, writes):
            if w.index:
                for name, rows in w.index.items():
                    if rows:
                        _index_tuples(name, key, w.resource_type, rows, index.setdefault(name, []))
        writer.insert_rest(versions, [w.previous.res_key for w in updated], index)  # type: ignore[union-attr]
        return [
            StoredVersion(key, w.resource_type, w.id, w.version_id, w.last_updated_us, w.content is None, w.content, w.method)
            for key, w in zip(keys, writes)
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


def _index_tuples(table: str, res_key: int, resource_type: str, rows: list[dict], out: list[tuple]) -> None:
    """Append ``rows`` (dicts from the indexer) to ``out`` as tuples in the table's column order."""
    head = (res_key, resource_type)
    getter = _ROW_GETTERS[table]
    try:
        out.extend([head + getter(row) for row in rows])
    except KeyError:  # a row that leaves optional columns out
        columns = INDEX[table].columns[2:]
        out.extend([head + tuple(row.get(c) for c in columns) for row in rows])


#: Per index table: the columns after res_key and resource_type, read from an index row
#: dict as a tuple (every index table has at least two of them, so itemgetter gives a tuple).
_ROW_GETTERS = {name: itemgetter(*spec.columns[2:]) for name, spec in INDEX.items()}
assert all(len(spec.columns) >= 4 for spec in INDEX.values())


class StaleVersionError(TransactionConflict):
    """The current version changed between reading and writing (a concurrent writer)."""

    def __init__(self, resource_type: str, id: str) -> None:
        super().__init__(f"{resource_type}/{id} changed concurrently")

