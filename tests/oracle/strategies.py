"""Hypothesis strategies for search queries built from values really present in the corpus.

Every clause starts from a value some stored resource has (a coding, a name part, a date,
a quantity, a reference …) and turns it into a query value the way a client would write
it: other precision, other time zone, other unit (mg/L ↔ mg/dL), a prefix of a name,
upper case or without accents, a bare id or an absolute URL, a modifier. A few values are
deliberately absent from the corpus. Clauses are ORed (comma), ANDed (repeated or
different parameters), chained (``subject:Patient.name``, two hops) and reversed
(``_has:Observation:subject:code``).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from .evaluator import UCUM, UNSUPPORTED, Oracle, Typed, string_parts

DATE_PREFIXES = ["", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]
NUMBER_PREFIXES = DATE_PREFIXES + ["ap"]
#: mass concentrations, as multiples of mg/L
MASS_CONC = {"mg/L": Decimal(1), "mg/dL": Decimal(10), "g/L": Decimal(1000), "g/dL": Decimal(10000), "ug/mL": Decimal(1)}
OFFSET_UNITS = {"Cel", "[degF]"}
#: every resource has these (the server does not take :missing on them; see test_search.py)
NO_MISSING = frozenset({"_id", "_lastUpdated"})


def esc(text: str) -> str:
    """Escape a value part for a search URL (``\\`` ``,`` ``|`` ``$``)."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def dec_text(d: Decimal) -> str:
    text = format(d, "f")
    return text


#: Parameters clients use most; drawn three times as often as the others.
CORE = {
    "Patient": "name family given birthdate gender identifier _id active address-city email phone telecom organization "
               "general-practitioner deceased death-date _tag _profile _source _lastUpdated address",
    "Observation": "code status date value-quantity subject patient category combo-code component-code value-concept "
                   "value-string identifier _id _tag _lastUpdated performer encounter code-value-quantity "
                   "combo-value-quantity component-value-quantity code-value-concept data-absent-reason",
    "Encounter": "status class date subject patient type identifier participant practitioner service-provider reason-code",
    "Condition": "code subject patient clinical-status onset-date recorded-date category severity verification-status",
    "MedicationAdministration": "code status subject patient effective-time context performer medication",
    "ResearchStudy": "condition enrollment status title identifier date category keyword sponsor principalinvestigator",
    "ResearchSubject": "study individual patient status date identifier",
    "AdverseEvent": "study subject date event seriousness actuality category severity recorder",
    "Practitioner": "name family given identifier gender active address-city telecom email communication",
    "Organization": "name identifier type address-city partof active address",
    "RiskAssessment": "probability subject patient date status",
}


class QueryGen:
    """Builds query strategies over one oracle's corpus."""

    def __init__(self, oracle: Oracle) -> None:
        self.o = oracle
        self.reg = oracle.registry
        self.types = sorted(t for t, ids in oracle.resources.items() if ids)
        self._flat: dict[tuple[str, str], list[Typed]] = {}
        self._rows: dict[tuple[str, str], list[tuple[list[Typed], ...]]] = {}
        self._targets: dict[tuple[str, str], list[str]] = {}

    # -- parameter tables ----------------------------------------------------------------------

    def params(self, rtype: str) -> list[str]:
        return sorted(
            code for code, p in self.reg.for_type(rtype).items()
            if code not in UNSUPPORTED and p.type not in ("special",)
            and (p.type != "composite" or rtype == "Observation")
        )

    def flat(self, rtype: str, code: str) -> list[Typed]:
        key = (rtype, code)
        if key not in self._flat:
            vals = self.o.values(rtype, code)
            self._flat[key] = [tv for rid in sorted(vals) for tv in vals[rid]]
        return self._flat[key]

    def rows(self, rtype: str, code: str) -> list[tuple[list[Typed], ...]]:
        key = (rtype, code)
        if key not in self._rows:
            vals = self.o.composite_values(rtype, code)
            self._rows[key] = [row for rid in sorted(vals) for row in vals[rid]]
        return self._rows[key]

    def has_values(self, rtype: str, code: str) -> bool:
        p = self.reg.get(rtype, code)
        assert p is not None
        return bool(self.rows(rtype, code) if p.type == "composite" else self.flat(rtype, code))

    def populated(self, rtype: str) -> list[str]:
        return [c for c in self.params(rtype) if self.has_values(rtype, c)]

    def ref_params(self, rtype: str) -> list[str]:
        return [c for c in self.params(rtype) if self.reg.get(rtype, c).type == "reference"]  # type: ignore[union-attr]

    # -- whole queries -------------------------------------------------------------------------

    def query(self, draw: Any, rtype: str, kinds: dict[str, int] | None = None) -> list[tuple[str, str]]:
        kinds = kinds or {"simple": 8, "chain": 1, "has": 1}
        n = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 2, 2, 3]))
        pairs: list[tuple[str, str]] = []
        for _ in range(n):
            kind = draw(st.sampled_from([k for k, w in kinds.items() for _ in range(w)]))
            clause = self.clause(draw, rtype, kind)
            pairs.append(clause)
            if kind == "simple" and draw(st.integers(0, 9)) == 0:
                # AND of the same parameter (e.g. a date range)
                name = clause[0].split(":")[0]
                pairs.append(self.simple(draw, rtype, code=name))
        return pairs

    def clause(self, draw: Any, rtype: str, kind: str) -> tuple[str, str]:
        if kind == "chain":
            got = self.chain(draw, rtype, depth=0)
            if got:
                return got
        if kind == "has":
            got = self.has(draw, rtype, depth=0)
            if got:
                return got
        if kind == "study" and rtype in ("Observation", "MedicationAdministration"):
            return self.study(draw, rtype)
        return self.simple(draw, rtype)

    def study(self, draw: Any, rtype: str) -> tuple[str, str]:
        value = draw(st.sampled_from([
            "ResearchStudy/syn-study-1", "ResearchStudy/syn-study-2", "syn-study-1", "ResearchStudy/example",
            "ResearchStudy/syn-study-1,ResearchStudy/syn-study-2", "ResearchStudy/nope",
        ]))
        name = draw(st.sampled_from(["study", "patient._has:ResearchSubject:individual:study",
                                     "subject:Patient._has:ResearchSubject:individual:study"]))
        return name, value

    def ref_targets(self, rtype: str, code: str) -> list[str]:
        """Resource types the stored values of reference parameter ``code`` point to."""
        key = (rtype, code)
        if key not in self._targets:
            found = {ref[0] for tv in self.flat(rtype, code) if (ref := self.o.local_ref(tv)) and ref[0] in self.types}
            self._targets[key] = sorted(found)
        return self._targets[key]

    def weight(self, rtype: str, code: str) -> int:
        return 3 if code in CORE.get(rtype, "").split() else 1

    def chain(self, draw: Any, rtype: str, depth: int) -> tuple[str, str] | None:
        options = [
            (code, target)
            for code in self.ref_params(rtype)
            for target in self.ref_targets(rtype, code)
            for _ in range(self.weight(rtype, code))
        ]
        if not options:
            return None
        code, target = draw(st.sampled_from(options))
        p = self.reg.get(rtype, code)
        assert p is not None
        typed = len(p.target) != 1 or draw(st.integers(0, 4)) > 0
        head = f"{code}:{target}" if typed else code
        if depth == 0 and draw(st.integers(0, 3)) == 0:
            inner = self.chain(draw, target, depth + 1) or self.simple(draw, target)
        else:
            inner = self.simple(draw, target)
        return f"{head}.{inner[0]}", inner[1]

    def has(self, draw: Any, rtype: str, depth: int) -> tuple[str, str] | None:
        options = [
            (src, code)
            for src in self.types
            for code in self.ref_params(src)
            if rtype in self.ref_targets(src, code)
            for _ in range(self.weight(src, code))
        ]
        if not options:
            return None
        src, code = draw(st.sampled_from(options))
        r = draw(st.integers(0, 9))
        if r == 0 and depth == 0:
            inner = self.has(draw, src, depth + 1) or self.simple(draw, src)
        elif r == 1:
            inner = self.chain(draw, src, depth=1) or self.simple(draw, src)
        else:
            inner = self.simple(draw, src)
        return f"_has:{src}:{code}:{inner[0]}", inner[1]

    # -- one parameter -------------------------------------------------------------------------

    def simple(self, draw: Any, rtype: str, code: str | None = None) -> tuple[str, str]:
        if code is None:
            populated = self.populated(rtype)
            pool = populated if populated and draw(st.integers(0, 9)) > 0 else self.params(rtype)
            core = set(CORE.get(rtype, "").split())
            code = draw(st.sampled_from([c for c in pool for _ in range(3 if c in core else 1)]))
        p = self.reg.get(rtype, code)
        assert p is not None
        kind = p.type
        if code not in NO_MISSING and draw(st.integers(0, 19)) == 0:
            return f"{code}:missing", draw(st.sampled_from(["true", "false"]))
        if kind == "composite":
            return code, ",".join(self.composite_value(draw, rtype, code) for _ in range(self.n_or(draw)))
        modifier: str | None = None
        if kind == "token":
            coded = any(tv.type in ("CodeableConcept", "Coding") for tv in self.flat(rtype, code)[:50])
            modifier = draw(st.sampled_from([None] * 7 + ["not", "not"] + (["text"] if coded else [])))
        elif kind == "string":
            modifier = draw(st.sampled_from([None] * 5 + ["contains", "contains", "exact", "exact"]))
        elif kind == "uri":
            modifier = draw(st.sampled_from([None, None, "below", "above"]))
        elif kind == "reference":
            return self.reference_clause(draw, rtype, code)
        values = [self.value(draw, rtype, code, kind, modifier) for _ in range(self.n_or(draw))]
        name = f"{code}:{modifier}" if modifier else code
        return name, ",".join(values)

    def n_or(self, draw: Any) -> int:
        return draw(st.sampled_from([1, 1, 1, 1, 1, 1, 2, 2, 2, 3]))

    def pick(self, draw: Any, rtype: str, code: str) -> Typed | None:
        flat = self.flat(rtype, code)
        if not flat or draw(st.integers(0, 14)) == 0:
            return None
        return draw(st.sampled_from(flat))

    def value(self, draw: Any, rtype: str, code: str, kind: str, modifier: str | None) -> str:
        tv = self.pick(draw, rtype, code)
        if kind == "token":
            return self.token_value(draw, tv, modifier)
        if kind == "string":
            return self.string_value(draw, tv, modifier)
        if kind == "date":
            return self.date_value(draw, tv)
        if kind == "quantity":
            return self.quantity_value(draw, tv)
        if kind == "number":
            return self.number_value(draw, tv)
        if kind == "uri":
            return self.uri_value(draw, tv, modifier)
        raise AssertionError(kind)

    # -- token -----------------------------------------------------------------------------------

    def token_value(self, draw: Any, tv: Typed | None, modifier: str | None) -> str:
        if modifier == "text":
            texts = []
            if tv is not None and isinstance(tv.data, dict):
                d = tv.data
                texts = [d.get("text"), d.get("display")] + [c.get("display") for c in d.get("coding", []) if isinstance(c, dict)]
            texts = [t for t in texts if isinstance(t, str)]
            words = [w for t in texts for w in re.split(r"\W+", t) if w]
            if not words:
                return draw(st.sampled_from(["zzyzx", "protein", "blood"]))
            w = draw(st.sampled_from(words))
            k = draw(st.integers(1, len(w)))
            return esc(self.case(draw, w[:k]))
        if tv is None:
            return draw(st.sampled_from(["zz-no-such-code", "http://loinc.org|0000-0", "urn:nope|", "|nope", "male", "true", "final"]))
        d = tv.data
        if isinstance(d, bool):
            return "true" if d else "false"
        if not isinstance(d, dict):
            return esc(str(d))
        if tv.type in ("CodeableConcept", "Coding"):
            codings = d.get("coding", []) if tv.type == "CodeableConcept" else [d]
            codings = [c for c in codings if isinstance(c, dict) and c.get("code")]
            if not codings:
                return "zz-no-code"
            c = draw(st.sampled_from(codings))
            system, code = c.get("system"), c["code"]
        elif tv.type == "Identifier":
            system, code = d.get("system"), d.get("value")
            if code is None:
                return "zz-no-value"
        elif tv.type == "ContactPoint":
            return esc(d.get("value", "zz"))
        else:
            return "zz-unknown"
        if system:
            form = draw(st.sampled_from(["sys|code", "sys|code", "code", "sys|"]))
        else:
            form = draw(st.sampled_from(["code", "|code"]))
        return {"sys|code": f"{esc(system or '')}|{esc(code)}", "code": esc(code), "sys|": f"{esc(system or '')}|", "|code": f"|{esc(code)}"}[form]

    # -- string ----------------------------------------------------------------------------------

    def case(self, draw: Any, text: str) -> str:
        how = draw(st.sampled_from(["same", "same", "lower", "upper", "ascii"]))
        return {"same": text, "lower": text.lower(), "upper": text.upper(), "ascii": strip_accents(text)}[how]

    def string_value(self, draw: Any, tv: Typed | None, modifier: str | None) -> str:
        parts = [p for p in (string_parts(tv) if tv else []) if p.strip() and not set(p) & set("|$\\") and p == p.strip()]
        if not parts:
            return draw(st.sampled_from(["qqqzz", "Zz", "xyzzy"]))
        part = draw(st.sampled_from(parts))
        if modifier == "exact":
            return esc(part if draw(st.integers(0, 5)) else self.case(draw, part))
        if modifier == "contains":
            i = draw(st.integers(0, len(part) - 1))
            j = draw(st.integers(i + 1, len(part)))
            sub = part[i:j].strip() or part
            return esc(self.case(draw, sub))
        k = draw(st.integers(1, len(part)))
        sub = part[:k].strip() or part
        return esc(self.case(draw, sub))

    # -- date ------------------------------------------------------------------------------------

    def date_value(self, draw: Any, tv: Typed | None) -> str:
        prefix = draw(st.sampled_from(DATE_PREFIXES))
        strings: list[str] = []
        if tv is not None:
            if isinstance(tv.data, str):
                strings = [tv.data]
            elif isinstance(tv.data, dict):
                strings = [s for s in (tv.data.get("start"), tv.data.get("end")) if isinstance(s, str)]
                strings += [s for s in tv.data.get("event", []) if isinstance(s, str)]
        if not strings or draw(st.integers(0, 9)) == 0:
            y = draw(st.integers(1990, 2030))
            m = draw(st.integers(1, 12))
            day = draw(st.integers(1, 28))
            return prefix + draw(st.sampled_from([f"{y}", f"{y}-{m:02d}", f"{y}-{m:02d}-{day:02d}", f"{y}-{m:02d}-{day:02d}T12:00:00Z"]))
        s = draw(st.sampled_from(strings))
        options = ["year"]
        if len(s) >= 7:
            options.append("month")
        if len(s) >= 10:
            options += ["day", "day", "day-shift"]
        if "T" in s:
            options += ["full", "full", "retz", "retz", "second"]
        how = draw(st.sampled_from(options))
        if how == "year":
            out = s[:4]
        elif how == "month":
            out = s[:7]
        elif how == "day":
            out = s[:10]
        elif how == "day-shift":
            d = datetime.strptime(s[:10], "%Y-%m-%d") + timedelta(days=draw(st.sampled_from([-1, 1])))
            out = d.strftime("%Y-%m-%d")
        elif how == "full":
            out = s
        else:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            if how == "retz":
                offset = draw(st.sampled_from([0, 2, -5, 9, -12]))
                dt = dt.astimezone(timezone(timedelta(hours=offset)))
            out = dt.strftime("%Y-%m-%dT%H:%M:%S")
            off = dt.utcoffset() or timedelta(0)
            if off == timedelta(0) and draw(st.booleans()):
                out += "Z"
            else:
                total = int(off.total_seconds() // 60)
                sign = "+" if total >= 0 else "-"
                out += f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
        return prefix + out

    # -- quantity / number -----------------------------------------------------------------------

    def number_text(self, draw: Any, value: Any) -> str:
        raw = getattr(value, "raw", None) or str(value)
        d = Decimal(raw)
        how = draw(st.sampled_from(["same", "same", "same", "more", "less", "nudge"]))
        if how == "more":
            return dec_text(d.quantize(Decimal(1).scaleb(min(d.as_tuple().exponent, 0) - 1)))  # type: ignore[operator]
        if how == "less" and d.as_tuple().exponent < 0:  # type: ignore[operator]
            return dec_text(d.quantize(Decimal(1).scaleb(d.as_tuple().exponent + 1)))  # type: ignore[operator]
        if how == "nudge":
            return dec_text(d + draw(st.sampled_from([Decimal("0.1"), Decimal("-0.1"), Decimal(1), Decimal(-1)])))
        return raw

    def quantity_value(self, draw: Any, tv: Typed | None) -> str:
        if tv is None or not isinstance(tv.data, dict) or tv.data.get("value") is None:
            return draw(st.sampled_from([f"5|{UCUM}|kg", "gt100", f"lt1|{UCUM}|mg/dL", "12||mg/L", f"ap40|{UCUM}|mm/h"]))
        q = tv.data
        code, system, unit = q.get("code"), q.get("system"), q.get("unit")
        prefix = draw(st.sampled_from(NUMBER_PREFIXES if code not in OFFSET_UNITS else DATE_PREFIXES))
        number = self.number_text(draw, q["value"])
        forms = ["number"]
        if code:
            forms += ["||code"]
            if system:
                forms += ["full", "full", "full"]
        if unit:
            forms.append("||unit")
        if system == UCUM and code in MASS_CONC:
            forms += ["convert", "convert", "convert"]
        form = draw(st.sampled_from(forms))
        if form == "number":
            return f"{prefix}{number}"
        if form == "||code":
            return f"{prefix}{number}||{esc(code)}"
        if form == "||unit":
            return f"{prefix}{number}||{esc(unit)}"
        if form == "full":
            return f"{prefix}{number}|{esc(system)}|{esc(code)}"
        other = draw(st.sampled_from([u for u in MASS_CONC if u != code]))
        converted = Decimal(number) * MASS_CONC[code] / MASS_CONC[other]
        return f"{prefix}{dec_text(converted.normalize())}|{UCUM}|{other}"

    def number_value(self, draw: Any, tv: Typed | None) -> str:
        prefix = draw(st.sampled_from(NUMBER_PREFIXES))
        if tv is None or isinstance(tv.data, (dict, bool)):
            return f"{prefix}{draw(st.integers(0, 100))}"
        return prefix + self.number_text(draw, tv.data)

    # -- uri ---------------------------------------------------------------------------------------

    def uri_value(self, draw: Any, tv: Typed | None, modifier: str | None) -> str:
        if tv is None or not isinstance(tv.data, str):
            return draw(st.sampled_from(["http://nope.example.org", "urn:trialfhir", "http://trialfhir.org/fhir"]))
        s = tv.data
        if modifier == "below":
            cuts = [i for i, ch in enumerate(s) if ch in "/:#"] + [len(s)]
            return esc(s[: draw(st.sampled_from(cuts))] or s)
        if modifier == "above":
            return esc(draw(st.sampled_from([s, s + "/child", s + "#x", s[:-1] or s])))
        return esc(s)

    # -- reference ---------------------------------------------------------------------------------

    def reference_clause(self, draw: Any, rtype: str, code: str) -> tuple[str, str]:
        p = self.reg.get(rtype, code)
        assert p is not None
        with_identifier = [tv for tv in self.flat(rtype, code) if isinstance(tv.data, dict) and tv.data.get("identifier")]
        mode = draw(st.sampled_from(["plain"] * 6 + ["type", "type"] + (["identifier"] if with_identifier else [])))
        if mode == "identifier":
            tv = draw(st.sampled_from(with_identifier))
            ident = tv.data["identifier"]
            value = f"{esc(ident['system'])}|{esc(ident.get('value', ''))}" if ident.get("system") else esc(ident.get("value", "x"))
            return f"{code}:identifier", value
        if mode == "type":
            tv = self.pick(draw, rtype, code)
            local = self.o.local_ref(tv) if tv else None
            if local is None:
                t = draw(st.sampled_from(list(p.target) or ["Patient"]))
                return f"{code}:{t}", "does-not-exist"
            return f"{code}:{local[0]}", draw(st.sampled_from([local[1], f"{local[0]}/{local[1]}"]))
        return code, ",".join(self.reference_value(draw, rtype, code) for _ in range(self.n_or(draw)))

    def reference_value(self, draw: Any, rtype: str, code: str) -> str:
        tv = self.pick(draw, rtype, code)
        if tv is None:
            return draw(st.sampled_from(["Patient/does-not-exist", "nope", "Practitioner/example", "example"]))
        if isinstance(tv.data, str):
            return esc(tv.data)
        ref = tv.data.get("reference") if isinstance(tv.data, dict) else None
        if not isinstance(ref, str):
            return "no-reference"
        parsed = self.o.parse_ref(ref)
        if parsed is None:
            return esc(ref)
        t, i, _ = parsed
        return draw(st.sampled_from([f"{t}/{i}", f"{t}/{i}", i, f"{self.o.base}/{t}/{i}"]))

    # -- composite ---------------------------------------------------------------------------------

    def composite_value(self, draw: Any, rtype: str, code: str) -> str:
        ctypes = self.o.component_types(rtype, code)
        rows = self.rows(rtype, code)
        rows = [r for r in rows if all(r)]
        if not rows:
            return "$".join("zz" for _ in ctypes)
        row = draw(st.sampled_from(rows))
        if draw(st.integers(0, 4)) == 0:
            other = draw(st.sampled_from(rows))
            row = (row[0],) + tuple(other[1:])
        parts = []
        for ctype, comp in zip(ctypes, row):
            tv = draw(st.sampled_from(comp))
            if ctype == "token":
                v = self.token_value(draw, tv, None)
            elif ctype == "quantity":
                v = self.quantity_value(draw, tv)
            elif ctype == "date":
                v = self.date_value(draw, tv)
            elif ctype == "string":
                v = self.string_value(draw, tv, None)
            else:
                v = "zz"
            parts.append(v)
        return "$".join(parts)
