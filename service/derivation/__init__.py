"""Derived study endpoints (contract §3–§5): from the stored inputs of a study to derived
Observations, MeasureReports and Measures.

Pipeline, one module per step:

- :mod:`~service.derivation.inputs` — load a study's data from the store in bulk
  (:mod:`~service.derivation.queries` holds the SQL) and read each input once: measure,
  value converted to the units the scores need (or set aside with the reason), date;
- :mod:`~service.derivation.visits` — contract §3: study day, visit windows, selection of
  one value per subject × visit × measure;
- :mod:`~service.derivation.engine` — contract §4: every output per subject × visit, with
  the inputs it used, using the pure functions of :mod:`service.endpoints`;
- :mod:`~service.derivation.summaries` and :mod:`~service.derivation.safety` — cohort
  summaries per visit and the adverse-event summary (contract §4);
- :mod:`~service.derivation.outputs` and :mod:`~service.derivation.reports` — the FHIR
  resources of contract §5 (derived Observations; MeasureReports and Measures);
- :mod:`~service.derivation.service` — run it for a study, store the outputs (idempotent;
  :mod:`~service.derivation.storing`: what changed, and the stored outputs no longer
  produced, which are deleted), publish the Measures at start-up, and render the Bundle,
  JSON and CSV; :mod:`~service.derivation.router` — the routes.
"""
