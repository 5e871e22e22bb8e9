"""``trialfhir export``: the whole Bulk Data flow against a server, with a progress bar.

Kick-off (``Prefer: respond-async``) → poll the status URL (honouring ``Retry-After``,
showing ``X-Progress``) → download every file of the manifest, streamed to disk →
write ``manifest.json`` → DELETE the job (unless ``--keep``). Files land as
``OUT/{Type}.{nnn}.ndjson``, with ``deleted/`` and ``error/`` folders as in
bulk-data-client and smart-fetch.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx


class ExportError(Exception):
    """The server refused or failed the export; the message says why."""


def _outcome_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
        return "; ".join(i.get("diagnostics") or i.get("code", "") for i in doc.get("issue", [])) or response.text
    except ValueError:
        return response.text[:500]


class Bar:
    """A one-line progress bar on stderr (silent when ``quiet``)."""

    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet
        self._shown = False

    def show(self, fraction: float | None, text: str) -> None:
        if self.quiet:
            return
        width = 30
        if fraction is None:
            bar = "." * width
        else:
            filled = int(width * max(0.0, min(1.0, fraction)))
            bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r[{bar}] {text[:90]:<90}")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = False


def kickoff_url(base: str, group: str | None, patients: bool) -> str:
    base = base.rstrip("/")
    if group:
        return f"{base}/Group/{group}/$export"
    return f"{base}/Patient/$export" if patients else f"{base}/$export"


def run_export(
    base_url: str,
    out: Path,
    *,
    types: list[str] | None = None,
    since: str | None = None,
    group: str | None = None,
    patients: bool = False,
    type_filters: list[str] | None = None,
    keep: bool = False,
    quiet: bool = False,
    stream: IO[str] = sys.stderr,
    client: httpx.Client | None = None,
    timeout: float = 24 * 3600,
) -> dict[str, Any]:
    """Run one export to ``out``; returns the manifest (also written to ``out/manifest.json``)."""
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(60.0, read=300.0), follow_redirects=True)
    bar = Bar(stream, quiet)
    try:
        params: list[tuple[str, str]] = []
        if types:
            params.append(("_type", ",".join(types)))
        if since:
            params.append(("_since", since))
        for f in type_filters or []:
            params.append(("_typeFilter", f))
        r = http.get(kickoff_url(base_url, group, patients), params=params, headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        if r.status_code != 202:
            raise ExportError(f"kick-off refused ({r.status_code}): {_outcome_text(r)}")
        status_url = r.headers["Content-Location"]
        deadline = time.monotonic() + timeout
        while True:
            s = http.get(status_url, headers={"Accept": "application/json"})
            if s.status_code == 200:
                manifest = s.json()
                break
            if s.status_code != 202:
                bar.done()
                raise ExportError(f"export failed ({s.status_code}): {_outcome_text(s)}")
            progress = s.headers.get("X-Progress", "in progress")
            m = re.search(r"(\d+)%", progress)
            bar.show(int(m.group(1)) / 100 if m else None, f"export: {progress}")
            if time.monotonic() > deadline:
                raise ExportError(f"the export did not finish within {timeout:.0f} s; it goes on at {status_url}")
            try:
                delay = float(s.headers.get("Retry-After", "1"))
            except ValueError:
                delay = 1.0
            time.sleep(max(0.1, min(delay, 30.0)))
        bar.show(1.0, "export: complete")
        bar.done()
        _download_all(http, manifest, out, bar)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if not keep:
            http.delete(status_url)
        return manifest
    finally:
        bar.done()
        if own:
            http.close()


def _download_all(http: httpx.Client, manifest: dict[str, Any], out: Path, bar: Bar) -> None:
    out.mkdir(parents=True, exist_ok=True)
    items: list[tuple[str, dict[str, Any]]] = [(kind, item) for kind in ("output", "deleted", "error") for item in manifest.get(kind) or []]
    total = sum(int(item.get("count") or 0) for _, item in items) or 1
    done = 0
    seq: dict[tuple[str, str], int] = {}
    headers = {"Accept": "application/fhir+ndjson"}
    for kind, item in items:
        folder = out if kind == "output" else out / kind
        folder.mkdir(parents=True, exist_ok=True)
        key = (kind, item["type"])
        seq[key] = seq.get(key, 0) + 1
        path = folder / f"{item['type']}.{seq[key]:03d}.ndjson"
        lines = 0
        with http.stream("GET", item["url"], headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise ExportError(f"download of {item['url']} failed ({response.status_code}): {_outcome_text(response)}")
            with open(path, "wb") as fh:
                for chunk in response.iter_bytes(256 * 1024):
                    fh.write(chunk)
                    n = chunk.count(b"\n")
                    lines += n
                    done += n
                    bar.show(done / total, f"download: {done}/{total} resources ({path.name})")
        if item.get("count") is not None and lines != int(item["count"]):
            raise ExportError(f"{item['url']}: {lines} lines, the manifest says {item['count']}")
