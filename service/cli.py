"""The ``trialfhir`` command line: ``serve``, ``migrate``, ``reindex``, ``export`` ….

``trialfhir serve [--host 127.0.0.1] [--port 8000] [--workers N] [--demo]`` migrates the
database, then runs uvicorn. ``trialfhir migrate`` only migrates.

Authorization (contract §1): ``TRIALFHIR_AUTH=smart`` (the default) or ``off``; ``off`` is
refused unless ``serve`` binds a loopback address; ``--demo`` on a loopback address implies
``off`` (unless ``TRIALFHIR_AUTH=smart`` is set explicitly).
``trialfhir clients add NAME --jwks-file F --scope "system/*.rs ..." [--study STUDY_ID ...]``
registers a SMART Backend Services client and prints its client_id; ``trialfhir clients
list`` shows them.
"""

from __future__ import annotations

import argparse
import os
import sys

from service.config import Settings


def _migrate(settings: Settings) -> None:
    from service.db.engine import make_engine
    from service.db.migrate import upgrade

    engine = make_engine(settings.database_url, pool_size=1)
    try:
        upgrade(engine)
        from service.derivation.service import publish_measures

        publish_measures(engine)  # MeasureReport.measure resolves before any derivation (contract §5)
    finally:
        engine.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _migrate(settings)
    print(f"database at {_redact(settings.database_url)} is up to date")
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def _serve_auth(args: argparse.Namespace) -> str | None:
    """The TRIALFHIR_AUTH the server runs with, or None after explaining a refusal."""
    from service.app import is_loopback

    explicit = os.environ.get("TRIALFHIR_AUTH", "").strip().lower()
    loopback = is_loopback(args.host)
    if args.demo and loopback and explicit != "smart":
        return "off"
    mode = explicit or "smart"
    if mode == "off" and not loopback:
        print(
            f"trialfhir serve: TRIALFHIR_AUTH=off is allowed only on a loopback address, not {args.host}. "
            "Bind 127.0.0.1 for local work, or keep authorization on and register clients with "
            "'trialfhir clients add NAME --jwks-file F --scope \"system/*.rs\"'.",
            file=sys.stderr,
        )
        return None
    return mode


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    mode = _serve_auth(args)
    if mode is None:
        return 2
    # Workers re-create the app from the environment: they get the mode and the bind address.
    os.environ["TRIALFHIR_AUTH"] = mode
    os.environ["TRIALFHIR_BIND_HOST"] = args.host
    settings = Settings.from_env()
    _migrate(settings)
    if args.demo:
        import time

        from service.domain.demo import STUDY_CODE, load_demo

        started = time.perf_counter()
        engine, service = _domain_service(settings)
        try:
            loaded = load_demo(service)
        finally:
            engine.dispose()
        took = time.perf_counter() - started
        print(f"demo study {STUDY_CODE} " + (f"loaded in {took:.2f} s" if loaded else "already present"), file=sys.stderr)
    # Workers re-create the app from the environment; migrations already ran once above.
    os.environ["TRIALFHIR_RUN_MIGRATIONS"] = "0"
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
    )
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from service.db.engine import make_engine
    from service.search.reindex import reindex

    settings = Settings.from_env()
    _migrate(settings)
    engine = make_engine(settings.database_url, pool_size=2)

    def progress(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\rreindex [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        count = reindex(engine, progress=None if args.quiet else progress)
    finally:
        engine.dispose()
    if not args.quiet:
        print(file=sys.stderr)
    print(f"reindexed {count} resources")
    return 0


def _domain_service(settings: Settings):  # type: ignore[no-untyped-def]
    """A DomainService straight on the database (no HTTP), for CLI commands."""
    from service.db.engine import make_engine
    from service.domain.service import DomainService
    from service.rest.service import FhirStore
    from service.transactions.service import BundleProcessor

    engine = make_engine(settings.database_url, pool_size=2)
    store = FhirStore(engine, max_retries=settings.max_retries)
    bundles = BundleProcessor(engine, max_retries=settings.max_retries, max_entries=max(settings.max_bundle_entries, 10_000))
    return engine, DomainService(engine, store, bundles, settings.base_url or "http://localhost:8000/fhir")


def _progress_bar(label: str):  # type: ignore[no-untyped-def]
    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


def cmd_import_csv(args: argparse.Namespace) -> int:
    import json

    from service.domain.csv_import import import_assessments_csv
    from service.fhir.outcome import FhirError

    settings = Settings.from_env()
    _migrate(settings)
    engine, service = _domain_service(settings)
    try:
        text = open(args.file, encoding="utf-8-sig").read()
        report = import_assessments_csv(service, args.study, text, dry_run=args.dry_run, partial=args.partial, progress=_progress_bar("import"))
    except FhirError as exc:
        print("\n".join(i.diagnostics for i in exc.issues), file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(file=sys.stderr)
    for problem in report["errors"]:
        where = f"row {problem['row']}" + (f", column {problem['column']}" if problem["column"] else "")
        print(f"{where}: {problem['reason']}", file=sys.stderr)
    summary = {k: report[k] for k in ("valid", "rows", "assessments", "written", "dry_run", "partial")}
    print(json.dumps(summary))
    return 0 if report["valid"] or (args.partial and report["written"]) else 1


def cmd_export(args: argparse.Namespace) -> int:
    """Bulk Data export from a server (see :mod:`service.bulk.client`)."""
    from pathlib import Path

    from service.bulk.client import ExportError, run_export

    types = [t.strip() for item in args.type or [] for t in item.split(",") if t.strip()]
    out = Path(args.out)
    try:
        manifest = run_export(
            args.base_url, out, types=types or None, since=args.since, group=args.group, patients=args.patients,
            type_filters=args.type_filter, keep=args.keep, quiet=args.quiet,
        )
    except ExportError as exc:
        print(f"trialfhir export: {exc}", file=sys.stderr)
        return 1
    count = sum(int(item.get("count") or 0) for item in manifest.get("output", []))
    print(f"exported {count} resources in {len(manifest.get('output', []))} files to {out} (transactionTime {manifest.get('transactionTime')})")
    return 0


def cmd_clients_add(args: argparse.Namespace) -> int:
    """Register a client; print its client_id (and nothing else on stdout)."""
    from service.auth.clients import RegistrationError, add_client
    from service.auth.jwks import JwksError, load_jwks_file
    from service.db.engine import make_engine

    settings = Settings.from_env()
    _migrate(settings)
    jwks = None
    if args.jwks_file:
        try:
            jwks = load_jwks_file(args.jwks_file)
        except (OSError, JwksError) as exc:
            print(f"trialfhir clients add: {exc}", file=sys.stderr)
            return 2
    scopes = " ".join(args.scope)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        client = add_client(engine, args.name, scopes=scopes, jwks=jwks, jwks_url=args.jwks_url, studies=args.study)
    except RegistrationError as exc:
        print(f"trialfhir clients add: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(client.client_id)
    bound = ", ".join(sorted(client.studies)) if client.studies is not None else "all studies"
    print(f"registered {client.name}: scopes '{client.scope_text}', {bound}", file=sys.stderr)
    return 0


def cmd_clients_list(args: argparse.Namespace) -> int:
    from service.auth.clients import list_clients
    from service.db.engine import make_engine

    settings = Settings.from_env()
    _migrate(settings)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        clients = list_clients(engine)
    finally:
        engine.dispose()
    for c in clients:
        keys = "jwks-url " + (c.jwks_url or "") if c.jwks_url else "jwks inline"
        studies = ",".join(sorted(c.studies)) if c.studies is not None else "*"
        print(f"{c.client_id}\t{c.name}\t{'active' if c.active else 'disabled'}\t{c.scope_text}\tstudies={studies}\t{keys}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialfhir", description="FHIR R4 interoperability service for clinical trials")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (migrates the database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="load the demo study if absent")
    serve.set_defaults(func=cmd_serve)
    clients = sub.add_parser("clients", help="SMART Backend Services clients (authorization)")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True)
    add = clients_sub.add_parser("add", help="register a client; prints its client_id")
    add.add_argument("name", help="a name for the client (shown in audit and listings)")
    keys = add.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks-file", help="the client's public keys (JWKS JSON; RS384 or ES384 keys with a kid)")
    keys.add_argument("--jwks-url", help="where the server fetches the client's JWKS")
    add.add_argument("--scope", action="append", required=True, help='scopes it may be granted, e.g. "system/*.rs system/Observation.cu"')
    add.add_argument("--study", nargs="+", action="extend", help="bind the client to these studies (ResearchStudy id or study code); default all")
    add.set_defaults(func=cmd_clients_add)
    lst = clients_sub.add_parser("list", help="list the registered clients")
    lst.set_defaults(func=cmd_clients_list)
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=cmd_migrate)
    imp = sub.add_parser("import-csv", help="import assessments from a CSV file (one row per subject x visit)")
    imp.add_argument("study", help="study code")
    imp.add_argument("file", help="CSV file: subject,visit,date,<measure [unit]>...")
    imp.add_argument("--dry-run", action="store_true", help="validate only")
    imp.add_argument("--partial", action="store_true", help="write the valid rows even if others are invalid")
    imp.set_defaults(func=cmd_import_csv)
    reindex = sub.add_parser("reindex", help="rebuild the search index (after adding SearchParameters)")
    reindex.add_argument("--quiet", action="store_true")
    reindex.set_defaults(func=cmd_reindex)
    exp = sub.add_parser("export", help="Bulk Data $export from a FHIR server into NDJSON files, with a progress bar")
    exp.add_argument("base_url", metavar="BASE_URL", help="FHIR base, e.g. http://127.0.0.1:8000/fhir")
    exp.add_argument("--type", action="append", help="resource types (comma-separated or repeated)")
    exp.add_argument("--since", help="only resources changed after this instant (e.g. a previous export's transactionTime)")
    exp.add_argument("--group", help="export one Group (a study's cohort) instead of the whole system")
    exp.add_argument("--patients", action="store_true", help="Patient-level export (all patients and their compartments)")
    exp.add_argument("--type-filter", action="append", help="_typeFilter, e.g. 'Observation?code=http://loinc.org|1988-5' (repeatable)")
    exp.add_argument("--out", default="export", help="output folder (default ./export)")
    exp.add_argument("--keep", action="store_true", help="do not DELETE the job on the server afterwards")
    exp.add_argument("--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
