"""Custom SearchParameters and ``trialfhir reindex``.

Adding a search parameter is a data change plus a reindex: POST a SearchParameter
resource (or edit the checked-in tables), then run ``trialfhir reindex``. It rebuilds
every current resource's index rows with the new table, then bumps the database's
search generation; every server process notices within a second and starts using the
new parameters. Resources written while the reindex ran are indexed again at the end,
so none is left without the new rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, false, func, select, update

from service.db.engine import active_engine
from service.db.schema import resource, resource_version, search_state
from service.fhir import jsonio


def load_state(engine: Engine, known_generation: int | None) -> tuple[int, list[dict[str, Any]] | None]:
    """(generation, stored SearchParameters) — the list is None when the generation is unchanged."""
    with engine.connect() as conn:
        generation = conn.execute(select(search_state.c.generation).where(search_state.c.id == 1)).scalar()
        generation = int(generation or 0)
        if known_generation is not None and generation == known_generation:
            return generation, None
        if generation == 0:
            return 0, []
        rows = conn.execute(
            select(resource.c.content).where(resource.c.resource_type == "SearchParameter", resource.c.deleted == false())
        ).all()
    return generation, [jsonio.loads(r[0]) for r in rows]


def reindex(engine: Engine, *, batch_size: int = 500, progress: Callable[[int, int], None] | None = None) -> int:
    """Rebuild the index of every current resource; returns how many were indexed."""
    from service.search import registry as registry_module
    from service.search.indexing import index_resource
    from service.storage.repository import ResourceRepository

    with engine.connect() as conn:
        stored = [
            jsonio.loads(r[0])
            for r in conn.execute(
                select(resource.c.content).where(resource.c.resource_type == "SearchParameter", resource.c.deleted == false())
            ).all()
        ]
        total = int(conn.execute(select(func.count()).select_from(resource).where(resource.c.deleted == false())).scalar_one())
        start_seq = int(conn.execute(select(func.coalesce(func.max(resource_version.c.seq), 0))).scalar_one())
        generation = int(conn.execute(select(search_state.c.generation).where(search_state.c.id == 1)).scalar() or 0)
    new_registry = registry_module.build(stored, generation + 1)
    key = id(engine)
    import time

    registry_module._per_engine[key] = (new_registry, time.monotonic() + 10**9)  # pin for this process

    def index_keys(keys_filter: Any) -> int:
        done = 0
        last = 0
        while True:
            with engine.begin() as conn:
                active_engine.set(engine)
                rows = conn.execute(
                    select(resource.c.res_key, resource.c.resource_type, resource.c.content)
                    .where(resource.c.deleted == false(), resource.c.res_key > last, keys_filter)
                    .order_by(resource.c.res_key)
                    .limit(batch_size)
                ).all()
                if not rows:
                    return done
                repo = ResourceRepository(conn)
                for res_key, rtype, content in rows:
                    repo.replace_index(res_key, rtype, index_resource(rtype, jsonio.loads(content)).tables())
                last = rows[-1][0]
                done += len(rows)
            if progress:
                progress(done, total)

    try:
        count = index_keys(resource.c.res_key.is_not(None))
        with engine.begin() as conn:
            conn.execute(update(search_state).where(search_state.c.id == 1).values(generation=generation + 1))
        changed = select(resource_version.c.res_key).where(resource_version.c.seq > start_seq)
        index_keys(resource.c.res_key.in_(changed))
    finally:
        registry_module.forget(engine)
    return count
