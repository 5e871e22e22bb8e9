"""Fetch the official HL7 FHIR R4 examples package, checksum-pinned and cached.

The package ``hl7.fhir.r4.examples@4.0.1`` (HL7 Inc., CC0) holds the 5,306 official
example resources, the 655 StructureDefinitions, the ValueSets and CodeSystems and
``Bundle-searchParams.json`` (the official R4 search parameters). Tests use it as
material nobody here wrote; ``scripts/generate_definitions.py`` turns it into the
checked-in tables the service is driven by.

Nothing in the running service imports this module: the service reads only the
generated tables, so it never needs the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE_SPEC = "hl7.fhir.r4.examples@4.0.1"
PACKAGE_TGZ = "hl7.fhir.r4.examples-4.0.1.tgz"
PACKAGE_SHA256 = "dce87f1b5b9341867033f7d1f544fa1b5232503f6d62813887ac6b8a8b6cb682"


def default_cache_dir() -> Path:
    """Where the package is cached: ``$TRIALFHIR_CACHE_DIR`` or ``~/.cache/trialfhir``."""
    env = os.environ.get("TRIALFHIR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "trialfhir"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_hl7_examples(cache_dir: Path | None = None) -> Path:
    """Return the directory holding the package's JSON files (``…/package``).

    Downloads the tarball with ``npm pack`` on first use, refuses it unless its
    SHA-256 equals :data:`PACKAGE_SHA256`, and unpacks it next to the tarball.
    Later calls reuse the cache (the checksum is verified again on every call,
    the unpacked tree is trusted once a marker file says it came from that tarball).
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / PACKAGE_TGZ
    target = cache / "hl7.fhir.r4.examples-4.0.1"
    marker = target / ".sha256"
    if not tgz.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "npm is needed once to fetch hl7.fhir.r4.examples@4.0.1; install Node.js/npm "
                f"or place {PACKAGE_TGZ} (sha256 {PACKAGE_SHA256}) in {cache}"
            )
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(
                [npm, "pack", PACKAGE_SPEC, "--silent", "--pack-destination", tmp],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            shutil.move(str(Path(tmp) / PACKAGE_TGZ), tgz)
    actual = _sha256(tgz)
    if actual != PACKAGE_SHA256:
        tgz.unlink()
        raise RuntimeError(
            f"{PACKAGE_TGZ} has sha256 {actual}, expected {PACKAGE_SHA256}; the cached copy was "
            "removed, run again to download it afresh"
        )
    if not (marker.exists() and marker.read_text() == PACKAGE_SHA256):
        if target.exists():
            shutil.rmtree(target)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            with tarfile.open(tgz) as tar:
                tar.extractall(tmp, filter="data")
            shutil.move(tmp + "/package", target)
        marker.write_text(PACKAGE_SHA256)
    return target


def example_files(package_dir: Path) -> list[Path]:
    """Every example resource file of the package (all ``*.json`` except package.json)."""
    return sorted(p for p in package_dir.glob("*.json") if p.name != "package.json")
