"""Compile the FHIRPath forms used by search parameters into fast extractors.

Evaluating the published expressions with a FHIRPath engine on every write costs
~2 ms per Observation (ecosystem.md §10). All but a handful of the 2,631 (type,
expression) pairs of the official R4 parameters use a small subset, compiled here into
steps walked over the JSON dict (a few µs):

- member access ``Observation.code.coding``;
- a choice narrowed by type: ``(Observation.value as Quantity)``, ``.as(Quantity)``,
  ``.ofType(Quantity)`` → ``valueQuantity``;
- filters ``.where(system='email')`` and ``.where(resolve() is Patient)`` (a reference
  whose target type is Patient), followed by more steps if any;
- an index ``entry[0]``;
- ``Patient.deceased.exists() and Patient.deceased != false`` (the one boolean
  expression), compiled to a special step.

:func:`compile_path` returns ``None`` for anything else; the registry reports those
parameters as not indexable instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<where_resolve>\.where\(resolve\(\)\s+is\s+(?P<rtype>[A-Za-z]+)\))
      | (?P<where_eq>\.where\((?P<field>[A-Za-z]+)\s*=\s*'(?P<value>[^']*)'\))
      | (?P<as_fn>\.(?:as|ofType)\((?P<as_type>[A-Za-z]+)\))
      | (?P<index>\[(?P<n>\d+)\])
      | (?P<member>\.?(?P<name>[A-Za-z_][A-Za-z0-9_]*))
    )""",
    re.VERBOSE,
)
_PAREN_AS = re.compile(r"^\((?P<inner>[A-Za-z0-9_.\[\]]+) as (?P<type>[A-Za-z]+)\)(?P<rest>.*)$")
_DECEASED = re.compile(r"^(\w+)\.deceased\.exists\(\) and \1\.deceased != false$")


def _load_choice_names() -> frozenset[str]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "fhir" / "definitions" / "r4_choice_elements.json"
    return frozenset(json.loads(path.read_text()))


#: Resource element paths that are a choice ``[x]`` (``Observation.effective`` → ``effectiveDateTime`` …).
CHOICE_PATHS = _load_choice_names()


@dataclass(frozen=True, slots=True)
class Step:
    """One step: ``kind`` is member | choice | where | ref_type | index | deceased.

    A ``choice`` step is a member that may be a choice element written without its
    type (``Observation.effective``): it reads ``effective`` or any ``effective[Type]``.
    """

    kind: str
    name: str = ""
    value: str = ""
    index: int = 0


def _choice(name: str, type_name: str) -> str:
    return name + type_name[0].upper() + type_name[1:]


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """Steps from the resource root."""

    steps: tuple[Step, ...]

    @property
    def first_key(self) -> str | None:
        """The top-level JSON key (or choice prefix) the path starts with; None for the root."""
        if self.steps and self.steps[0].kind in ("member", "choice"):
            return self.steps[0].name
        return None

    def values(self, resource: dict[str, Any]) -> Iterator[Any]:
        """Every value the path reaches, lists flattened, in document order."""
        current: list[Any] = [resource]
        for step in self.steps:
            nxt: list[Any] = []
            kind = step.kind
            if kind == "member":
                for node in current:
                    if isinstance(node, dict):
                        value = node.get(step.name)
                        if value is None:
                            continue
                        if isinstance(value, list):
                            nxt.extend(v for v in value if v is not None)
                        else:
                            nxt.append(value)
            elif kind == "choice":
                name = step.name
                cut = len(name)
                for node in current:
                    if isinstance(node, dict):
                        value = node.get(name)
                        if value is None:
                            for key, val in node.items():
                                if key.startswith(name) and len(key) > cut and key[cut].isupper():
                                    value = val
                                    break
                        if value is None:
                            continue
                        if isinstance(value, list):
                            nxt.extend(v for v in value if v is not None)
                        else:
                            nxt.append(value)
            elif kind == "where":
                nxt = [n for n in current if isinstance(n, dict) and n.get(step.name) == step.value]
            elif kind == "ref_type":
                prefix = step.value + "/"
                for node in current:
                    if isinstance(node, dict):
                        ref = node.get("reference")
                        if isinstance(ref, str) and (ref.startswith(prefix) or ("/" + prefix) in ref):
                            nxt.append(node)
                        elif node.get("type") == step.value and "reference" not in node:
                            nxt.append(node)
            elif kind == "index":
                nxt = current[step.index : step.index + 1]
            elif kind == "deceased":
                for node in current:
                    if isinstance(node, dict):
                        if node.get("deceasedBoolean") is True or "deceasedDateTime" in node:
                            nxt.append(True)
                        elif "deceasedBoolean" in node or "deceasedDateTime" not in node:
                            nxt.append(False)
            current = nxt
            if not current:
                return
        yield from current


def compile_path(part: str, resource_type: str) -> CompiledPath | None:
    """Compile one union member (e.g. ``(Observation.value as Quantity)``) for ``resource_type``."""
    text = part.strip()
    if _DECEASED.match(text):
        root = text.split(".", 1)[0]
        return CompiledPath((Step("deceased"),)) if root == resource_type else None
    choice_type: str | None = None
    m = _PAREN_AS.match(text)
    if m:
        inner, choice_type, rest = m.group("inner"), m.group("type"), m.group("rest")
        text = inner
    else:
        rest = ""
    root, _, remainder = text.partition(".")
    if root not in (resource_type, "Resource", "DomainResource"):
        return None
    steps = _steps("." + remainder if remainder else "", resource_type)
    if steps is None or not steps:
        return None
    if choice_type is not None:
        last = steps[-1]
        if last.kind not in ("member", "choice"):
            return None
        steps[-1] = Step("member", _choice(last.name, choice_type))
    if rest:
        more = _steps(rest, "")
        if more is None:
            return None
        steps.extend(more)
    return CompiledPath(tuple(steps))


def _steps(text: str, root: str) -> list[Step] | None:
    """Parse the steps after the root; ``root`` names the resource type for choice lookup."""
    steps: list[Step] = []
    pos = 0
    dotted = root
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            return None
        if m.group("where_resolve"):
            steps.append(Step("ref_type", value=m.group("rtype")))
        elif m.group("where_eq"):
            steps.append(Step("where", name=m.group("field"), value=m.group("value")))
        elif m.group("as_fn"):
            if not steps or steps[-1].kind not in ("member", "choice"):
                return None
            steps[-1] = Step("member", _choice(steps[-1].name, m.group("as_type")))
        elif m.group("index"):
            steps.append(Step("index", index=int(m.group("n"))))
        else:
            name = m.group("name")
            if name in ("exists", "where", "resolve", "ofType", "as", "extension") and text[m.end() : m.end() + 1] == "(":
                return None
            dotted = f"{dotted}.{name}" if dotted else ""
            steps.append(Step("choice" if dotted in CHOICE_PATHS else "member", name))
        pos = m.end()
    return steps
