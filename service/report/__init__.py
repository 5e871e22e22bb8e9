"""The study report: one printable HTML page of a study's derived endpoints (issue 10).

Data flows one way, one module per step:

- :mod:`~service.report.router` — HTTP: ``GET /studies/{id}/report`` (the page) and
  ``GET /studies/{id}/report/{block}.csv`` (the numbers behind one block);
- :mod:`~service.report.service` — runs the derivation (the same
  :func:`service.derivation.service.derive` as ``$endpoints``) and turns it into the plain
  per-subject series of :mod:`~service.report.model`; the only step that touches storage;
- :mod:`~service.report.tables` — the numbers of every block as a :class:`~service.report.model.Table`
  (the page's table and the CSV are the same object, so they cannot disagree);
- :mod:`~service.report.charts` (on :mod:`~service.report.svg`) — inline SVG charts;
- :mod:`~service.report.page` — the blocks and the HTML page (template and CSS are package data).

Everything after the service is pure: no SQL, no HTTP, no clock.
"""
