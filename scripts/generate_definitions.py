"""Generate the checked-in R4 definition tables from the official HL7 package.

Reads ``hl7.fhir.r4.examples@4.0.1`` (fetched and checksum-verified by
:mod:`service.fhir.definitions.hl7_package`) and writes into
``service/fhir/definitions/``:

* ``r4_resource_types.json``   – the 146 concrete resource type names;
* ``r4_bindings.json``         – a pruned, type-driven walker table for the
  *required* value-set bindings plus the expanded value sets it needs;
* ``r4_bindings_skipped.json`` – required bindings whose value set cannot be
  expanded from the package (so the gap is documented, not hidden);
* ``r4_search_parameters.json`` – the 1,375 official SearchParameters, trimmed;
* ``r4_compartments.json``     – compartment → resource type → param codes.

The service reads only these tables, so it never needs the package or the
network at run time. Output is deterministic (sorted keys, one top-level entry
per line) so regenerating gives a readable diff.

Run from the repository root: ``.venv/bin/python scripts/generate_definitions.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.fhir.definitions.hl7_package import ensure_hl7_examples  # noqa: E402

OUT_DIR = ROOT / "service" / "fhir" / "definitions"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# Properties every Element has; the walker handles extensions generically at every level.
EXTENSION_PROPS = frozenset({"extension", "modifierExtension"})
LEAF_KINDS = {"code": "code", "string": "string", "uri": "string", "Coding": "Coding",
              "CodeableConcept": "CodeableConcept"}

Json = dict[str, Any]


# --------------------------------------------------------------------------- output


def write_json(name: str, data: Any, depth: int = 1) -> int:
    """Write ``data`` deterministically with sorted keys.

    The first ``depth`` levels of dicts/lists get one entry per line, everything
    below is compact, so a regenerated table diffs line by line.
    """
    text = _layout(data, depth) + "\n"
    (OUT_DIR / name).write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def _layout(value: Any, depth: int) -> str:
    if depth <= 0 or not isinstance(value, (dict, list)) or not value:
        return _compact(value)
    if isinstance(value, dict):
        items = [f"{json.dumps(k, ensure_ascii=False)}: {_layout(value[k], depth - 1)}"
                 for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n}"
    return "[\n" + ",\n".join(_layout(v, depth - 1) for v in value) + "\n]"


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- package


def load_package(pkg: Path) -> tuple[dict[str, Json], dict[str, Json], dict[str, Json]]:
    """StructureDefinitions by url, ValueSets by url, CodeSystems by url."""
    sds: dict[str, Json] = {}
    vss: dict[str, Json] = {}
    css: dict[str, Json] = {}
    for prefix, target in (("StructureDefinition-", sds), ("ValueSet-", vss),
                           ("CodeSystem-", css)):
        for path in sorted(pkg.glob(f"{prefix}*.json")):
            res = json.loads(path.read_text(encoding="utf-8"))
            target[res["url"]] = res
    return sds, vss, css


def concrete_resource_types(sds: dict[str, Json]) -> list[str]:
    """Names of the concrete resources: kind=resource, specialization, not abstract."""
    return sorted(sd["type"] for sd in sds.values()
                  if sd.get("kind") == "resource" and sd.get("derivation") == "specialization"
                  and not sd.get("abstract"))


# --------------------------------------------------------------------------- value sets


class NotExpandable(Exception):
    """A value set whose content cannot be listed from the package alone."""


# Codes are kept in definition order (dicts as ordered sets) so that error messages
# can list "registered, preliminary, final, ..." the way the specification does.
Codes = dict[str, None]


def _cs_codes(concepts: Iterable[Json]) -> Iterator[tuple[str, list[Json]]]:
    """(code, child concepts) for every concept of a CodeSystem, depth first."""
    for c in concepts:
        yield c["code"], c.get("concept", [])
        yield from _cs_codes(c.get("concept", []))


def _descendants(concepts: list[Json], root: str) -> Codes:
    for code, children in _cs_codes(concepts):
        if code == root:
            return dict.fromkeys(c for c, _ in _cs_codes(children))
    raise NotExpandable(f"filter code {root!r} not found in code system")


def _merge(into: dict[str, Codes], more: dict[str, Codes]) -> None:
    for system, codes in more.items():
        into.setdefault(system, {}).update(codes)


def _expand_include(inc: Json, vss: dict[str, Json], css: dict[str, Json],
                    seen: tuple[str, ...]) -> dict[str, Codes]:
    """Codes selected by one compose.include/exclude entry, keyed by system."""
    if inc.get("valueSet"):
        if inc.get("system"):
            raise NotExpandable("include combines system and valueSet")
        result: dict[str, Codes] = {}
        for ref in inc["valueSet"]:
            _merge(result, expand_value_set(ref, vss, css, seen))
        return result
    system = inc.get("system")
    if not system:
        raise NotExpandable("include without system")
    if inc.get("concept"):
        if inc.get("filter"):
            raise NotExpandable("include combines concept and filter")
        return {system: dict.fromkeys(c["code"] for c in inc["concept"])}
    cs = css.get(system)
    if cs is None:
        raise NotExpandable(f"code system {system} is not in the package")
    if cs.get("content") != "complete":
        raise NotExpandable(f"code system {system} has content={cs.get('content')}")
    concepts = cs.get("concept", [])
    if not inc.get("filter"):
        return {system: dict.fromkeys(c for c, _ in _cs_codes(concepts))}
    codes: Codes | None = None
    for flt in inc["filter"]:
        if flt.get("property") != "concept" or flt.get("op") not in ("is-a", "descendent-of"):
            raise NotExpandable(f"filter {flt.get('property')} {flt.get('op')} not supported")
        selected = _descendants(concepts, flt["value"])
        if flt["op"] == "is-a":
            selected = {flt["value"]: None, **selected}
        codes = selected if codes is None else {c: None for c in codes if c in selected}
    return {system: codes or {}}


def expand_value_set(url: str, vss: dict[str, Json], css: dict[str, Json],
                     seen: tuple[str, ...] = ()) -> dict[str, Codes]:
    """Expand a ValueSet from its compose to {system: codes}; raise NotExpandable if impossible.

    Supports include by concept list, whole complete CodeSystems (nested concepts
    included), ``concept is-a/descendent-of`` filters, included ValueSets and excludes.
    """
    url = url.split("|")[0]
    if url in seen:
        raise NotExpandable(f"value set {url} includes itself")
    vs = vss.get(url)
    if vs is None:
        raise NotExpandable(f"value set {url} is not in the package")
    compose = vs.get("compose")
    if not compose or not compose.get("include"):
        raise NotExpandable("value set has no compose.include")
    seen = (*seen, url)
    result: dict[str, Codes] = {}
    for inc in compose["include"]:
        _merge(result, _expand_include(inc, vss, css, seen))
    for exc in compose.get("exclude", []):
        for system, codes in _expand_include(exc, vss, css, seen).items():
            if system in result:
                result[system] = {c: None for c in result[system] if c not in codes}
    if not any(result.values()):
        raise NotExpandable("expansion is empty")
    return result


# --------------------------------------------------------------------------- walker table


def _choice_name(path_name: str, type_code: str) -> str:
    """JSON name of one choice: ``value[x]`` + ``Quantity`` → ``valueQuantity``."""
    return path_name[:-3] + type_code[0].upper() + type_code[1:]


class TableBuilder:
    """Build the pruned {type name: {json property: [kind, target]}} walker table.

    kind is ``"type"`` (descend; target = type name), ``"resource"`` (descend by the
    embedded resource's resourceType; target null) or a leaf kind ``"code"``,
    ``"string"``, ``"Coding"``, ``"CodeableConcept"`` (target = value set key).
    Backbone elements become synthetic types named by their path.
    """

    def __init__(self, sds: dict[str, Json], vss: dict[str, Json], css: dict[str, Json]):
        self.sds, self.vss, self.css = sds, vss, css
        self.raw: dict[str, dict[str, list[Any]]] = {}
        self.value_sets: dict[str, Json] = {}
        self.skipped: dict[str, Json] = {}
        self.enforced_elements: list[str] = []
        self._vs_keys: dict[str, str | None] = {}

    def build(self) -> None:
        """Read every base datatype and resource snapshot."""
        for sd in self.sds.values():
            if sd.get("derivation") == "specialization" and sd.get("kind") in (
                    "complex-type", "resource"):
                self._read_sd(sd)

    def _resolve_type(self, code: str) -> str | None:
        """The walker type for an element type code (constraints walk as their base)."""
        sd = self.sds.get(SD_PREFIX + code)
        if sd is None or sd.get("kind") not in ("complex-type", "resource"):
            return None
        if sd.get("derivation") == "constraint":
            return sd["type"]
        return sd["id"]

    def _vs_key(self, url: str, element: str) -> str | None:
        """Key of the expanded value set in the table, or None (recorded as skipped)."""
        url = url.split("|")[0]
        if url not in self._vs_keys:
            try:
                systems = expand_value_set(url, self.vss, self.css)
            except NotExpandable as exc:
                self.skipped[url] = {"reason": str(exc), "elements": []}
                self._vs_keys[url] = None
            else:
                key = self.vss[url]["id"]
                self.value_sets[key] = {"url": url,
                                        "systems": {s: list(c) for s, c in systems.items()}}
                self._vs_keys[url] = key
        key = self._vs_keys[url]
        if key is None:
            self.skipped[url]["elements"].append(element)
        return key

    def _read_sd(self, sd: Json) -> None:
        """Add the properties of one type (and of its backbone elements) to ``raw``."""
        elements = sd["snapshot"]["element"]
        root = elements[0]["path"]
        name = sd["id"]
        paths = {e["path"] for e in elements}
        for e in elements[1:]:
            if e.get("sliceName"):
                continue
            path = e["path"]
            parent, _, prop = path.rpartition(".")
            owner = name if parent == root else name + parent[len(root):]
            here = name + path[len(root):]
            table = self.raw.setdefault(owner, {})
            if prop in EXTENSION_PROPS:
                continue
            if e.get("contentReference"):
                ref = e["contentReference"].lstrip("#")
                table[prop] = ["type", name + ref[len(root):]]
                continue
            if any(p.startswith(path + ".") for p in paths):
                self.raw.setdefault(here, {})
                table[prop] = ["type", here]
                continue
            binding = e.get("binding") or {}
            required = binding.get("strength") == "required" and binding.get("valueSet")
            for t in e.get("type", []):
                code = t["code"]
                json_name = _choice_name(prop, code) if prop.endswith("[x]") else prop
                if required and code in LEAF_KINDS:
                    key = self._vs_key(binding["valueSet"], f"{owner}.{json_name}")
                    if key is not None:
                        table[json_name] = [LEAF_KINDS[code], key]
                        self.enforced_elements.append(f"{owner}.{json_name}")
                        continue
                if code == "Resource":
                    table[json_name] = ["resource", None]
                    continue
                target = self._resolve_type(code)
                if target is not None:
                    table[json_name] = ["type", target]

    def pruned(self) -> dict[str, dict[str, list[Any]]]:
        """Keep only types/properties from which an enforced binding is reachable."""
        reaching: set[str] = set()
        changed = True
        while changed:
            changed = False
            for tname, props in self.raw.items():
                if tname in reaching:
                    continue
                for kind, target in props.values():
                    if kind == "resource" or (kind == "type" and target in reaching) or (
                            kind not in ("type", "resource")):
                        reaching.add(tname)
                        changed = True
                        break
        out: dict[str, dict[str, list[Any]]] = {}
        for tname in sorted(reaching):
            props = {p: v for p, v in self.raw[tname].items()
                     if v[0] != "type" or v[1] in reaching}
            out[tname] = dict(sorted(props.items()))
        return out


# --------------------------------------------------------------------------- other tables


def search_parameters(pkg: Path) -> list[Json]:
    """The official SearchParameters, trimmed to what the search engine needs."""
    bundle = json.loads((pkg / "Bundle-searchParams.json").read_text(encoding="utf-8"))
    out = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        out.append({
            "id": sp["id"], "url": sp["url"], "code": sp["code"], "base": sp.get("base", []),
            "type": sp["type"], "expression": sp.get("expression"),
            "target": sp.get("target", []), "modifier": sp.get("modifier", []),
            "comparator": sp.get("comparator", []), "multipleOr": sp.get("multipleOr"),
            "multipleAnd": sp.get("multipleAnd"),
            "component": [{"definition": c["definition"], "expression": c["expression"]}
                          for c in sp.get("component", [])],
        })
    return sorted(out, key=lambda sp: sp["id"])


def compartments(pkg: Path) -> dict[str, dict[str, list[str]]]:
    """{compartment code: {resource type: [param codes]}} from the official definitions.

    ``CompartmentDefinition-example.json`` (a two-resource Device example) is
    skipped: it would otherwise clash with the real Device compartment. (All six
    definitions are marked experimental in R4, so that flag cannot tell them apart.)
    Resource types without params are not members and are left out.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for path in sorted(pkg.glob("CompartmentDefinition-*.json")):
        cd = json.loads(path.read_text(encoding="utf-8"))
        if cd["id"] == "example":
            continue
        out[cd["code"]] = {r["code"]: list(r["param"]) for r in cd.get("resource", [])
                           if r.get("param")}
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    """Generate every table and print a summary."""
    pkg = ensure_hl7_examples()
    sds, vss, css = load_package(pkg)

    types = concrete_resource_types(sds)
    sizes = {"r4_resource_types.json": write_json("r4_resource_types.json", types)}
    try:
        import fhirkit
        expected = set(fhirkit.RESOURCE_TYPES)
        if set(types) != expected:
            print(f"WARNING: resource types differ from fhirkit.RESOURCE_TYPES: "
                  f"only package {sorted(set(types) - expected)}, "
                  f"only fhirkit {sorted(expected - set(types))}")
    except ImportError:
        print("WARNING: fhirkit not installed, resource types not cross-checked")

    builder = TableBuilder(sds, vss, css)
    builder.build()
    table = builder.pruned()
    used = {v[1] for props in table.values() for v in props.values()
            if v[0] not in ("type", "resource")}
    value_sets = {k: v for k, v in builder.value_sets.items() if k in used}
    skipped = {url: {"reason": s["reason"], "elements": sorted(set(s["elements"]))}
               for url, s in builder.skipped.items()}
    sizes["r4_bindings.json"] = write_json("r4_bindings.json", {
        "types": table, "valueSets": value_sets}, depth=2)
    sizes["r4_bindings_skipped.json"] = write_json("r4_bindings_skipped.json", skipped)
    sizes["r4_search_parameters.json"] = write_json("r4_search_parameters.json",
                                                    search_parameters(pkg))
    sizes["r4_compartments.json"] = write_json("r4_compartments.json", compartments(pkg))

    enforced = sorted(set(builder.enforced_elements))
    print(f"{len(types)} resource types; {len(enforced)} required-binding elements enforced "
          f"({len(value_sets)} value sets), {sum(len(s['elements']) for s in skipped.values())} "
          f"skipped ({len(skipped)} value sets); walker table: {len(table)} types")
    for name, size in sizes.items():
        print(f"  {name}: {size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
