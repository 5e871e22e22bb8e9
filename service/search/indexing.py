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
from typing import Any, Optional

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
    if text.isascii():  # nothing to decompose: the same result without the per-character walk
        return " ".join(text.lower().split())[:_LEN]
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


@lru_cache(maxsize=16_384)
def date_range(text: str) -> tuple[int, int] | None:
    """[lo, hi) in µs since the epoch for a FHIR date/dateTime/instant at its precision.

    A value without a zone is read as UTC. Returns None when ``text`` is not a date.
    Memoised: a pure function of the text, and feeds repeat the same dates (a day's
    results share their dates; ``issued`` and ``effective`` often agree).
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


_Keys = Optional[tuple[tuple[str, bool], ...]]


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """A type's parameters arranged for a fast walk: by the top-level key they start with.

    A resource has a dozen keys while its type has dozens of parameters; looking up the
    parameters per present key skips every parameter that cannot produce a value.
    """

    params: tuple[CompiledParam, ...]
    #: first key → [(param index, path, the path's member names when it has only member
    #: steps — walked by :func:`_members` without the generic machinery — else None)]
    by_key: dict[str, tuple[tuple[int, CompiledPath, tuple[str, ...] | None], ...]]
    #: parameters evaluated whatever the keys (root-level composites, deceased …)
    always: tuple[tuple[int, CompiledPath], ...]
    #: composite param index → a number per component: components with the same type and
    #: paths share it, so ``code`` of code-value-quantity and combo-code-value-quantity
    #: is evaluated once per element
    component_ids: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: composite param index → per component, (first key, True for a member step, False
    #: for a choice) of each of its paths (None: a path starts at the element itself, so
    #: the component cannot be ruled out by keys)
    component_keys: dict[int, tuple[_Keys, _Keys]] = field(default_factory=dict)


_PREFIXES: dict[str, str] = {}


def _choice_prefix(key: str) -> str:
    """``valueQuantity`` → ``value`` (the part before the first capital); memoised."""
    found = _PREFIXES.get(key)
    if found is None:
        found = key
        for i, ch in enumerate(key):
            if ch.isupper():
                found = key[:i]
                break
        if len(_PREFIXES) < 10_000:
            _PREFIXES[key] = found
    return found


def build_plan(params: tuple[CompiledParam, ...]) -> IndexPlan:
    by_key: dict[str, list[tuple[int, CompiledPath, tuple[str, ...] | None]]] = {}
    always: list[tuple[int, CompiledPath]] = []
    distinct: dict[tuple[str, tuple[CompiledPath, ...]], int] = {}
    component_ids: dict[int, tuple[int, int]] = {}
    # Equal paths of different parameters (``Observation.code`` of code and combo-code)
    # become one object, so :func:`index_resource` evaluates each once per resource.
    interned: dict[CompiledPath, CompiledPath] = {}
    component_keys: dict[int, tuple[_Keys, _Keys]] = {}
    for i, param in enumerate(params):
        if param.type == "composite":
            always.extend((i, p) for p in param.paths)
            (t1, p1), (t2, p2) = param.components
            component_ids[i] = (distinct.setdefault((t1, p1), len(distinct)), distinct.setdefault((t2, p2), len(distinct)))
            component_keys[i] = (_first_keys(p1), _first_keys(p2))
            continue
        for path in param.paths:
            path = interned.setdefault(path, path)
            key = path.first_key
            if key is None:
                always.append((i, path))
            else:
                members = tuple(step.name for step in path.steps) if all(step.kind == "member" for step in path.steps) else None
                by_key.setdefault(key, []).append((i, path, members))
    return IndexPlan(params, {k: tuple(v) for k, v in by_key.items()}, tuple(always), component_ids, component_keys)


def _first_keys(paths: tuple[CompiledPath, ...]) -> _Keys:
    keys = []
    for p in paths:
        if p.first_key is None:
            return None
        keys.append((p.first_key, p.steps[0].kind == "member"))
    return tuple(keys)


def _members(names: tuple[str, ...], resource: dict[str, Any]) -> list[Any]:
    """:meth:`CompiledPath.values` for a path of member steps only (lists flattened)."""
    current: list[Any] = [resource]
    for name in names:
        nxt: list[Any] = []
        for node in current:
            if isinstance(node, dict):
                value = node.get(name)
                if value is None:
                    continue
                if isinstance(value, list):
                    nxt.extend([v for v in value if v is not None])
                else:
                    nxt.append(value)
        if not nxt:
            return nxt
        current = nxt
    return current


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
    """All index rows for ``resource`` (without res_key/resource_type: the writer adds them).

    Several parameters often read the same elements (code and combo-code, subject and
    patient, value-quantity and combo-value-quantity, the composites' components): each
    path is walked and each element converted once per call (the memos are keyed by the
    identity of interned paths and of the resource's element objects, which stay alive for
    the whole call).
    """
    plan = plan_for(resource_type)
    by_key = plan.by_key
    values_by_param: dict[int, list[Any]] = {}
    path_values: dict[int, list[Any]] = {}
    seen_keys: set[str] = set()
    for key in resource:
        for k in (key, _choice_prefix(key)):
            if k in seen_keys:
                continue
            seen_keys.add(k)
            entries = by_key.get(k)
            if entries is None:
                continue
            for i, path, members in entries:
                found = path_values.get(id(path))
                if found is None:
                    found = path_values[id(path)] = _members(members, resource) if members is not None else list(path.values(resource))
                if found:
                    bucket = values_by_param.get(i)
                    if bucket is None:
                        values_by_param[i] = list(found)
                    else:
                        bucket.extend(found)
    rows = IndexRows()
    memo: dict[Any, Any] = {}  # per-element component rows and key checks, shared by the composites
    for i, path in plan.always:
        param = plan.params[i]
        if param.type == "composite":
            if path.steps and path.steps[0].kind == "member" and path.steps[0].name not in resource:
                continue  # e.g. the component-* parameters of an Observation without components
            _composite_rows(param, path, resource, rows, plan.component_ids[i], plan.component_keys[i], seen_keys, memo)
        else:
            found = list(path.values(resource))
            if found:
                values_by_param.setdefault(i, []).extend(found)
    converted: dict[tuple[str, int], Any] = {}
    for i, values in values_by_param.items():
        _rows_for(plan.params[i], values, resource, rows, converted)
    return rows


def _has_key(node: dict[str, Any], key: str, seen: dict[Any, Any], present: set[str] | None = None) -> bool:
    """Whether a choice step on ``key`` may find something in ``node``: ``key`` itself or a
    key starting with it (``value`` → ``valueQuantity``) is there. Memoised in ``seen``.

    ``present`` (for the resource itself) holds its keys and their choice prefixes, which
    settles every key without a capital letter at once (``valueQuantity`` has the prefix
    ``value``; a key like ``values`` has not, but a choice step on ``value`` would not
    read it either). A gate only: the component's paths decide what is indexed."""
    if key in node or (present is not None and key in present):
        return True
    if present is not None and key.islower():
        return False  # a key starting with it would have it as its choice prefix
    found = seen.get((id(node), key))
    if found is None:
        found = seen[(id(node), key)] = any(n.startswith(key) for n in node)
    return found


def _components_possible(node: dict[str, Any], keys: tuple[_Keys, _Keys], memo: dict[Any, Any], present: set[str] | None) -> bool:
    """Whether ``node`` has, for each component, a key one of its paths starts with."""
    for wanted in keys:
        if wanted is None:
            continue
        for key, member in wanted:
            if key in node or (not member and _has_key(node, key, memo, present)):
                break
        else:
            return False
    return True


def _composite_rows(
    param: CompiledParam,
    root: CompiledPath,
    resource: dict[str, Any],
    rows: IndexRows,
    ids: tuple[int, int],
    keys: tuple[_Keys, _Keys],
    present: set[str],
    memo: dict[Any, Any],
) -> None:
    """Rows for one composite: pairs of component values from the same element.

    ``keys`` are the first keys of each component's paths (see :class:`IndexPlan`): an
    element without any of them cannot produce a pair. ``present`` describes the
    resource's own keys (:func:`_has_key`). ``memo`` holds what was already worked out
    for an element in this resource: its component rows (keyed by the element's identity
    and the component's number in the plan) and its key checks; the element dicts stay
    alive for the whole :func:`index_resource` call, so the identities are stable.
    """
    (t1, p1), (t2, p2) = param.components
    if root.steps:
        first = root.steps[0]
        if first.kind == "member" and first.name not in resource:
            return
        if first.kind == "choice" and not _has_key(resource, first.name, memo, present):
            return
    nodes = list(root.values(resource)) if root.steps else [resource]
    for node in nodes:
        if not isinstance(node, dict):
            continue
        if _components_possible(node, keys, memo, present if node is resource else None):
            key1 = (id(node), ids[0])
            firsts = memo.get(key1)
            if firsts is None:
                firsts = memo[key1] = _component_rows(t1, _relative_values(p1, node))
            if not firsts:
                continue
            key2 = (id(node), ids[1])
            seconds = memo.get(key2)
            if seconds is None:
                seconds = memo[key2] = _component_rows(t2, _relative_values(p2, node))
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


def _converted(kind: str, value: Any, convert: Any, memo: dict[tuple[str, int], Any]) -> Any:
    """``convert(value)`` once per element and kind within one :func:`index_resource` call."""
    key = (kind, id(value))
    found = memo.get(key)
    if found is None:
        found = memo[key] = convert(value)
    return found


def _token_parts(value: Any) -> tuple[list[tuple[str | None, str | None]], list[str]]:
    return list(token_values(value)), [normalise(t) for t in token_texts(value)]


def _rows_for(param: CompiledParam, values: list[Any], resource: dict[str, Any], rows: IndexRows, memo: dict[tuple[str, int], Any]) -> None:
    code = param.code
    ptype = param.type
    if ptype == "token":
        seen: set[tuple[str | None, str | None]] = set()
        texts: set[str] = set()
        for v in values:
            pairs, normalised = _converted("token", v, _token_parts, memo)
            for pair in pairs:
                if pair not in seen:
                    seen.add(pair)
                    rows.token.append({"param": code, "system": pair[0], "value": pair[1]})
            texts.update(normalised)
        if texts:
            rows.token_text.extend({"param": code, "text": t} for t in sorted(texts) if t)
    elif ptype == "string":
        seen_s: set[str] = set()
        for v in values:
            for s in string_values(v):
                if s and s not in seen_s:
                    seen_s.add(s)
                    rows.string.append({"param": code, "norm": normalise(s), "value": s[:_LEN]})
    elif ptype == "date":
        found: set[tuple[int, int]] = set()
        for v in values:
            found.update(_converted("date", v, lambda x: list(date_values(x)), memo))
        for lo, hi in sorted(found):
            rows.date.append({"param": code, "lo": lo, "hi": hi})
    elif ptype == "number":
        for n in sorted({n for v in values for n in number_values(v)}):
            rows.number.append({"param": code, "value": n})
    elif ptype == "quantity":
        for v in values:
            rows.quantity.extend({"param": code, **q} for q in _converted("quantity", v, lambda x: list(quantity_values(x)), memo))
    elif ptype == "reference":
        seen_r: set[tuple[Any, ...]] = set()
        for v in values:
            for r in _converted("reference", v, lambda x: list(reference_values(x, resource)), memo):
                key = tuple(r.values())
                if key not in seen_r:
                    seen_r.add(key)
                    rows.reference.append({"param": code, **r})
    elif ptype == "uri":
        for u in sorted({u for v in values for u in uri_values(v)}):
            rows.uri.append({"param": code, "value": u})


__all__ = ["IndexRows", "index_resource", "indexed_params", "compiled_params", "normalise", "date_range", "parse_reference", "SearchParam"]
