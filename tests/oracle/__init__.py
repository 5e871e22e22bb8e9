"""A brute-force reference evaluator for FHIR search, and the corpus it is checked on.

Nothing here imports the server's search implementation: values come from the official
FHIRPath expressions (fhirpathpy) and are matched in plain Python following
https://hl7.org/fhir/R4/search.html.
"""
