"""Precompute UCUM base-unit factors for the units trial data and the official examples use.

ucumvert needs seconds to build its registry; with this table (checked in as
``service/fhir/definitions/ucum_common.json``) the service only loads ucumvert when a
unit outside it arrives. ``tests/test_ucum_table.py`` checks the table against ucumvert.

    python scripts/generate_ucum_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTRACT_UNITS = [
    "{#}", "1", "{score}", "cm", "mm", "mm/h", "mg/L", "mg/dL", "g/L", "g/dL", "ug/mL", "ng/mL", "pg/mL", "pg/L", "ng/L",
    "[arb'U]/mL", "U/mL", "[IU]/mL", "%", "10*6/kg", "10*9/L", "10*3/uL", "mmol/L", "umol/L", "kg", "g", "mg", "cm", "m",
    "kg/m2", "mm[Hg]", "/min", "Cel", "[degF]", "L", "mL", "h", "min", "s", "d", "wk", "mo", "a", "U/L", "[iU]/L",
]


def main() -> None:
    from service.fhir.definitions.hl7_package import ensure_hl7_examples, example_files
    from service.search import ucum

    codes: set[str] = set(CONTRACT_UNITS)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("system") == ucum.UCUM_SYSTEM and isinstance(node.get("code"), str):
                codes.add(node["code"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in example_files(ensure_hl7_examples()):
        walk(json.loads(path.read_text()))
    table = {}
    for code in sorted(codes):
        found = ucum.compute_factor(code)
        if found is not None:
            table[code] = [found[0], found[1]]
    out = ROOT / "service" / "fhir" / "definitions" / "ucum_common.json"
    out.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"{len(table)} units written to {out}")


if __name__ == "__main__":
    main()
