"""Bulk reads for the derivation: one SQL statement per resource type of a study.

The FHIR search API pages (``_count`` ≤ 1000, one statement per page plus a keyset
cursor); a derivation needs every input of a study at once, so these queries go to the
same tables directly (:mod:`service.db.schema`): the ``resource`` table holds the current
version of every resource, and the search index (``idx_reference``, ``idx_token``) holds
rows for current, non-deleted versions only, so a join through it never sees an old or a
deleted version. Each query is the SQL form of a FHIR search the derivation documents:

- ``ResearchSubject?study=ResearchStudy/{id}``;
- ``{type}?subject=Patient/{p}`` for every Patient ``p`` that such a ResearchSubject's
  ``individual`` references (``Observation?study=…`` is defined the same way,
  :mod:`service.search.sql` ``_special``), optionally also ``&code=…`` (token values);
- ``AdverseEvent?study=ResearchStudy/{id}``;
- ``{type}?_id=…`` for referenced resources (Patients, Encounters, Medications).

Rows are streamed (``yield_per``; a server-side cursor on PostgreSQL) so a 720,000-row
study is never held as bytes all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, Select, false, select

from service.db.schema import idx_reference, idx_token, resource

_CHUNK = 500


class Row(NamedTuple):
    """One current resource version as stored."""

    id: str
    version_id: int
    last_updated_us: int
    content: bytes


_COLS = (resource.c.id, resource.c.version_id, resource.c.last_updated_us, resource.c.content)


def _referencing(resource_type: str, param: str, target_type: str, target_ids: object) -> Select:
    """res_keys of ``resource_type`` whose ``param`` references ``target_type`` ids in ``target_ids``."""
    r = idx_reference.c
    return select(r.res_key).where(
        r.resource_type == resource_type, r.param == param, r.target_type == target_type, r.target_id.in_(target_ids)
    )


def _subjects_of(study_id: str) -> Select:
    r = idx_reference.c
    return select(r.res_key).where(
        r.resource_type == "ResearchSubject", r.param == "study", r.target_type == "ResearchStudy", r.target_id == study_id
    )


def _patients_of(study_id: str) -> Select:
    """Patient ids that a ResearchSubject of the study names as ``individual``."""
    r = idx_reference.c
    return select(r.target_id).where(
        r.resource_type == "ResearchSubject", r.param == "individual", r.target_type == "Patient", r.res_key.in_(_subjects_of(study_id))
    )


def _rows(conn: Connection, stmt: Select) -> Iterator[Row]:
    result = conn.execution_options(yield_per=5000).execute(stmt)
    for id_, version, lu, content in result:
        if content is not None:
            yield Row(id_, version, lu, bytes(content))


def _current(resource_type: str) -> Select:
    return select(*_COLS).where(resource.c.resource_type == resource_type, resource.c.deleted == false())


def research_subjects(conn: Connection, study_id: str) -> Iterator[Row]:
    """``ResearchSubject?study=ResearchStudy/{study_id}``."""
    return _rows(conn, _current("ResearchSubject").where(resource.c.res_key.in_(_subjects_of(study_id))))


def patients(conn: Connection, study_id: str) -> Iterator[Row]:
    """The Patients of the study's ResearchSubjects."""
    return _rows(conn, _current("Patient").where(resource.c.id.in_(_patients_of(study_id))))


def of_patients(
    conn: Connection, resource_type: str, study_id: str, *, param: str = "subject", code_values: Sequence[str] = ()
) -> Iterator[Row]:
    """``{resource_type}?{param}=Patient/…`` for the study's patients (``&code=`` when given).

    ``code_values`` filters on the token value of the ``code`` parameter only; the caller
    checks the system (contract §2: matched on system + code).
    """
    stmt = _current(resource_type).where(
        resource.c.res_key.in_(_referencing(resource_type, param, "Patient", _patients_of(study_id)))
    )
    if code_values:
        t = idx_token.c
        stmt = stmt.where(
            resource.c.res_key.in_(
                select(t.res_key).where(t.resource_type == resource_type, t.param == "code", t.value.in_(list(code_values)))
            )
        )
    return _rows(conn, stmt)


def of_study(conn: Connection, resource_type: str, study_id: str) -> Iterator[Row]:
    """``{resource_type}?study=ResearchStudy/{study_id}`` for types with a study reference (AdverseEvent)."""
    return _rows(conn, _current(resource_type).where(resource.c.res_key.in_(_referencing(resource_type, "study", "ResearchStudy", [study_id]))))


def by_ids(conn: Connection, resource_type: str, ids: Iterable[str]) -> Iterator[Row]:
    """``{resource_type}?_id=…`` in chunks of 500 ids."""
    wanted = sorted(set(ids))
    for i in range(0, len(wanted), _CHUNK):
        yield from _rows(conn, _current(resource_type).where(resource.c.id.in_(wanted[i : i + _CHUNK])))


__all__ = ["Row", "by_ids", "of_patients", "of_study", "patients", "research_subjects"]
