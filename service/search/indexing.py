"""Index rows for a resource, written in the same transaction as its version.

Split into small column builders, one per parameter type (Medplum's approach): each
takes the values a parameter's compiled path reaches and returns the rows for its
table. :func:`index_resource` runs every parameter of the resource's type.

Value semantics follow https://hl7.org/fhir/R4/search.html:

- token: Coding / CodeableConcept codings → (system, code); Identifier → (system,
  value); ContactPoint → value; code / string / id / uri / boolean primitives → value
  without system. Display texts (CodeableConcept.text, Coding.display) feed ``:text``.
- string: the primitive, or every part of a HumanName / Address; matched on a
  normalised form (lower case, accents removed).
- date: a date/dateTime/instant is the range its precision covers; a Period is
  [start, end); a Timing contributes its events and bounds.
- number, quantity (with UCUM base-unit values), reference (type/id parsed from
  relative, absolute and versioned references; the literal kept for absolute,
  canonical and contained ones), uri, and composite (pairs of component values taken
  from the same element, e.g. one Observation.component's code and value).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from service.search.paths import CompiledPath, compile_path
from service.search.registry import SearchParam, SearchParamRegistry, registry
from service.search.ucum import canonical

_CONTACT_SYSTEMS = {"phone", "fax", "email", "pager", "url", "sms", "other"}
MAX_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_LEN = 512


@dataclass(slots=True)
class IndexRows:
    """Rows for every index table, as dicts ready for executemany."""

    token: list[dict[str, Any]] = field(default_factory=list)
    token_text: list[dict[str, Any]] = field(default_factory=list)
    string: list[dict[str, Any]] = field(default_factory=list)
    date: list[dict[str, Any]] = field(default_factory=list)
    number: list[dict[str, Any]] = field(default_factory=list)
    quantity: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    uri: list[dict[str, Any]] = field(default_factory=list)
    composite: list[dict[str, Any]] = field(default_factory=list)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "idx_token": self.token,
            "idx_token_text": self.token_text,
            "idx_string": self.string,
            "idx_date": self.date,
            "idx_number": self.number,
            "idx_quantity": self.quantity,
            "idx_reference": self.reference,
            "idx_uri": self.uri,
            "idx_composite": self.composite,
        }


# --- value extraction per type ---------------------------------------------------------------


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)[:_LEN]


def normalise(text: str) -> str:
    """Lower case without accents and with collapsed whitespace (string search)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.lower().split())[:_LEN]


def token_values(value: Any) -> Iterator[tuple[str | None, str | None]]:
    """(system, code) pairs a token parameter indexes for one element."""
    if isinstance(value, dict):
        if "coding" in value or ("text" in value and len(value) <= 3 and "value" not in value and "code" not in value):
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and (coding.get("code") is not None or coding.get("system")):
                    yield coding.get("system"), _text(coding.get("code"))
            return
        if "value" in value and not isinstance(value.get("value"), (dict, list)):
            system = value.get("system")
            yield (None if system in _CONTACT_SYSTEMS else system), _text(value.get("value"))
            return
        if "code" in value or "system" in value:
            yield value.get("system"), _text(value.get("code"))
        return
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, (str, int)):
        yield None, str(value)[:_LEN]


def token_texts(value: Any) -> Iterator[str]:
    """Display texts for ``:text``: CodeableConcept.text and every Coding.display."""
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield value["text"]
        if isinstance(value.get("display"), str):
            yield value["display"]
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        if not any(k in value for k in _NAME_PARTS + _ADDRESS_PARTS):
            return
        for key in parts:
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _epoch_us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(text: str) -> tuple[int, int] | None:
    """[lo, hi) in µs since the epoch for a FHIR date/dateTime/instant at its precision.

    A value without a zone is read as UTC. Returns None when ``text`` is not a date.
    """
    m = _DATE_RE.match(text)
    if not m:
        return None
    y = int(m["y"])
    try:
        if m["m"] is None:
            start = datetime(y, 1, 1, tzinfo=timezone.utc)
            end = datetime(y + 1, 1, 1, tzinfo=timezone.utc) if y < 9999 else None
        elif m["d"] is None:
            mo = int(m["m"])
            start = datetime(y, mo, 1, tzinfo=timezone.utc)
            end = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=timezone.utc) if not (y == 9999 and mo == 12) else None
        elif m["H"] is None:
            start = datetime(y, int(m["m"]), int(m["d"]), tzinfo=timezone.utc)
            end = start + timedelta(days=1) if y < 9999 else None
        else:
            tz = timezone.utc
            if m["tz"] and m["tz"] != "Z":
                sign = 1 if m["tz"][0] == "+" else -1
                hh, mm = m["tz"][1:].split(":")
                tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
            frac = m["f"] or ""
            micro = int((frac[1:] + "000000")[:6]) if frac else 0
            start = datetime(y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"] or 0), micro, tzinfo=tz)
            if m["S"] is None:
                step = timedelta(minutes=1)
            elif not frac:
                step = timedelta(seconds=1)
            else:
                step = timedelta(microseconds=10 ** max(0, 6 - (len(frac) - 1)))
            end = start + step
    except (ValueError, OverflowError):
        return None
    lo = _epoch_us(start)
    hi = _epoch_us(end) if end is not None else MAX_US
    return lo, hi


def date_values(value: Any) -> Iterator[tuple[int, int]]:
    if isinstance(value, str):
        found = date_range(value)
        if found:
            yield found
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            yield (start[0] if start else MIN_US), (end[1] if end else MAX_US)
        elif "event" in value or "repeat" in value:  # Timing
            for event in value.get("event") or []:
                if isinstance(event, str) and (found := date_range(event)):
                    yield found
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if isinstance(bounds, dict):
                yield from date_values(bounds)


def number_values(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)) or hasattr(value, "as_tuple"):
        yield float(value)


def quantity_values(value: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(value, dict) or isinstance(value.get("value"), (bool, str)) or value.get("value") is None:
        return
    number = float(value["value"])
    system = value.get("system")
    code = value.get("code") if value.get("code") is not None else value.get("currency")
    canon = canonical(number, system, code) if code is not None else None
    yield {
        "value": number,
        "system": _text(system),
        "code": _text(code),
        "unit": _text(value.get("unit")),
        "canon_value": canon[0] if canon else None,
        "canon_code": canon[1] if canon else None,
    }


_REF = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$")


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, id, version, literal-if-not-relative) for a reference string."""
    if ref.startswith("#"):
        return None, None, None, ref
    m = _REF.search(ref)
    absolute = "://" in ref or ref.startswith("urn:")
    if m and (not absolute or "://" in ref):
        return m["type"], m["id"], m["version"], (ref if absolute else None)
    return None, None, None, ref


def reference_values(value: Any, resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if isinstance(value, str):  # canonical / uri used as a reference
        rtype, rid, version, url = parse_reference(value)
        yield {"target_type": rtype, "target_id": rid, "target_version": version, "url": value[:1024], "ident_system": None, "ident_value": None}
        return
    if not isinstance(value, dict):
        return
    ref = value.get("reference")
    ident = value.get("identifier") if isinstance(value.get("identifier"), dict) else None
    row = {"target_type": None, "target_id": None, "target_version": None, "url": None,
           "ident_system": _text(ident.get("system")) if ident else None,
           "ident_value": _text(ident.get("value")) if ident else None}
    if isinstance(ref, str):
        rtype, rid, version, url = parse_reference(ref)
        row.update(target_type=rtype, target_id=rid, target_version=version, url=url[:1024] if url else None)
        if ref.startswith("#"):
            for contained in resource.get("contained") or []:
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    row["target_type"] = contained.get("resourceType")
    elif row["ident_value"] is None and not isinstance(value.get("display"), str):
        return  # a display-only Reference is present (for :missing) but matches no target
    if row["target_type"] is None and isinstance(value.get("type"), str):
        row["target_type"] = value["type"]
    yield row


def uri_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value[:1024]


# --- per-parameter extractors ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledParam:
    code: str
    type: str
    paths: tuple[CompiledPath, ...]
    #: for composites: (type, compiled sub-paths) of each component
    components: tuple[tuple[str, tuple[CompiledPath, ...]], ...] = ()


_IDENTITY = CompiledPath(())


def _compile_relative(expression: str, resource_type: str) -> tuple[CompiledPath, ...] | None:
    """A component's expression (relative to the composite's node); unions allowed.

    ``()`` … ``$this`` is the node itself; None when a member cannot be compiled."""
    from service.search.registry import split_union

    expr = expression.strip()
    if expr in ("", "$this"):
        return (_IDENTITY,)
    out = []
    for part in split_union(expr):
        compiled = compile_path(f"{resource_type}.{part}", resource_type)
        if compiled is None:
            return None
        out.append(compiled)
    return tuple(out)


def compile_params(reg: SearchParamRegistry, resource_type: str) -> tuple[CompiledParam, ...]:
    out: list[CompiledParam] = []
    for code, param in sorted(reg.for_type(resource_type).items()):
        if code in ("_id", "_lastUpdated") or param.type == "special":
            continue
        if param.type == "composite":
            roots = tuple(p for p in (compile_path(part, resource_type) for part in param.paths) if p is not None)
            if any(part.strip() == resource_type for part in param.paths):
                roots = (CompiledPath(()),) + roots
            comps: list[tuple[str, tuple[CompiledPath, ...]]] = []
            for definition, expr in param.components:
                ctype = reg.type_of_url(definition)
                sub = _compile_relative(expr, resource_type)
                if ctype is None or sub is None:
                    comps = []
                    break
                comps.append((ctype, sub))
            if roots and len(comps) == 2:
                out.append(CompiledParam(code, "composite", roots, tuple(comps)))
            continue
        paths = tuple(p for p in (compile_path(part, resource_type) for part in param.paths) if p is not None)
        if paths:
            out.append(CompiledParam(code, param.type, paths))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """A type's parameters arranged for a fast walk: by the top-level key they start with.

    A resource has a dozen keys while its type has dozens of parameters; looking up the
    parameters per present key skips every parameter that cannot produce a value.
    """

    params: tuple[CompiledParam, ...]
    #: first key → [(param index, path)]
    by_key: dict[str, tuple[tuple[int, CompiledPath], ...]]
    #: parameters evaluated whatever the keys (root-level composites, deceased …)
    always: tuple[tuple[int, CompiledPath], ...]


def _choice_prefix(key: str) -> str:
    for i, ch in enumerate(key):
        if ch.isupper():
            return key[:i]
    return key


def build_plan(params: tuple[CompiledParam, ...]) -> IndexPlan:
    by_key: dict[str, list[tuple[int, CompiledPath]]] = {}
    always: list[tuple[int, CompiledPath]] = []
    for i, param in enumerate(params):
        if param.type == "composite":
            always.extend((i, p) for p in param.paths)
            continue
        for path in param.paths:
            key = path.first_key
            if key is None:
                always.append((i, path))
            else:
                by_key.setdefault(key, []).append((i, path))
    return IndexPlan(params, {k: tuple(v) for k, v in by_key.items()}, tuple(always))


@lru_cache(maxsize=None)
def _plan(resource_type: str, generation: int, registry_id: int) -> IndexPlan:
    return build_plan(compile_params(registry(), resource_type))


def plan_for(resource_type: str) -> IndexPlan:
    reg = registry()
    return _plan(resource_type, reg.generation, id(reg))


def compiled_params(resource_type: str) -> tuple[CompiledParam, ...]:
    return plan_for(resource_type).params


def indexed_params(resource_type: str) -> frozenset[str]:
    """Parameter codes that have index rows for ``resource_type`` (plus _id and _lastUpdated)."""
    return frozenset([p.code for p in compiled_params(resource_type)] + ["_id", "_lastUpdated"])


def _relative_values(paths: tuple[CompiledPath, ...], node: Any) -> list[Any]:
    if not isinstance(node, dict):
        return []
    out: list[Any] = []
    for path in paths:
        out.extend([node] if not path.steps else path.values(node))
    return out


def _component_rows(ctype: str, values: list[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for v in values:
        if ctype == "token":
            rows.extend({"system": s, "value": c} for s, c in token_values(v))
        elif ctype == "quantity":
            rows.extend({"number": q["value"], "canon_value": q["canon_value"], "canon_code": q["canon_code"], "system": q["system"], "value": q["code"], "unit": q["unit"]} for q in quantity_values(v))
        elif ctype == "date":
            rows.extend({"lo": lo, "hi": hi} for lo, hi in date_values(v))
        elif ctype == "string":
            rows.extend({"value": normalise(s)} for s in string_values(v))
        elif ctype == "number":
            rows.extend({"number": n} for n in number_values(v))
        elif ctype == "uri":
            rows.extend({"value": u} for u in uri_values(v))
    return rows


def index_resource(resource_type: str, resource: dict[str, Any]) -> IndexRows:
    """All index rows for ``resource`` (without res_key/resource_type: the writer adds them)."""
    plan = plan_for(resource_type)
    values_by_param: dict[int, list[Any]] = {}
    seen_keys: set[str] = set()
    for key in resource:
        for k in (key, _choice_prefix(key)):
            if k in seen_keys:
                continue
            seen_keys.add(k)
            for i, path in plan.by_key.get(k, ()):
                found = list(path.values(resource))
                if found:
                    values_by_param.setdefault(i, []).extend(found)
    rows = IndexRows()
    for i, path in plan.always:
        param = plan.params[i]
        if param.type == "composite":
            _composite_rows(param, path, resource, rows)
        else:
            found = list(path.values(resource))
            if found:
                values_by_param.setdefault(i, []).extend(found)
    for i, values in values_by_param.items():
        _rows_for(plan.params[i], values, resource, rows)
    return rows


def _composite_rows(param: CompiledParam, root: CompiledPath, resource: dict[str, Any], rows: IndexRows) -> None:
    (t1, p1), (t2, p2) = param.components
    nodes = list(root.values(resource)) if root.steps else [resource]
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for sub in (p1, p2):
            keys = [p.first_key for p in sub]
            if None not in keys and not any(k in node or any(n.startswith(k) for n in node) for k in keys):
                break
        else:
            firsts = _component_rows(t1, _relative_values(p1, node))
            if not firsts:
                continue
            seconds = _component_rows(t2, _relative_values(p2, node))
            for a in firsts:
                for b in seconds:
                    rows.composite.append(
                        {
                            "param": param.code,
                            "c1_system": a.get("system"),
                            "c1_value": a.get("value"),
                            "c2_system": b.get("system"),
                            "c2_value": b.get("value"),
                            "c2_number": b.get("number"),
                            "c2_canon_value": b.get("canon_value"),
                            "c2_canon_code": b.get("canon_code"),
                            "c2_lo": b.get("lo"),
                            "c2_hi": b.get("hi"),
                            "c2_unit": b.get("unit"),
                        }
                    )


def _rows_for(param: CompiledParam, values: list[Any], resource: dict[str, Any], rows: IndexRows) -> None:
    code = param.code
    ptype = param.type
    if ptype == "token":
        seen: set[tuple[str | None, str | None]] = set()
        texts: set[str] = set()
        for v in values:
            for system, token in token_values(v):
                if (system, token) not in seen:
                    seen.add((system, token))
                    rows.token.append({"param": code, "system": system, "value": token})
            for t in token_texts(v):
                texts.add(normalise(t))
        rows.token_text.extend({"param": code, "text": t} for t in sorted(texts) if t)
    elif ptype == "string":
        seen_s: set[str] = set()
        for v in values:
            for s in string_values(v):
                if s and s not in seen_s:
                    seen_s.add(s)
                    rows.string.append({"param": code, "norm": normalise(s), "value": s[:_LEN]})
    elif ptype == "date":
        for lo, hi in sorted({r for v in values for r in date_values(v)}):
            rows.date.append({"param": code, "lo": lo, "hi": hi})
    elif ptype == "number":
        for n in sorted({n for v in values for n in number_values(v)}):
            rows.number.append({"param": code, "value": n})
    elif ptype == "quantity":
        for v in values:
            rows.quantity.extend({"param": code, **q} for q in quantity_values(v))
    elif ptype == "reference":
        seen_r: set[tuple[Any, ...]] = set()
        for v in values:
            for r in reference_values(v, resource):
                key = tuple(r.values())
                if key not in seen_r:
                    seen_r.add(key)
                    rows.reference.append({"param": code, **r})
    elif ptype == "uri":
        for u in sorted({u for v in values for u in uri_values(v)}):
            rows.uri.append({"param": code, "value": u})


__all__ = ["IndexRows", "index_resource", "indexed_params", "compiled_params", "normalise", "date_range", "parse_reference", "SearchParam"]
