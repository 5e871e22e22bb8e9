"""trialfhir: a FHIR R4 interoperability service for clinical trials."""

__version__ = "0.1.0"
