"""Required value-set bindings: the official examples pass, bad codes are caught.

The examples come from ``hl7.fhir.r4.examples@4.0.1`` (material nobody here wrote),
so they are the yardstick for "never refuse something valid"; the negative cases
cover each place a required binding can hide: a resource's own elements, backbone
elements, datatypes, choice types, extensions, contained and Bundle entry resources,
and primitive arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.fhir.bindings import BindingIssue, check_required_bindings
from service.fhir.definitions.hl7_package import ensure_hl7_examples, example_files
from service.fhir.jsonio import loads

VS = "http://hl7.org/fhir/ValueSet/"

#: Official examples that genuinely violate a required binding, with the reason.
#: None do: all 5,306 files (including the 15 known structurally invalid ones) pass.
KNOWN_VIOLATIONS: dict[str, str] = {}


@pytest.fixture(scope="module")
def package_dir() -> Path:
    """The unpacked official R4 examples package (downloaded once, checksum-pinned)."""
    return ensure_hl7_examples()


def _only_issue(resource: dict[str, Any]) -> BindingIssue:
    issues = check_required_bindings(resource)
    assert len(issues) == 1, issues
    return issues[0]


def _assert_issue(resource: dict[str, Any], path: str, value_set: str) -> None:
    issue = _only_issue(resource)
    assert issue.path == path
    assert value_set in issue.message
    assert issue.message.startswith(f"{path}: ")


# --------------------------------------------------------------------------- examples


def test_every_official_example_passes(package_dir: Path) -> None:
    files = example_files(package_dir)
    assert len(files) == 5306
    failures: dict[str, list[str]] = {}
    for path in files:
        issues = check_required_bindings(loads(path.read_bytes()))
        if issues and path.name not in KNOWN_VIOLATIONS:
            failures[path.name] = [i.message for i in issues]
    assert failures == {}


def test_known_violations_still_violate(package_dir: Path) -> None:
    for name in KNOWN_VIOLATIONS:
        assert check_required_bindings(loads((package_dir / name).read_bytes()))


# --------------------------------------------------------------------------- negative


def test_observation_status() -> None:
    _assert_issue({"resourceType": "Observation", "status": "finalx"},
                  "Observation.status", VS + "observation-status")
    issue = _only_issue({"resourceType": "Observation", "status": "finalx"})
    assert '"finalx"' in issue.message and "registered, preliminary, final" in issue.message


def test_patient_gender() -> None:
    _assert_issue({"resourceType": "Patient", "gender": "robot"},
                  "Patient.gender", VS + "administrative-gender")


def test_quantity_comparator_in_value() -> None:
    obs = {"resourceType": "Observation", "status": "final",
           "valueQuantity": {"value": 1, "comparator": "<<"}}
    _assert_issue(obs, "Observation.valueQuantity.comparator", VS + "quantity-comparator")


def test_quantity_comparator_in_component() -> None:
    obs = {"resourceType": "Observation", "status": "final", "component": [
        {"code": {"text": "a"}, "valueQuantity": {"value": 1, "comparator": "<"}},
        {"code": {"text": "b"}, "valueQuantity": {"value": 2, "comparator": "<<"}},
    ]}
    _assert_issue(obs, "Observation.component[1].valueQuantity.comparator",
                  VS + "quantity-comparator")


def test_quantity_comparator_in_extension() -> None:
    obs = {"resourceType": "Observation", "status": "final", "extension": [
        {"url": "http://example.org/a", "valueString": "x"},
        {"url": "http://example.org/b", "valueQuantity": {"value": 1, "comparator": "<<"}},
    ]}
    _assert_issue(obs, "Observation.extension[1].valueQuantity.comparator",
                  VS + "quantity-comparator")


def test_extension_deep_inside_a_pruned_subtree() -> None:
    """Extensions are followed even below elements that carry no binding themselves."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "1-8", "extension": [
            {"url": "http://example.org/x", "valueIdentifier": {"use": "bogus"}}]}]}}
    _assert_issue(obs, "Observation.code.coding[0].extension[0].valueIdentifier.use",
                  VS + "identifier-use")


def test_extension_on_a_primitive() -> None:
    obs = {"resourceType": "Observation", "status": "final", "_status": {"extension": [
        {"url": "http://example.org/x", "valueQuantity": {"comparator": "<<"}}]}}
    _assert_issue(obs, "Observation.status.extension[0].valueQuantity.comparator",
                  VS + "quantity-comparator")


def test_narrative_status() -> None:
    obs = {"resourceType": "Observation", "status": "final",
           "text": {"status": "bogus", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"/>"}}
    _assert_issue(obs, "Observation.text.status", VS + "narrative-status")


def test_identifier_use() -> None:
    patient = {"resourceType": "Patient", "identifier": [
        {"use": "official", "value": "1"}, {"use": "bogus", "value": "2"}]}
    _assert_issue(patient, "Patient.identifier[1].use", VS + "identifier-use")


def test_contained_resource() -> None:
    report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
              "contained": [{"resourceType": "Observation", "id": "o1", "status": "bogus",
                             "code": {"text": "y"}}]}
    _assert_issue(report, "DiagnosticReport.contained[0].status", VS + "observation-status")


def test_bundle_entry_resource() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"}},
        {"resource": {"resourceType": "Observation", "status": "bogus", "code": {"text": "y"}}},
    ]}
    _assert_issue(bundle, "Bundle.entry[1].resource.status", VS + "observation-status")


def test_bundle_type() -> None:
    _assert_issue({"resourceType": "Bundle", "type": "bogus"}, "Bundle.type",
                  VS + "bundle-type")


def test_research_subject_status() -> None:
    subject = {"resourceType": "ResearchSubject", "status": "bogus",
               "study": {"reference": "ResearchStudy/1"},
               "individual": {"reference": "Patient/1"}}
    _assert_issue(subject, "ResearchSubject.status", VS + "research-subject-status")


def test_adverse_event_actuality() -> None:
    event = {"resourceType": "AdverseEvent", "actuality": "bogus",
             "subject": {"reference": "Patient/1"}}
    _assert_issue(event, "AdverseEvent.actuality", VS + "adverse-event-actuality")


def test_primitive_array_element() -> None:
    """AllergyIntolerance.category is a ``code`` list (0..*) with a required binding."""
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
               "category": ["food", "foodx"]}
    _assert_issue(allergy, "AllergyIntolerance.category[1]",
                  VS + "allergy-intolerance-category")


def test_codeable_concept_coding_from_the_value_set_system() -> None:
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
               "clinicalStatus": {"coding": [{
                   "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                   "code": "gone"}]}}
    _assert_issue(allergy, "AllergyIntolerance.clinicalStatus.coding[0].code",
                  VS + "allergyintolerance-clinical")


def test_several_issues_are_all_reported_in_path_order() -> None:
    obs = {"resourceType": "Observation", "status": "x", "component": [
        {"valueQuantity": {"comparator": "<<"}} for _ in range(11)]}
    paths = [i.path for i in check_required_bindings(obs)]
    assert paths == [f"Observation.component[{n}].valueQuantity.comparator"
                     for n in range(11)] + ["Observation.status"]


# --------------------------------------------------------------------------- positive


def test_valid_codes_pass() -> None:
    obs = {"resourceType": "Observation", "status": "final",
           "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"/>"},
           "identifier": [{"use": "official", "value": "1"}],
           "valueQuantity": {"value": 1, "comparator": ">="},
           "component": [{"valueQuantity": {"comparator": "<"}}],
           "extension": [{"url": "http://example.org/x", "valueQuantity": {"comparator": "<="}}]}
    assert check_required_bindings(obs) == []


def test_codeable_concept_with_text_only_or_other_system_passes() -> None:
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/1"},
               "clinicalStatus": {"text": "whatever"},
               "verificationStatus": {"coding": [{"system": "http://example.org/local",
                                                  "code": "not-in-the-value-set"}]}}
    assert check_required_bindings(allergy) == []


@pytest.mark.parametrize("resource", [
    None, [], "Observation", {}, {"resourceType": 5}, {"resourceType": "NoSuchType", "a": [[1]]},
    {"resourceType": "Observation", "status": 5, "component": "x", "valueQuantity": [1, None]},
    {"resourceType": "Bundle", "entry": [{"resource": "x"}, {"resource": {"resourceType": 1}}]},
    {"resourceType": "AllergyIntolerance", "category": [None, 3], "clinicalStatus": {
        "coding": [None, {"system": 1, "code": "x"}, {"system": "x"}]}},
])
def test_odd_shapes_never_raise(resource: Any) -> None:
    assert check_required_bindings(resource) == []


def test_deeply_nested_extensions_do_not_hit_the_recursion_limit() -> None:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueQuantity": {"comparator": "<<"}}
    for _ in range(3000):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    issue = _only_issue({"resourceType": "Patient", "extension": [ext]})
    assert issue.path.endswith(".extension[0].valueQuantity.comparator")
