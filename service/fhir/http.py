"""FHIR over HTTP: media types, ``_format``/``_pretty``, Prefer, ETags and instants.

https://hl7.org/fhir/R4/http.html#mime-type — this server speaks JSON only; it accepts
``application/fhir+json``, ``application/json`` (what fhirpy and the JS SMART client
send) and the ``fhirVersion`` media-type parameter when it names 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Mapping

from starlette.responses import Response

from service.fhir import jsonio
from service.fhir.outcome import error

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
PATCH_TYPES = frozenset({"application/json-patch+json", "application/merge-patch+json"})
_FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": FHIR_JSON, "application/fhir+json": FHIR_JSON, "application/json+fhir": FHIR_JSON}
_ACCEPTED_VERSIONS = {"4.0", "4.0.1"}


class FhirResponse(Response):
    """A response whose body is FHIR JSON bytes (already serialised)."""

    media_type = f"{FHIR_JSON}; charset=utf-8"


def _media_params(value: str) -> tuple[str, dict[str, str]]:
    main, *params = [p.strip() for p in value.split(";")]
    parsed: dict[str, str] = {}
    for p in params:
        key, _, val = p.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"')
    return main.lower(), parsed


def check_fhir_version(params: Mapping[str, str], status: int) -> None:
    version = params.get("fhirversion")
    if version is not None and version not in _ACCEPTED_VERSIONS:
        raise error(status, "not-supported", f"This server speaks FHIR 4.0.1 (R4); fhirVersion={version} was asked for.")


def negotiate(accept: str | None, format_param: str | None) -> None:
    """Refuse (406) a request that accepts no JSON; everything else gets FHIR JSON."""
    if format_param:
        main, params = _media_params(format_param)
        if main not in _FORMAT_ALIASES:
            raise error(406, "not-supported", f"_format={format_param} is not supported; this server answers in JSON (_format=json).")
        check_fhir_version(params, 406)
        return
    if not accept:
        return
    ok = False
    for item in accept.split(","):
        main, params = _media_params(item)
        if main in JSON_TYPES or main in ("*/*", "application/*") or main.endswith("+json"):
            check_fhir_version(params, 406)
            ok = True
    if not ok:
        raise error(406, "not-supported", f"Accept: {accept} — this server answers only in FHIR JSON (application/fhir+json).")


def check_content_type(content_type: str | None, *, allow_patch: bool = False) -> str:
    """The body's media type, or 415 when it is not one this interaction reads."""
    if not content_type:
        raise error(415, "not-supported", "A body needs Content-Type: application/fhir+json.")
    main, params = _media_params(content_type)
    if main in JSON_TYPES or (allow_patch and main in PATCH_TYPES):
        check_fhir_version(params, 415)
        return main
    expected = "application/fhir+json, application/json-patch+json" if allow_patch else "application/fhir+json"
    raise error(415, "not-supported", f"Content-Type {main} is not supported here; send {expected}.")


@dataclass(frozen=True, slots=True)
class Prefer:
    """The parts of the Prefer header this server honours."""

    return_: str = "representation"
    handling: str = "lenient"
    respond_async: bool = False

    @classmethod
    def parse(cls, header: str | None) -> "Prefer":
        if not header:
            return cls()
        ret, handling, respond_async = "representation", "lenient", False
        for token in header.split(","):
            for part in token.split(";"):
                key, _, value = part.strip().partition("=")
                key, value = key.strip().lower(), value.strip().strip('"')
                if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
                    ret = value
                elif key == "return" and value.lower() == "operationoutcome":
                    ret = "OperationOutcome"
                elif key == "handling" and value in ("strict", "lenient"):
                    handling = value
                elif key == "respond-async":
                    respond_async = True
        return cls(ret, handling, respond_async)


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str) -> int | None:
    """The version number in ``W/"3"``, ``"3"`` or ``3``; None for anything else."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else None


def instant(us: int) -> str:
    """FHIR instant for µs since the epoch, UTC, microsecond precision."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def http_date(us: int) -> str:
    return format_datetime(datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc), usegmt=True)


def parse_http_date(value: str) -> int | None:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000


def render(obj: Any, *, pretty: bool = False) -> bytes:
    return jsonio.dumps(obj, pretty=pretty)


def pretty_bytes(raw: bytes) -> bytes:
    """Re-indent stored JSON for ``_pretty=true`` (decimals keep their text)."""
    return jsonio.dumps(jsonio.loads(raw), pretty=True)
