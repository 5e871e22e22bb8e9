"""A brute-force reference evaluator for FHIR R4 search (https://hl7.org/fhir/R4/search.html).

It shares nothing with the server's SQL compiler: for every stored resource it evaluates
the parameter's official FHIRPath expression with fhirpathpy (model r4) and matches the
values in plain Python. Only the query parser (``service.search.query``) and the
parameter table (``service.search.registry``) are shared, because they define *what*
is asked, not how it is answered.

Rewrites applied to the official expressions when they are loaded:

- ``Resource.x`` / ``DomainResource.x`` → ``{Type}.x`` (fhirpathpy does not treat the
  base type name as matching a concrete resource);
- ``(X as T)`` and ``X.as(T)`` → ``X.ofType(T)`` (``as`` needs a singleton in fhirpathpy,
  e.g. ``(Observation.component.value as Quantity)`` with two components raises);
- ``X.where(resolve() is T)`` → ``X`` filtered in Python to references whose URL names
  a ``T`` (relative ``T/id`` or an absolute ``…/T/id``, here or on another server; the
  brief's ``reference.startsWith('T/')`` misses absolute URLs); fhirpathpy has no
  ``resolve()``.

Matching rules (per value; a resource matches when any of its values matches, comma
values are ORed, repeated parameters ANDed):

- token: ``code`` any system, ``system|code``, ``|code`` (no system), ``system|`` (any
  code) over Coding / CodeableConcept.coding / Identifier (system, value) / ContactPoint
  (value) / primitive code, string, id, uri, boolean; ``:not`` is the complement of the
  resources with a matching value (resources without any value included); ``:text``: a
  word of CodeableConcept.text or Coding.display starts with the value
  (case/accent-insensitive);
- string: a part (HumanName family/given/prefix/suffix/text, Address
  line/city/district/state/postalCode/country/text, or the string) starts with the value
  after NFKD accent stripping and lower-casing; ``:contains`` anywhere; ``:exact`` equal;
- date: value range [lo, hi) (its precision; Period start..end with open ends infinite)
  against the search range [s, e): eq s≤lo∧hi≤e, ne ¬eq, gt hi>e, lt lo<s, ge gt∨eq,
  le lt∨eq, sa lo≥e, eb hi≤s; times without a zone are UTC;
- number / quantity: eq v ∈ [x − ½ unit of the last digit, x + ½ unit) (the spec's
  ``100`` = [99.5, 100.5)), gt/lt/ge/le/sa/eb against x, ne ¬eq, ap |v−x| ≤ 10 % |x|;
  UCUM quantities compare in canonical (pint base) units; ``||code`` matches the code
  or the human unit literally, or (the spec lets the server choose canonical units) a
  UCUM quantity that converts;
- reference: ``Type/id``, ``id`` (any target type), absolute URL on this server's base;
  other absolute URLs, ``urn:`` and contained ``#id`` literally (an absolute URL on
  another server is never this server's resource, also not in chains and ``_has``);
  ``:Type``, ``:identifier``, ``:missing`` (an element that is present — even a
  display-only Reference or a text-only CodeableConcept — is not missing);
- uri: equal, ``:below`` (stored starts with search), ``:above`` (search starts with
  stored);
- composite ``a$b``: both components matched on the same element;
- ``:missing=true|false`` on every type; chains ``ref:Type.param`` of any depth;
  ``_has:Type:ref:param`` (nestable); ``study`` on Observation / MedicationAdministration
  = ``patient._has:ResearchSubject:individual:study``.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable

try:  # import numpy up front: a lazy import racing with the server thread half-initialises it
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover
    pass
from fhirpathpy import compile as fp_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from service.search.query import CONTROL_PARAMS, split_token, split_values
from service.search.registry import SearchParam, registry

MODEL = models["r4"]
UCUM = "http://unitsofmeasure.org"

QUANTITY_TYPES = frozenset({"Quantity", "Age", "Duration", "Count", "Distance", "SimpleQuantity", "MoneyQuantity"})
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
NEG_INF = -math.inf
POS_INF = math.inf

#: Parameters the oracle does not evaluate (server-defined or free text).
UNSUPPORTED = frozenset({"_content", "_text", "_query", "phonetic", "_list", "_filter", "_type"})


class OracleError(Exception):
    """The oracle cannot evaluate this query (a test-generation bug, not a server bug)."""


@dataclass(frozen=True)
class Typed:
    """One value produced by a search parameter's expression, with its FHIR type."""

    type: str
    data: Any


# --- text -----------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case- and accent-insensitive form: NFKD, combining marks removed, lower case."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def unescape(text: str) -> str:
    """Undo the search escapes ``\\|`` ``\\$`` ``\\,`` ``\\\\``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "|$,\\":
            out.append(text[i + 1])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def split_unescaped(text: str, sep: str) -> list[str]:
    """Split at ``sep`` unless escaped with a backslash; parts stay escaped."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(text[i])
        i += 1
    parts.append("".join(cur))
    return parts


# --- dates ----------------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _tz(text: str | None) -> timezone:
    if not text or text == "Z":
        return timezone.utc
    sign = 1 if text[0] == "+" else -1
    hh, mm = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hh, minutes=mm))


@functools.lru_cache(maxsize=None)
def date_range(text: str) -> tuple[float, float] | None:
    """The half-open range [lo, hi) in microseconds since the epoch that a FHIR date,
    dateTime or instant (or a search date value) covers at its precision."""
    m = _DATE_RE.match(text.strip())
    if not m:
        return None
    year, month, day, hh, mi, ss, frac, tz = m.groups()
    y = int(year)
    if month is None:
        lo = datetime(y, 1, 1, tzinfo=timezone.utc)
        hi = datetime(y + 1, 1, 1, tzinfo=timezone.utc)
        return _micros(lo), _micros(hi)
    mo = int(month)
    if day is None:
        lo = datetime(y, mo, 1, tzinfo=timezone.utc)
        hi = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=timezone.utc)
        return _micros(lo), _micros(hi)
    d = int(day)
    if hh is None:
        lo = datetime(y, mo, d, tzinfo=timezone.utc)
        return _micros(lo), _micros(lo + timedelta(days=1))
    zone = _tz(tz)
    if ss is None:
        lo = datetime(y, mo, d, int(hh), int(mi), tzinfo=zone)
        return _micros(lo), _micros(lo + timedelta(minutes=1))
    if frac is None:
        lo = datetime(y, mo, d, int(hh), int(mi), int(ss), tzinfo=zone)
        return _micros(lo), _micros(lo + timedelta(seconds=1))
    digits = frac[1:]
    micro = int((digits + "000000")[:6])
    lo = datetime(y, mo, d, int(hh), int(mi), int(ss), micro, tzinfo=zone)
    step = 10 ** (6 - len(digits)) if len(digits) <= 6 else 1
    return _micros(lo), _micros(lo) + step


def value_ranges(tv: Typed) -> list[tuple[float, float]]:
    """Date ranges of a date-like value (date, dateTime, instant, Period, Timing)."""
    if tv.type in ("date", "dateTime", "instant") or (isinstance(tv.data, str)):
        r = date_range(tv.data) if isinstance(tv.data, str) else None
        return [r] if r else []
    if tv.type == "Period" and isinstance(tv.data, dict):
        start, end = tv.data.get("start"), tv.data.get("end")
        if start is None and end is None:
            return []
        lo = date_range(start)[0] if start and date_range(start) else NEG_INF
        hi = date_range(end)[1] if end and date_range(end) else POS_INF
        return [(lo, hi)]
    if tv.type == "Timing" and isinstance(tv.data, dict):
        ranges = [date_range(e) for e in tv.data.get("event", []) if date_range(e)]
        bounds = (tv.data.get("repeat") or {}).get("boundsPeriod")
        if bounds:
            ranges += value_ranges(Typed("Period", bounds))
        if not ranges:
            return []
        return [(min(r[0] for r in ranges), max(r[1] for r in ranges))]
    return []


def date_compare(prefix: str, lo: float, hi: float, s: float, e: float) -> bool:
    eq = s <= lo and hi <= e
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return not eq
    if prefix == "gt":
        return hi > e
    if prefix == "lt":
        return lo < s
    if prefix == "ge":
        return hi > e or eq
    if prefix == "le":
        return lo < s or eq
    if prefix == "sa":
        return lo >= e
    if prefix == "eb":
        return hi <= s
    raise OracleError(f"date prefix {prefix!r} is not evaluated by the oracle")


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in DATE_PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


# --- numbers and quantities ------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value)) if not isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        return None


def half_unit(text: str) -> Decimal:
    """Half a unit of the last significant digit of a search number as written."""
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    return Decimal(1).scaleb(exponent) / 2


def number_compare(prefix: str, v: Decimal, x_text: str, convert: Callable[[Decimal], Decimal] | None = None) -> bool:
    """Compare a stored value ``v`` (already converted when ``convert`` is given) with the
    search number ``x_text`` (converted with ``convert``)."""
    conv = convert or (lambda d: d)
    x = Decimal(x_text)
    if prefix in ("eq", "ne"):
        h = half_unit(x_text)
        lo, hi = conv(x - h), conv(x + h)
        eq = lo <= v < hi
        return eq if prefix == "eq" else not eq
    xc = conv(x)
    if prefix in ("gt", "sa"):
        return v > xc
    if prefix in ("lt", "eb"):
        return v < xc
    if prefix == "ge":
        return v >= xc
    if prefix == "le":
        return v <= xc
    if prefix == "ap":
        return abs(v - xc) <= abs(xc) / 10
    raise OracleError(prefix)


_ureg = None


def _ucum_registry():  # type: ignore[no-untyped-def]
    global _ureg
    if _ureg is None:
        from ucumvert import PintUcumRegistry

        _ureg = PintUcumRegistry()
    return _ureg


@functools.lru_cache(maxsize=None)
def ucum_canonical(value: Decimal, code: str) -> tuple[Decimal, str] | None:
    """(value in pint base units rounded to 12 significant digits, base-unit key), or
    None when the code is not UCUM that ucumvert understands. Annotations ``{...}`` are
    unity (UCUM §4.3)."""
    stripped = re.sub(r"\{[^}]*\}", "", code)
    if stripped == "":
        stripped = "1"
    if stripped.startswith("/"):
        stripped = "1" + stripped
    try:
        ureg = _ucum_registry()
        unit = ureg.from_ucum(stripped)
        if not hasattr(unit, "to_base_units"):
            return None
        magnitude = float(unit.magnitude)
        q = ureg.Quantity(float(value) * magnitude, unit.units).to_base_units()
    except Exception:  # noqa: BLE001 - anything ucumvert cannot read is not UCUM here
        return None
    mag = float(q.magnitude)
    if not math.isfinite(mag):
        return None
    return Decimal(f"{mag:.12g}"), str(q.units)


# --- references -----------------------------------------------------------------------------

_ANY_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_REL_REF = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")


# --- the evaluator --------------------------------------------------------------------------


@dataclass
class CompiledPath:
    fn: Callable[..., list[Any]]
    resolve_type: str | None


def _rewrite(path: str, rtype: str) -> tuple[str, str | None]:
    expr = path.strip()
    resolve_type = None
    m = re.match(r"^(.*)\.where\(resolve\(\) is (\w+)\)$", expr)
    if m:
        expr, resolve_type = m.group(1), m.group(2)
    expr = re.sub(r"^\(?(Resource|DomainResource)\.", lambda mm: mm.group(0).replace(mm.group(1), rtype), expr)
    # (X as T)rest -> X.ofType(T)rest
    m = re.match(r"^\((.+) as (\w+)\)(.*)$", expr)
    if m:
        expr = f"{m.group(1)}.ofType({m.group(2)}){m.group(3)}"
    expr = re.sub(r"\.as\((\w+)\)", lambda mm: f".ofType({_fhir_type_name(mm.group(1))})", expr)
    return expr, resolve_type


def _fhir_type_name(name: str) -> str:
    return {"DateTime": "dateTime", "String": "string", "Boolean": "boolean", "Integer": "integer"}.get(name, name)


def _typed(node: Any) -> Typed | None:
    if isinstance(node, ResourceNode):
        data = node.data
        if data is None:
            return None
        path = node.path or ""
        if path.startswith("System."):
            path = {"System.String": "string", "System.Boolean": "boolean", "System.Integer": "integer",
                    "System.Decimal": "decimal", "System.DateTime": "dateTime"}.get(path, "string")
        if isinstance(data, dict) and set(data) <= {"extension", "id"}:
            return None
        return Typed(path, data)
    if isinstance(node, bool):
        return Typed("boolean", node)
    if isinstance(node, (int, Decimal, float)):
        return Typed("decimal", node)
    if isinstance(node, str):
        return Typed("string", node)
    if isinstance(node, dict):
        return Typed("Element", node)
    return None


class Oracle:
    """Evaluate FHIR searches against an in-memory copy of the store."""

    def __init__(self, resources: dict[str, dict[str, dict[str, Any]]], base: str) -> None:
        self.resources = resources
        self.base = base.rstrip("/")
        self.registry = registry()
        self._compiled: dict[tuple[str, str], list[CompiledPath]] = {}
        self._values: dict[tuple[str, str], dict[str, list[Typed]]] = {}
        self._composite: dict[tuple[str, str], dict[str, list[tuple[list[Typed], ...]]]] = {}

    # -- parameter values --------------------------------------------------------------------

    def param(self, rtype: str, code: str) -> SearchParam:
        p = self.registry.get(rtype, code)
        if p is None:
            raise OracleError(f"{rtype} has no search parameter {code!r}")
        return p

    def _paths(self, rtype: str, code: str) -> list[CompiledPath]:
        key = (rtype, code)
        if key not in self._compiled:
            p = self.param(rtype, code)
            if code in UNSUPPORTED or p.type == "special":
                raise OracleError(f"{rtype}.{code} is not evaluated by the oracle")
            compiled = []
            for path in p.paths:
                expr, resolve_type = _rewrite(path, rtype)
                compiled.append(CompiledPath(fp_compile(expr, MODEL, {"returnRawData": True}), resolve_type))
            self._compiled[key] = compiled
        return self._compiled[key]

    def values(self, rtype: str, code: str) -> dict[str, list[Typed]]:
        """id → the typed values of parameter ``code`` for every stored resource of ``rtype``."""
        key = (rtype, code)
        if key not in self._values:
            p = self.param(rtype, code)
            if p.type == "composite":
                raise OracleError("use composite_values")
            paths = self._paths(rtype, code)
            out: dict[str, list[Typed]] = {}
            for rid, res in self.resources.get(rtype, {}).items():
                vals: list[Typed] = []
                for cp in paths:
                    for node in cp.fn(res, {}):
                        tv = _typed(node)
                        if tv is None:
                            continue
                        if cp.resolve_type is not None and self.ref_type(tv) != cp.resolve_type:
                            continue
                        vals.append(tv)
                out[rid] = vals
            self._values[key] = out
        return self._values[key]

    def composite_values(self, rtype: str, code: str) -> dict[str, list[tuple[list[Typed], ...]]]:
        """id → one tuple per element, holding each component's typed values."""
        key = (rtype, code)
        if key not in self._composite:
            p = self.param(rtype, code)
            comps = []
            for definition, expr in p.components:
                ctype = self.registry.type_of_url(definition)
                if ctype is None:
                    raise OracleError(f"unknown component {definition}")
                parts = [_rewrite(e, rtype)[0] for e in expr.split("|")]
                fns = [fp_compile(e.strip(), MODEL, {"returnRawData": True}) for e in parts]
                comps.append((ctype, fns))
            elements = [fp_compile(_rewrite(path, rtype)[0], MODEL, {"returnRawData": True}) for path in p.paths]
            out: dict[str, list[tuple[list[Typed], ...]]] = {}
            for rid, res in self.resources.get(rtype, {}).items():
                rows: list[tuple[list[Typed], ...]] = []
                for efn in elements:
                    for node in efn(res, {}):
                        row = []
                        for _ctype, fns in comps:
                            vals = []
                            for fn in fns:
                                vals += [tv for tv in (_typed(n) for n in fn(node, {})) if tv is not None]
                            row.append(vals)
                        rows.append(tuple(row))
                out[rid] = rows
            self._composite[key] = out
        return self._composite[key]

    def component_types(self, rtype: str, code: str) -> list[str]:
        p = self.param(rtype, code)
        return [self.registry.type_of_url(d) or "?" for d, _ in p.components]

    # -- references --------------------------------------------------------------------------

    def parse_ref(self, text: str) -> tuple[str, str, str | None] | None:
        """(type, id, version) of a reference to this server, or None."""
        s = text
        if s.startswith(self.base + "/"):
            s = s[len(self.base) + 1 :]
        m = _REL_REF.match(s)
        if not m:
            return None
        return m.group(1), m.group(2), m.group(3)

    def ref_type(self, tv: Typed) -> str | None:
        """The resource type a Reference points to, on this server or another one
        (what ``resolve() is T`` tests); None for urn:, contained or identifier-only."""
        if not isinstance(tv.data, dict) or not isinstance(tv.data.get("reference"), str):
            return None
        m = _ANY_REF.search(tv.data["reference"])
        return m.group(1) if m else None

    def local_ref(self, tv: Typed) -> tuple[str, str] | None:
        if not isinstance(tv.data, dict):
            return None
        ref = tv.data.get("reference")
        if not isinstance(ref, str):
            return None
        parsed = self.parse_ref(ref)
        return (parsed[0], parsed[1]) if parsed else None

    def local_refs(self, rtype: str, code: str, rid: str) -> list[tuple[str, str]]:
        return [r for r in (self.local_ref(tv) for tv in self.values(rtype, code).get(rid, [])) if r]

    # -- the search --------------------------------------------------------------------------

    def ids(self, rtype: str) -> set[str]:
        return set(self.resources.get(rtype, {}))

    def search(self, rtype: str, pairs: Iterable[tuple[str, str]]) -> set[str]:
        """The ids of ``rtype`` matching all (name, value) pairs (control parameters ignored)."""
        result = self.ids(rtype)
        for raw_name, raw_value in pairs:
            if raw_name.split(":")[0] in CONTROL_PARAMS:
                continue
            result &= self.clause(rtype, raw_name, raw_value)
        return result

    def clause(self, rtype: str, raw_name: str, raw_value: str) -> set[str]:
        if raw_name.startswith("_has:"):
            parts = raw_name.split(":")
            if len(parts) < 4:
                raise OracleError(f"bad _has {raw_name}")
            src_type, ref_param = parts[1], parts[2]
            inner = ":".join(parts[3:])
            sources = self.clause(src_type, inner, raw_value)
            hits: set[str] = set()
            for sid in sources:
                for t, i in self.local_refs(src_type, ref_param, sid):
                    if t == rtype:
                        hits.add(i)
            return hits & self.ids(rtype)
        if "." in raw_name:
            first, _, rest = raw_name.partition(".")
            pname, _, tmod = first.partition(":")
            p = self.param(rtype, pname)
            if p.type != "reference":
                raise OracleError(f"chain through non-reference {rtype}.{pname}")
            targets = [tmod] if tmod else list(p.target)
            inner_ids: dict[str, set[str]] = {}
            for t in targets:
                try:
                    inner_ids[t] = self.clause(t, rest, raw_value)
                except OracleError:
                    if tmod:
                        raise
            hits = set()
            for rid in self.ids(rtype):
                for t, i in self.local_refs(rtype, pname, rid):
                    if i in inner_ids.get(t, ()):
                        hits.add(rid)
                        break
            return hits
        name, _, modifier = raw_name.partition(":")
        modifier = modifier or None
        values = split_values(raw_value)
        if name == "study" and rtype in ("Observation", "MedicationAdministration", "QuestionnaireResponse"):
            if modifier is not None:
                raise OracleError("study takes no modifier")
            return self.clause(rtype, "patient._has:ResearchSubject:individual:study", raw_value)
        p = self.param(rtype, name)
        if modifier == "missing":
            want_missing = raw_value == "true"
            if p.type == "composite":
                # a composite value exists only where every component has a value it can be
                # matched by: a text-only CodeableConcept gives the token half nothing to
                # match, so ``code$value`` cannot exist for it
                ctypes = self.component_types(rtype, name)
                present = {
                    rid
                    for rid, rows in self.composite_values(rtype, name).items()
                    if any(all(any(_matchable(t, tv, composite=True) for tv in comp) for t, comp in zip(ctypes, r)) for r in rows)
                }
            else:
                present = {rid for rid, vals in self.values(rtype, name).items() if any(_matchable(p.type, tv) for tv in vals)}
            return (self.ids(rtype) - present) if want_missing else present
        if p.type == "composite":
            return self._composite_match(rtype, p, values)
        if modifier == "not":
            if p.type != "token":
                raise OracleError(":not on a non-token parameter")
            matched = self._match_any(rtype, p, None, values)
            return self.ids(rtype) - matched
        return self._match_any(rtype, p, modifier, values)

    def _match_any(self, rtype: str, p: SearchParam, modifier: str | None, values: tuple[str, ...]) -> set[str]:
        matchers = [self._matcher(p, modifier, v) for v in values]
        hits = set()
        for rid, vals in self.values(rtype, p.code).items():
            if any(m(tv) for tv in vals for m in matchers):
                hits.add(rid)
        return hits

    def _composite_match(self, rtype: str, p: SearchParam, values: tuple[str, ...]) -> set[str]:
        ctypes = self.component_types(rtype, p.code)
        hits = set()
        for v in values:
            parts = split_unescaped(v, "$")
            if len(parts) != len(ctypes):
                raise OracleError(f"composite {p.code} needs {len(ctypes)} parts")
            matchers = [self._matcher(_Fake(t, p.code), None, part) for t, part in zip(ctypes, parts)]
            for rid, rows in self.composite_values(rtype, p.code).items():
                if any(all(any(m(tv) for tv in comp) for m, comp in zip(matchers, row)) for row in rows):
                    hits.add(rid)
        return hits

    # -- per-type value matchers -------------------------------------------------------------

    def _matcher(self, p: Any, modifier: str | None, value: str) -> Callable[[Typed], bool]:
        kind = p.type
        if kind == "token":
            if modifier == "text":
                needle = normalise(unescape(value))
                return lambda tv: token_text_match(tv, needle)
            if modifier not in (None,):
                raise OracleError(f"token modifier {modifier}")
            system, code = split_token(value)
            system = unescape(system) if system is not None else None
            code = unescape(code) if code is not None else None
            return lambda tv: token_match(tv, system, code)
        if kind == "string":
            if modifier not in (None, "contains", "exact"):
                raise OracleError(f"string modifier {modifier}")
            needle = unescape(value)
            return lambda tv: string_match(tv, needle, modifier)
        if kind == "date":
            if modifier is not None:
                raise OracleError(f"date modifier {modifier}")
            prefix, text = split_prefix(value)
            rng = date_range(text)
            if rng is None:
                raise OracleError(f"bad date {value}")
            s, e = rng
            return lambda tv: any(date_compare(prefix, lo, hi, s, e) for lo, hi in value_ranges(tv))
        if kind == "number":
            prefix, text = split_prefix(value)
            Decimal(text)
            return lambda tv: (d := to_decimal(tv.data)) is not None and number_compare(prefix, d, text)
        if kind == "quantity":
            if modifier is not None:
                raise OracleError(f"quantity modifier {modifier}")
            return quantity_matcher(value)
        if kind == "reference":
            return self._reference_matcher(p, modifier, value)
        if kind == "uri":
            if modifier not in (None, "below", "above"):
                raise OracleError(f"uri modifier {modifier}")
            return lambda tv: isinstance(tv.data, str) and uri_match(tv.data, value, modifier)
        raise OracleError(f"type {kind} not evaluated")

    def _reference_matcher(self, p: Any, modifier: str | None, value: str) -> Callable[[Typed], bool]:
        if modifier == "identifier":
            system, code = split_token(value)
            system = unescape(system) if system is not None else None
            code = unescape(code) if code is not None else None
            return lambda tv: isinstance(tv.data, dict) and tv.data.get("identifier") is not None and token_match(
                Typed("Identifier", tv.data["identifier"]), system, code
            )
        if modifier is not None and not re.fullmatch(r"[A-Z][A-Za-z]+", modifier):
            raise OracleError(f"reference modifier {modifier}")
        value = unescape(value)
        parsed = self.parse_ref(value)
        allowed = {modifier} if modifier else set(p.target)
        if parsed is not None:
            want_type, want_id, want_version = parsed
            if modifier and want_type != modifier:
                return lambda tv: False

            def rel(tv: Typed) -> bool:
                if tv.type in ("canonical", "uri"):
                    return False
                ref = tv.data.get("reference") if isinstance(tv.data, dict) else None
                if not isinstance(ref, str):
                    return False
                got = self.parse_ref(ref)
                if got is None or (got[0], got[1]) != (want_type, want_id):
                    return False
                return want_version is None or got[2] == want_version

            return rel
        if "/" in value or ":" in value or value.startswith("#"):
            # an absolute URL elsewhere, a urn:, a contained "#id" or a canonical: literal
            def literal(tv: Typed) -> bool:
                if isinstance(tv.data, str):
                    return tv.data == value or tv.data.split("|")[0] == value
                return isinstance(tv.data, dict) and tv.data.get("reference") == value

            return literal

        def bare(tv: Typed) -> bool:
            ref = self.local_ref(tv)
            return ref is not None and ref[1] == value and ref[0] in allowed

        return bare


@dataclass(frozen=True)
class _Fake:
    type: str
    code: str
    target: tuple[str, ...] = ()


# --- token, string, uri, quantity matching -------------------------------------------------


def _matchable(ptype: str, tv: Typed, *, composite: bool = False) -> bool:
    """Whether a value counts as present for ``:missing``.

    fhirpathpy's ``ofType(Quantity)`` (our rewrite of ``as Quantity``) lets a
    ``valueSampledData`` through, but a SampledData is no Quantity: a quantity parameter
    over it has no value. In a composite, a token component needs a code."""
    if ptype == "quantity":
        return tv.type in QUANTITY_TYPES and isinstance(tv.data, dict) and to_decimal(tv.data.get("value")) is not None
    if composite and ptype == "token":
        return any(code is not None for _system, code in _codings(tv))
    return True


def _codings(tv: Typed) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs a token value offers."""
    d = tv.data
    if isinstance(d, bool):
        return [(None, "true" if d else "false")]
    if isinstance(d, (str, int, Decimal)):
        return [(None, str(d))]
    if not isinstance(d, dict):
        return []
    t = tv.type
    if t == "CodeableConcept":
        return [(c.get("system"), c.get("code")) for c in d.get("coding", []) if isinstance(c, dict)]
    if t == "Coding":
        return [(d.get("system"), d.get("code"))]
    if t == "Identifier":
        return [(d.get("system"), d.get("value"))]
    if t == "ContactPoint":
        return [(None, d.get("value"))]
    # unknown complex element: best effort by shape
    if "coding" in d:
        return _codings(Typed("CodeableConcept", d))
    if "code" in d:
        return _codings(Typed("Coding", d))
    if "value" in d:
        return _codings(Typed("Identifier", d))
    return []


def token_match(tv: Typed, system: str | None, code: str | None) -> bool:
    primitive = not isinstance(tv.data, dict)
    for sys, c in _codings(tv):
        if code is not None and c != code:
            continue
        if system is None:
            return code is not None
        if primitive or tv.type == "ContactPoint":
            return False
        if system == "":
            if not sys:
                return True
            continue
        if sys == system:
            return True
    return False


def _display_texts(tv: Typed) -> list[str]:
    d = tv.data
    if not isinstance(d, dict):
        return []
    texts = []
    if tv.type == "CodeableConcept" or "coding" in d:
        if isinstance(d.get("text"), str):
            texts.append(d["text"])
        texts += [c["display"] for c in d.get("coding", []) if isinstance(c, dict) and isinstance(c.get("display"), str)]
    elif tv.type == "Coding" and isinstance(d.get("display"), str):
        texts.append(d["display"])
    return texts


def words(text: str) -> list[str]:
    return [w for w in re.split(r"\W+", normalise(text)) if w]


def token_text_match(tv: Typed, needle: str) -> bool:
    return any(w.startswith(needle) for text in _display_texts(tv) for w in words(text))


HUMANNAME_PARTS = ("family", "given", "prefix", "suffix", "text")
ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def string_parts(tv: Typed) -> list[str]:
    d = tv.data
    if isinstance(d, str):
        return [d]
    if not isinstance(d, dict):
        return []
    keys = HUMANNAME_PARTS if tv.type == "HumanName" else ADDRESS_PARTS if tv.type == "Address" else ()
    parts: list[str] = []
    for k in keys:
        v = d.get(k)
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            parts += [x for x in v if isinstance(x, str)]
    return parts


def string_match(tv: Typed, needle: str, modifier: str | None) -> bool:
    parts = string_parts(tv)
    if modifier == "exact":
        return any(p == needle for p in parts)
    n = normalise(needle)
    if modifier == "contains":
        return any(n in normalise(p) for p in parts)
    return any(normalise(p).startswith(n) for p in parts)


def uri_match(stored: str, value: str, modifier: str | None) -> bool:
    if modifier == "below":
        return stored.startswith(value)
    if modifier == "above":
        return value.startswith(stored)
    return stored == value


def quantity_matcher(value: str) -> Callable[[Typed], bool]:
    prefix, rest = split_prefix(value)
    parts = [unescape(x) for x in split_unescaped(rest, "|")]
    if len(parts) == 1:
        number, system, code = parts[0], None, None
    elif len(parts) == 3:
        number, system, code = parts[0], parts[1] or None, parts[2] or None
    else:
        raise OracleError(f"bad quantity {value}")
    Decimal(number)
    search_canon_unit = None
    if system in (UCUM, None) and code:
        probe = ucum_canonical(Decimal(1), code)
        if probe is not None:
            search_canon_unit = probe[1]

    def match(tv: Typed) -> bool:
        if tv.type not in QUANTITY_TYPES or not isinstance(tv.data, dict):
            return False
        v = to_decimal(tv.data.get("value"))
        if v is None:
            return False
        qsys, qcode, qunit = tv.data.get("system"), tv.data.get("code"), tv.data.get("unit")
        if code is None:
            if system is not None and qsys != system:
                return False
            return number_compare(prefix, v, number)
        if system is None:
            # "number||code": the code or the human unit equals (spec), or — "the search
            # processor may choose to perform a search based on canonical units" — a UCUM
            # quantity that converts
            if code in (qcode, qunit) and number_compare(prefix, v, number):
                return True
            if search_canon_unit is None or qsys != UCUM or not isinstance(qcode, str):
                return False
            stored = ucum_canonical(v, qcode)
            if stored is None or stored[1] != search_canon_unit:
                return False
            return number_compare(prefix, stored[0], number, lambda d: ucum_canonical(d, code)[0])
        if search_canon_unit is not None and qsys == UCUM and isinstance(qcode, str):
            stored = ucum_canonical(v, qcode)
            if stored is not None:
                if stored[1] != search_canon_unit:
                    return False
                convert = lambda d: ucum_canonical(d, code)[0]  # noqa: E731
                return number_compare(prefix, stored[0], number, convert)
        if qsys != system or qcode != code:
            return False
        return number_compare(prefix, v, number)

    return match
