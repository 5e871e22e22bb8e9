"""The study report (issue 10): ``GET /studies/{id}/report`` and its CSVs, on SQLite and PostgreSQL.

In-process (``client`` fixture, a clean store per test):
- the demo study's page: every block has an accessible chart or table, a CSV link whose CSV
  is exactly the table on the page, no external resource; and every number equals what
  ``$endpoints`` (and its JSON form) returns — :func:`check_against_endpoints`;
- gaps show: a deleted input breaks the trajectory line and is "missing" in the grid, a
  value in an unusable unit is "set aside" and named in the notes;
- the study's own DAS28-CRP cut-points shade the bands; an empty study renders;
- unknown study or block → 404 problem+json; with authorization on, a token is needed.

In headless Chromium against a live server (``trialfhir serve``) with the demo loaded: the
page renders (screenshot), ACR20 at W16 shows 4/6, every subject has a trajectory in every
trajectory chart, no console error, every chart has a text alternative, every CSV link
downloads a CSV equal to the page's table and to ``$endpoints``, and the print layout keeps
each chart on one A4 page. Without Chromium the browser test is skipped with the reason,
except under CI=true, where it fails (as for PostgreSQL in conftest.py).
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from conftest import IN_CI, LiveServer, start_server
from mappers import ids
from service.domain import demo
from service.endpoints import categories
from service.report.charts import trajectory_chart
from service.report.model import Trajectory, VisitInfo
from service.report.service import das28_bands, inclusive_bands

STUDY = demo.STUDY_CODE
SID = ids.study_id(STUDY)
SUBJECTS = sorted(demo.BASELINES)
PAGE = f"/studies/{STUDY}/report"
TRAJECTORIES = ("das28-esr", "das28-crp", "sdai", "cdai", "pain")
BLOCKS = (
    *TRAJECTORIES, "acr-response", "swimmer", "esr-change", "crp-change", "il10-change", "il17a-change",
    "tnf-alpha-change", "treg-th17-ratio-change", "completeness", "safety-summary", "adverse-events",
)
VISITS = [v for v, _ in demo.VISITS]
#: biomarker block → (measure key in the /api JSON inputs, the key of the value in the report's unit)
BIOMARKER_INPUTS = {
    "esr-change": ("esr", "mm_h"), "crp-change": ("crp", "mg_l"), "il10-change": ("il10", "pg_ml"),
    "il17a-change": ("il17a", "pg_ml"), "tnf-alpha-change": ("tnf_alpha", "pg_ml"),
}
COMPLETENESS_KEYS = ("tjc28", "sjc28", "ptga", "ega", "pain", "haq_di", "esr", "crp", "il10", "tnf_alpha", "il17a", "treg_pct", "th17_pct")


# ---------------------------------------------------------------------------------------------
# reading the page and the CSVs
# ---------------------------------------------------------------------------------------------


class PageDom(HTMLParser):
    """What the tests read from the HTML: tables, CSV links, charts, series paths, grid cells."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.csv_links: dict[str, str] = {}
        self.svgs: dict[str, dict[str, str]] = {}
        self.figures_with_caption = 0
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self.series_paths: dict[tuple[str, str], str] = {}
        self.grid: dict[tuple[str, str, str], str] = {}
        self.notes: list[str] = []
        self.rate_labels: dict[tuple[str, str], str] = {}
        self._table: Optional[str] = None
        self._head = False
        self._row: Optional[list[str]] = None
        self._cell: Optional[list[str]] = None
        self._svg: Optional[str] = None
        self._svg_title: Optional[list[str]] = None
        self._series: Optional[str] = None
        self._grid_row: Optional[tuple[str, str]] = None
        self._rate: Optional[tuple[str, str]] = None
        self._bar_label: Optional[list[str]] = None
        self._note: Optional[list[str]] = None
        self._in_notes = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.refs.extend(a[k] for k in ("src", "href") if k in a)
        if tag == "table" and "data-block" in a:
            self._table = a["data-block"]
            self.tables[self._table] = []
        elif tag == "thead":
            self._head = True
        elif tag == "tbody":
            self._head = False
        elif tag == "tr" and self._table is not None and not self._head:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "a" and "data-csv" in a:
            self.csv_links[a["data-csv"]] = a["href"]
        elif tag == "svg":
            self._svg = a.get("id", "")
            self.svgs[self._svg] = {"role": a.get("role", ""), "aria-label": a.get("aria-label", ""), "title": ""}
        elif tag == "title" and self._svg is not None and self._series is None and self._grid_row is None and self._rate is None and not self.svgs[self._svg]["title"]:
            self._svg_title = []
        elif tag == "g" and a.get("class") == "series":
            self._series = a["data-subject"]
        elif tag == "path" and self._series is not None and self._svg is not None and a.get("class") == "trace":
            self.series_paths[(self._svg, self._series)] = a.get("d", "")
        elif tag == "g" and a.get("class") == "grid-row":
            self._grid_row = (a["data-subject"], a["data-visit"])
        elif tag == "rect" and self._grid_row is not None and "data-measure" in a:
            self.grid[(*self._grid_row, a["data-measure"])] = a["data-state"]
        elif tag == "g" and a.get("class") == "rate":
            self._rate = (a["data-endpoint"], a["data-visit"])
        elif tag == "text" and self._rate is not None and a.get("class") == "bar-label":
            self._bar_label = []
        elif tag == "section" and a.get("class") == "notes":
            self._in_notes = True
        elif tag == "li" and self._in_notes:
            self._note = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "figcaption":
            self.figures_with_caption += 1
        elif tag == "title" and self._svg_title is not None and self._svg is not None:
            self.svgs[self._svg]["title"] = "".join(self._svg_title)
            self._svg_title = None
        elif tag == "svg":
            self._svg = None
        elif tag == "g":
            self._series = self._grid_row = self._rate = None
        elif tag == "text" and self._bar_label is not None and self._rate is not None:
            self.rate_labels[self._rate] = "".join(self._bar_label)
            self._bar_label = None
        elif tag == "li" and self._note is not None:
            self.notes.append("".join(self._note))
            self._note = None
        elif tag == "section":
            self._in_notes = False

    def handle_data(self, data: str) -> None:
        for buffer in (self._cell, self._svg_title, self._bar_label, self._note):
            if buffer is not None:
                buffer.append(data)


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


def by_header(rows: list[list[str]]) -> list[dict[str, str]]:
    header, *body = rows
    return [dict(zip(header, row)) for row in body]


def check_against_endpoints(csvs: dict[str, list[list[str]]], bundle: dict[str, Any], api: dict[str, Any]) -> None:
    """Every number of every block's CSV equals what ``$endpoints`` (Bundle) and its JSON form return."""
    observations: dict[tuple[str, str, str], Decimal] = {}
    reports: dict[tuple[str, Optional[str]], dict[str, Any]] = {}
    for entry in bundle["entry"]:
        r = entry["resource"]
        visit = next((x["valueString"] for x in r.get("extension", []) if x["url"].endswith("/study-visit")), None)
        if r["resourceType"] == "Observation" and "valueQuantity" in r:
            _, subject, visit_name, code = r["identifier"][0]["value"].split("|")
            observations[(subject, visit_name, code)] = dec(r["valueQuantity"]["value"])
        elif r["resourceType"] == "MeasureReport":
            reports[(r["measure"].rsplit("/", 1)[1], visit)] = r
    inputs = {(s["subject"], v["visit"]): v["inputs"] for s in api["subjects"] for v in s["visits"]}
    outputs = {(s["subject"], v["visit"]): v["outputs"] for s in api["subjects"] for v in s["visits"]}

    for code in ("das28-esr", "das28-crp", "sdai", "cdai"):
        for row in by_header(csvs[code]):
            for visit in VISITS:
                expected = observations.get((row["subject"], visit, code))
                assert (dec(row[visit]) if row[visit] else None) == expected, (code, row["subject"], visit)
    for row in by_header(csvs["pain"]):
        for visit in VISITS[1:]:
            change = observations.get((row["subject"], visit, "pain-change"))
            shown = dec(row[visit]) - dec(row["BL"]) if row[visit] and row["BL"] else None
            assert shown == change, ("pain", row["subject"], visit)

    for row in by_header(csvs["acr-response"]):
        report = reports[(row["endpoint"].lower(), row["visit"])]
        observed, nri = report["group"]
        for group, count_key, proportion, lower, upper in (
            (observed, "evaluable", "proportion", "ci95_lower", "ci95_upper"),
            (nri, "cohort", "proportion_nri", "ci95_nri_lower", "ci95_nri_upper"),
        ):
            counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
            assert int(row["responders"]) == counts["numerator"]
            assert int(row[count_key]) == counts["denominator"]
            assert (dec(row[proportion]) if row[proportion] else None) == (dec(group["measureScore"]["value"]) if "measureScore" in group else None)
            ci = next((x["valueRange"] for x in group.get("extension", []) if x["url"].endswith("confidence-interval-95")), None)
            assert (dec(row[lower]), dec(row[upper])) == (dec(ci["low"]["value"]), dec(ci["high"]["value"]))

    safety = reports[("safety", None)]
    counts = {g["code"]["coding"][0]["code"]: int(g["measureScore"]["value"]) for g in safety["group"]}
    assert {row["stratum"]: int(row["count"]) for row in by_header(csvs["safety-summary"])} == counts
    events = api["safety"]["events"]
    assert [(r["subject"], r["term"], r["severity"], r["grade"]) for r in by_header(csvs["adverse-events"])] == [
        (e["subject"], e["term"], e["severity"] or "", "" if e["grade"] is None else str(e["grade"])) for e in events
    ]

    for block, (measure, key) in BIOMARKER_INPUTS.items():
        for row in by_header(csvs[block]):
            def value(visit: str) -> Optional[Decimal]:
                found = inputs[(row["subject"], visit)].get(measure)
                return dec(found["values"][key]) if found else None

            baseline = value("BL")
            assert (dec(row["baseline"]) if row["baseline"] else None) == baseline, (block, row["subject"])
            for visit in VISITS[1:]:
                now = value(visit)
                expected = now - baseline if now is not None and baseline is not None else None
                assert (dec(row[f"change_{visit}"]) if row[f"change_{visit}"] else None) == expected, (block, row["subject"], visit)
    for row in by_header(csvs["treg-th17-ratio-change"]):
        assert dec(row["baseline"]) == observations[(row["subject"], "BL", "treg-th17-ratio")]
        base = dec(outputs[(row["subject"], "BL")]["treg-th17-ratio"]["unrounded"])
        for visit in VISITS[1:]:
            now = dec(outputs[(row["subject"], visit)]["treg-th17-ratio"]["unrounded"])
            assert dec(row[f"change_{visit}"]) == (now - base).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    for row in by_header(csvs["completeness"]):
        got = inputs[(row["subject"], row["visit"])]
        for key in COMPLETENESS_KEYS:
            present = key in got or (key == "haq_di" and "haq_di_qr" in got)
            assert (row[key] == "present") == present, (row["subject"], row["visit"], key)

    day0 = {s["subject"]: s["day0"] for s in api["subjects"]}
    swimmer = by_header(csvs["swimmer"])
    for subject in day0:
        infusions = [int(r["study_day"]) for r in swimmer if r["subject"] == subject and r["event"] == "infusion"]
        assert infusions == [0, 28, 56], subject  # demo: infusions at weeks 0, 4 and 8 (contract §6)
    from datetime import date

    aes = sorted((r["subject"], int(r["study_day"])) for r in swimmer if r["event"] == "adverse-event")
    assert aes == sorted((e["subject"], (date.fromisoformat(e["onset"][:10]) - date.fromisoformat(day0[e["subject"]])).days) for e in events)


# ---------------------------------------------------------------------------------------------
# pure rendering
# ---------------------------------------------------------------------------------------------


def _band_of(value: Decimal, bands: Any) -> str:
    for band in bands:
        if band.upper is None or value < band.upper or (band.upper_inclusive and value == band.upper):
            return str(band.category)
    raise AssertionError("no band")


@pytest.mark.parametrize(
    ("bands", "classify"),
    [
        (das28_bands(categories.DAS28_DEFAULT), categories.das28_activity),
        (das28_bands(categories.DAS28_CRP_FLEISCHMANN), lambda v: categories.das28_activity(v, categories.DAS28_CRP_FLEISCHMANN)),
        (inclusive_bands(categories.SDAI_CUTPOINTS), categories.sdai_activity),
        (inclusive_bands(categories.CDAI_CUTPOINTS), categories.cdai_activity),
    ],
)
def test_shaded_bands_are_the_categories_the_derivation_assigns(bands: Any, classify: Any) -> None:
    # every value on a 0.05 grid (cut-points included) falls in the band of its own category
    for step in range(0, 800):
        value = Decimal(step) / 20
        assert _band_of(value, bands) == classify(value).value, value


def test_chart_text_is_escaped_and_gaps_break_the_line() -> None:
    visits = (VisitInfo("BL", 0), VisitInfo("W4", 28), VisitInfo("W8", 56))
    t = Trajectory("cdai", "CDAI", "score", inclusive_bands(categories.CDAI_CUTPOINTS), None,
                   {"<b>S1</b>": (Decimal("30"), None, Decimal("12.5"))}, {"<b>S1</b>": ("high", None, "moderate")}, "test")
    svg = trajectory_chart(t, visits)
    assert "<b>" not in svg and "&lt;b&gt;S1&lt;/b&gt;" in svg
    dom = PageDom(svg)
    assert dom.series_paths[("chart-cdai", "<b>S1</b>")].count("M") == 2  # two one-point segments, no line across the gap
    assert "moderate" in svg and "1 visit(s) without a value" in dom.svgs["chart-cdai"]["aria-label"]


# ---------------------------------------------------------------------------------------------
# in-process, both backends
# ---------------------------------------------------------------------------------------------


def _domain(client: Any) -> Any:
    from service.domain.service import DomainService

    state = client.app.state
    return DomainService(state.store.engine, state.store, state.bundles, "http://testserver/fhir")


@pytest.fixture()
def demo_client(client: Any) -> Any:
    demo.load_demo(_domain(client))
    return client


def _fetch_all(client: Any, dom: PageDom) -> dict[str, list[list[str]]]:
    csvs = {}
    for block, href in dom.csv_links.items():
        r = client.get(f"/studies/{STUDY}/{href}")  # the href is relative to the page
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), (block, r.status_code)
        assert f'filename="{STUDY}-{block}.csv"' in r.headers["content-disposition"]
        csvs[block] = parse_csv(r.text)
    return csvs


def _endpoints(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = client.get(f"/fhir/ResearchStudy/{SID}/$endpoints")
    api = client.get(f"/api/studies/{STUDY}/endpoints")
    assert bundle.status_code == 200 and api.status_code == 200
    return json.loads(bundle.text, parse_float=Decimal), json.loads(api.text, parse_float=Decimal)


def test_demo_page_blocks_tables_csvs_and_endpoints_agree(demo_client: Any) -> None:
    r = demo_client.get(PAGE)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    dom = PageDom(r.text)
    assert tuple(dom.csv_links) == BLOCKS and tuple(dom.tables) == BLOCKS
    # self-contained: no script, every link a same-page anchor, a relative link or data:
    assert "script" not in dom.tags and "img" not in dom.tags
    assert all(ref.startswith(("#", "report/", "../../", "data:")) for ref in dom.refs), dom.refs
    # accessible: every chart is an image with a text alternative, inside a captioned figure
    charts = [k for k in dom.svgs if k.startswith("chart-")]
    assert len(charts) == len(BLOCKS) - 2 and dom.figures_with_caption == len(charts)  # the two safety blocks are tables
    for key in charts:
        assert dom.svgs[key]["role"] == "img" and len(dom.svgs[key]["aria-label"]) > 40 and dom.svgs[key]["title"], key
    assert dom.rate_labels[("acr20", "W16")] == "4/6"
    acr = {(row[0], row[1]): row for row in dom.tables["acr-response"]}
    assert acr[("W16", "ACR20")][2:5] == ["4", "6", "6"]
    for code in TRAJECTORIES:
        assert [row[0] for row in dom.tables[code]] == SUBJECTS
        for subject in SUBJECTS:
            assert dom.series_paths[(f"chart-{code}", subject)].count("L") == len(VISITS) - 1, (code, subject)  # one unbroken line
    csvs = _fetch_all(demo_client, dom)
    for block in BLOCKS:
        assert csvs[block][1:] == dom.tables[block], block
    check_against_endpoints(csvs, *_endpoints(demo_client))


def test_gaps_and_set_aside_values_are_visible(demo_client: Any) -> None:
    crp = f"{SID}-s03-w12-crp"
    assert demo_client.delete(f"/fhir/Observation/{crp}").status_code in (200, 204)
    esr = demo_client.get(f"/fhir/Observation/{SID}-s02-w8-esr").json()
    esr["valueQuantity"].update(unit="mg", code="mg")  # a mass is not a rate: set aside (contract §2)
    assert demo_client.put(f"/fhir/Observation/{esr['id']}", json=esr).status_code == 200
    dom = PageDom(demo_client.get(PAGE).text)
    w12 = VISITS.index("W12")
    rows = {code: {row[0]: row for row in dom.tables[code]} for code in TRAJECTORIES}
    assert rows["das28-crp"]["S03"][1 + w12] == "" and rows["sdai"]["S03"][1 + w12] == ""
    assert rows["das28-esr"]["S03"][1 + w12] != "" and rows["das28-esr"]["S02"][1 + VISITS.index("W8")] == ""
    assert dom.series_paths[("chart-das28-crp", "S03")].count("M") == 2  # the line breaks at the gap
    assert dom.grid[("S03", "W12", "crp")] == "missing" and dom.grid[("S02", "W8", "esr")] == "set aside"
    assert dom.grid[("S03", "W12", "esr")] == "present"
    assert any(f"Observation/{esr['id']}" in note for note in dom.notes)
    check_against_endpoints(_fetch_all(demo_client, dom), *_endpoints(demo_client))


def test_study_settings_choose_the_bands_and_an_empty_study_renders(client: Any) -> None:
    study = {"code": "REPORT-EMPTY", "title": "A study without subjects", "phase": "phase-1",
             "settings": {"das28_crp_cut_points": {"remission": "2.4", "low": "2.9", "moderate": "4.6"}}}
    assert client.post("/api/studies", json=study).status_code in (200, 201)
    r = client.get("/studies/REPORT-EMPTY/report")
    assert r.status_code == 200
    dom = PageDom(r.text)
    assert "remission < 2.4, low ≤ 2.9, moderate ≤ 4.6, high > 4.6" in dom.svgs["chart-das28-crp"]["aria-label"]
    assert "remission < 2.6, low ≤ 3.2, moderate ≤ 5.1, high > 5.1" in dom.svgs["chart-das28-esr"]["aria-label"]
    assert "remission ≤ 3.3, low ≤ 11, moderate ≤ 26, high > 26" in dom.svgs["chart-sdai"]["aria-label"]
    assert dom.tables["das28-esr"] == [["No data."]]
    assert all(row[3] == "0" and row[5] == "" for row in dom.tables["acr-response"])  # nobody evaluable: no proportion
    assert client.get("/studies/REPORT-EMPTY/report/das28-esr.csv").text == "subject,BL,W4,W8,W12,W16,W24\n"


def test_unknown_study_or_block_is_a_404_problem(demo_client: Any) -> None:
    for path in ("/studies/NO-SUCH-STUDY/report", "/studies/NO-SUCH-STUDY/report/sdai.csv"):
        r = demo_client.get(path)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert "no study 'NO-SUCH-STUDY'" in r.json()["detail"]
    r = demo_client.get(f"{PAGE}/nope.csv")
    assert r.status_code == 404 and "blocks: das28-esr" in r.json()["detail"]


def test_with_authorization_on_the_report_needs_a_token(database_url: str, demo_client: Any) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    secured = create_app(Settings.from_env(database_url=database_url, auth="smart"))
    with TestClient(secured) as c:
        for path in (PAGE, f"{PAGE}/sdai.csv"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
    secured.state.store.engine.dispose()


# ---------------------------------------------------------------------------------------------
# headless Chromium against a live server
# ---------------------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} — CI must run the report's browser test")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver) — checked before any server starts; skip or fail (CI) when missing."""
    if importlib.util.find_spec("selenium") is None:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    return binary, driver_path  # type: ignore[return-value]


@pytest.fixture(scope="module")
def report_server(browser_binaries: tuple[str, str], backend: str, databases: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server on its own database with the demo study loaded."""
    from service.cli import _domain_service
    from service.config import Settings

    server = start_server(databases.url(backend, "report"), tmp_path_factory.mktemp("report-live"))  # migrates at start-up
    engine, service = _domain_service(Settings.from_env(database_url=server.database_url))
    try:
        assert demo.load_demo(service) is True
    finally:
        engine.dispose()
    yield server
    server.stop()


@pytest.fixture()
def chromium(browser_binaries: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    """Headless Debian Chromium through its matching chromedriver (no browser download);
    a fresh profile per test, downloads into ``tmp_path/downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_binaries
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", "--window-size=1280,1800"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "profile.default_content_setting_values.automatic_downloads": 1,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.downloads = downloads  # type: ignore[attr-defined]
    yield driver
    driver.quit()


def _png_is_a_picture(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (width, height)
    pixels, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            pixels += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    assert len(set(zlib.decompress(pixels))) > 64  # many distinct byte values: charts, not a blank page


_DOM_SCRIPT = """
const q = (s, el = document) => Array.from(el.querySelectorAll(s));
const tables = {};
for (const t of q('table.numbers')) tables[t.dataset.block] = q('tbody tr', t).map(tr => q('th, td', tr).map(c => c.textContent));
const series = {};
for (const g of q('svg.chart g.series')) {
  const box = g.querySelector('path.trace').getBBox();
  series[g.closest('svg').id + '|' + g.dataset.subject] = {points: q('circle.point', g).length, width: box.width};
}
const charts = q('svg.chart').map(s => ({id: s.id, role: s.getAttribute('role'), label: s.getAttribute('aria-label') || '',
  title: (s.querySelector(':scope > title') || {}).textContent || '', caption: !!s.closest('figure').querySelector('figcaption'),
  csv: !!s.closest('section').querySelector('a[data-csv]'), width: s.getBoundingClientRect().width}));
const label = document.querySelector('g.rate[data-endpoint="acr20"][data-visit="W16"] text.bar-label');
return {tables, series, charts, acr20w16: label && label.textContent,
        links: q('a[data-csv]').map(a => [a.dataset.csv, a.getAttribute('download')])};
"""


def test_report_in_headless_chromium(report_server: LiveServer, chromium: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    chromium.get(report_server.url + PAGE)
    shot = tmp_path / "report.png"
    assert chromium.save_screenshot(str(shot))
    size = chromium.execute_script("return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]")
    _png_is_a_picture(shot, int(size[0]), int(size[1]))

    dom = chromium.execute_script(_DOM_SCRIPT)
    assert dom["acr20w16"] == "4/6"
    for code in TRAJECTORIES:
        for subject in SUBJECTS:
            line = dom["series"][f"chart-{code}|{subject}"]
            assert line["points"] == len(VISITS) and line["width"] > 100, (code, subject, line)  # drawn across the visits
    assert len(dom["charts"]) == len(BLOCKS) - 2
    for chart in dom["charts"]:
        assert chart["role"] == "img" and chart["label"] and chart["title"] and chart["caption"] and chart["csv"], chart["id"]
    assert [block for block, _ in dom["links"]] == list(BLOCKS)
    assert all(name == f"{STUDY}-{block}.csv" for block, name in dom["links"])

    # every CSV link downloads (a real click) a CSV equal to the table under its chart
    csvs = {}
    for block, name in dom["links"]:
        link = chromium.find_element(By.CSS_SELECTOR, f'a[data-csv="{block}"]')
        chromium.execute_script("arguments[0].scrollIntoView()", link)
        link.click()
        downloaded = chromium.downloads / name
        deadline = time.monotonic() + 30
        while not downloaded.exists() and time.monotonic() < deadline:  # Chrome renames the .crdownload when done
            time.sleep(0.1)
        assert downloaded.exists(), f"clicking the CSV link of {block} downloaded nothing"
        csvs[block] = parse_csv(downloaded.read_text(encoding="utf-8"))
    for block in BLOCKS:
        assert csvs[block][1:] == dom["tables"][block], block
    bundle = httpx.get(f"{report_server.base}/ResearchStudy/{SID}/$endpoints", timeout=60)
    api = httpx.get(f"{report_server.url}/api/studies/{STUDY}/endpoints", timeout=60)
    check_against_endpoints(csvs, json.loads(bundle.text, parse_float=Decimal), json.loads(api.text, parse_float=Decimal))

    # print: A4, each block kept whole, each chart fits one page
    chromium.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    chromium.set_window_size(794, 1123)  # A4 at 96 px/in
    printed = chromium.execute_script("""
      const b = document.querySelector('section.block');
      return {breakInside: getComputedStyle(b).breakInside, nav: getComputedStyle(document.querySelector('nav')).display,
              figures: Array.from(document.querySelectorAll('figure')).map(f => f.getBoundingClientRect().height)};
    """)
    assert printed["breakInside"] == "avoid" and printed["nav"] == "none"
    assert max(printed["figures"]) < 1123 - 2 * 46  # under an A4 page less its 12 mm margins
    pdf = chromium.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True})
    document = base64.b64decode(pdf["data"])
    (tmp_path / "report.pdf").write_bytes(document)
    assert document[:5] == b"%PDF-" and b"/MediaBox [0 0 594.95996 841.91998]" in document  # A4 from the page's @page rule

    errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
