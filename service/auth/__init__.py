"""Authorization: SMART App Launch v2 Backend Services, scopes, per-study access, audit.

- :mod:`.scopes` — SMART v1/v2 scope grammar (``system/Observation.cruds``, ``system/*.rs``,
  ``system/Patient.read``) and what each interaction needs;
- :mod:`.access` — the caller's rights for the current request (:class:`.access.Access`,
  held in a context variable that the service layer consults for every interaction);
- :mod:`.studies` — per-study visibility (ResearchSubject.study → Patient → compartment,
  plus the studies' own resources), as SQL conditions the search, read, write and export
  paths all apply;
- :mod:`.jwks`, :mod:`.clients`, :mod:`.assertion`, :mod:`.tokens` — client registration,
  ``private_key_jwt`` client assertions (RS384/ES384, ``jti`` replay) and access tokens;
- :mod:`.router` — ``POST /fhir/auth/token`` and ``GET /fhir/.well-known/smart-configuration``;
- :mod:`.policy`, :mod:`.bundles` — the checks the service layer calls for every interaction;
- :mod:`.audit` — one AuditEvent per request, in the same transaction as the change;
- :mod:`.middleware` — fail-closed defaults per request, audit of the outcome.
"""
