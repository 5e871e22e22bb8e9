"""The ``trialfhir`` command line: ``serve``, ``migrate`` and ``reindex``.

``trialfhir serve [--host 127.0.0.1] [--port 8000] [--workers N] [--demo]`` migrates the
database, then runs uvicorn. ``trialfhir migrate`` only migrates.
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    _migrate(settings)
    if args.demo:
        print("note: the demo study arrives with the domain API; serving an empty store", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trialfhir", description="FHIR R4 interoperability service for clinical trials")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (migrates the database first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="load the demo study if absent")
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=cmd_migrate)
    reindex = sub.add_parser("reindex", help="rebuild the search index (after adding SearchParameters)")
    reindex.add_argument("--quiet", action="store_true")
    reindex.set_defaults(func=cmd_reindex)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
