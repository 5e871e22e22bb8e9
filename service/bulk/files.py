"""NDJSON output files of export jobs: writing, checkpointing, serving, deleting.

Layout: ``TRIALFHIR_EXPORT_DIR/{job id}/{name}.ndjson``; one file ("part") per resource
type per chunk of ``TRIALFHIR_EXPORT_FILE_MAX_RESOURCES`` lines. Lines are the stored
bytes of each resource followed by ``\\n``, written a batch at a time — resources are
never parsed or re-serialised on the way out (stored JSON is compact, so it holds no raw
newline).

Checkpoints record each part's line count and byte size. A part's bytes beyond its
recorded size are not part of the export: they were written after the last checkpoint
by an attempt that then died. A resumed attempt therefore never reopens an earlier
part — it starts new parts whose names carry its attempt number — and downloads serve
exactly the recorded bytes, so a writer that lost its lease cannot corrupt anything.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*\.ndjson$")
KIND_PREFIX = {"output": "", "deleted": "deleted-", "error": "error-"}


@dataclass
class Part:
    kind: str  # output | deleted | error
    type: str
    name: str
    count: int = 0
    size: int = 0


class OutputFiles:
    """The parts of one job attempt (earlier attempts' parts are kept, frozen)."""

    def __init__(self, directory: Path, attempt: int, parts: list[dict], file_max: int) -> None:
        self.directory = directory
        self.attempt = attempt
        self.file_max = file_max
        self.parts = [Part(**p) for p in parts]
        self._open: dict[tuple[str, str], tuple[Part, object]] = {}
        self._seq: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        directory.mkdir(parents=True, exist_ok=True)

    def _current(self, kind: str, rtype: str) -> tuple[Part, object]:
        key = (kind, rtype)
        found = self._open.get(key)
        if found is not None:
            return found
        # a name no part of this job has, nor any file left by an attempt that died (an attempt
        # handed back on shutdown keeps its number, so the number alone is not enough)
        used = {p.name for p in self.parts}
        seq = self._seq.get(key, 0)
        while True:
            seq += 1
            name = f"{KIND_PREFIX[kind]}{rtype}-{self.attempt}-{seq:03d}.ndjson"
            if name not in used and not (self.directory / name).exists():
                break
        self._seq[key] = seq
        part = Part(kind, rtype, name)
        fh = open(self.directory / part.name, "wb")  # noqa: SIM115 - closed by roll/close
        self.parts.append(part)
        self._open[key] = (part, fh)
        return part, fh

    def append(self, kind: str, rtype: str, lines: list[bytes]) -> None:
        """Write ``lines`` (each one JSON document, no newline) as NDJSON."""
        start = 0
        while start < len(lines):
            part, fh = self._current(kind, rtype)
            room = self.file_max - part.count
            take = lines[start : start + room]
            data = b"\n".join(take) + b"\n"
            fh.write(data)  # type: ignore[attr-defined]
            part.count += len(take)
            part.size += len(data)
            start += len(take)
            self._dirty.add((kind, rtype))
            if part.count >= self.file_max:
                self._close((kind, rtype))

    def _close(self, key: tuple[str, str]) -> None:
        part, fh = self._open.pop(key)
        fh.flush()  # type: ignore[attr-defined]
        os.fsync(fh.fileno())  # type: ignore[attr-defined]
        fh.close()  # type: ignore[attr-defined]

    def sync(self) -> None:
        """Make everything written so far durable (before a checkpoint records it)."""
        for key in list(self._dirty):
            entry = self._open.get(key)
            if entry is not None:
                _, fh = entry
                fh.flush()  # type: ignore[attr-defined]
                os.fsync(fh.fileno())  # type: ignore[attr-defined]
        self._dirty.clear()

    def close(self) -> None:
        for key in list(self._open):
            self._close(key)
        self._dirty.clear()

    def abandon(self) -> None:
        """Close without syncing (the attempt stops; nothing more is recorded)."""
        for _, fh in self._open.values():
            try:
                fh.close()  # type: ignore[attr-defined]
            except OSError:
                pass
        self._open.clear()

    def snapshot(self) -> list[dict]:
        return [asdict(p) for p in self.parts]

    def trim(self) -> None:
        """Cut every part to its recorded size (bytes past it came from an attempt that died)."""
        for p in self.parts:
            path = self.directory / p.name
            try:
                if path.stat().st_size > p.size:
                    os.truncate(path, p.size)
            except FileNotFoundError:
                pass


def job_dir(root: Path, job_id: str) -> Path:
    return root / job_id


def remove_job_files(root: Path, job_id: str) -> None:
    shutil.rmtree(job_dir(root, job_id), ignore_errors=True)


def read_limited(path: Path, size: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """The first ``size`` bytes of ``path``, in chunks (constant memory)."""
    remaining = size
    with open(path, "rb") as fh:
        while remaining > 0:
            data = fh.read(min(chunk, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
