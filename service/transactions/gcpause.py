"""Pause CPython's cyclic garbage collector while a Bundle is processed.

A 1,100-entry transaction allocates ~200,000 objects (the parsed Bundle, index rows, row
tuples) that all stay alive until the response is sent. Each young-generation collection
walks them again, and the full collections they trigger also walk every long-lived object
of the service (search registry, definitions, models): measured at ~150 ms of ~450 ms
CPU per such Bundle. None of it is garbage the collector could free — JSON trees and row
tuples have no reference cycles and go with their last reference — so the collector is
paused for the request and resumed after it (collections then resume on their usual
thresholds).

The switch is process-wide, so pauses are counted: concurrent requests keep it off until
the last one ends, and a collector that was already off stays off. The first collection
after a pause walks every object allocated during it that is still alive, so callers drop
their large structures before the block ends (see :mod:`service.transactions.router`).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_active = 0
_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cyclic collection inside the block (reference counting still frees)."""
    global _active, _resume
    with _lock:
        if _active == 0:
            _resume = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _resume:
                gc.enable()


__all__ = ["gc_paused"]
