"""The FastAPI application: wiring only (settings → engine → store → routers).

Capabilities live in their own packages (``rest``, ``search``, ``capability``,
``health``); this module assembles them and owns nothing else.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from service import __version__, errors, hardening
from service.auth.middleware import AccessMiddleware
from service.auth.router import router as auth_router
from service.auth.tokens import TokenStore
from service.capability.router import router as capability_router
from service.bulk.router import router as bulk_router
from service.bulk.service import BulkExports
from service.bulk.settings import BulkSettings
from service.config import Settings
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.derivation.router import api_router as derivation_api_router
from service.derivation.service import publish_measures
from service.endpoints.units import ucum_registry
from service.derivation.router import fhir_router as derivation_fhir_router
from service.domain.router import router as domain_router
from service.health.router import router as health_router
from service.observability import RequestIdMiddleware, configure_logging
from service.report.router import router as report_router
from service.rest.router import hot_router as rest_hot_router
from service.rest.router import router as rest_router
from service.rest.service import FhirStore
from service.transactions.router import router as transaction_router
from service.transactions.service import BundleProcessor


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    import ipaddress

    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Contract §1: ``TRIALFHIR_AUTH=off`` is refused unless the server binds a loopback address."""
    if not settings.auth_enabled and settings.bind_host and not is_loopback(settings.bind_host):
        raise RuntimeError(
            f"TRIALFHIR_AUTH=off is allowed only on a loopback address, not {settings.bind_host}: "
            "bind 127.0.0.1 (or ::1), or keep authorization on (TRIALFHIR_AUTH=smart) and register clients "
            "with 'trialfhir clients add'."
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    check_bind(settings)
    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url, pool_size=settings.pool_size)
    if settings.run_migrations:
        upgrade(engine)
        publish_measures(engine)  # MeasureReport.measure resolves before any derivation (contract §5)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.bulk.start()  # the background export worker of this process
        # UCUM tables take ≈1.5 s to build: load them now, not in the first $endpoints or
        # report request (which took 2.4 s on a fresh server instead of 0.1 s)
        threading.Thread(target=ucum_registry, name="ucum-warm-up", daemon=True).start()
        yield
        app.state.bulk.stop()
        engine.dispose()

    app = FastAPI(
        title="trialfhir",
        version=__version__,
        summary="FHIR R4 interoperability service for clinical trials",
        description="FHIR R4 (4.0.1) REST API under /fhir; the trial domain API under /api.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = FhirStore(engine, max_retries=settings.max_retries)
    app.state.bulk = BulkExports(engine, BulkSettings.from_settings(settings))
    app.state.bundles = BundleProcessor(engine, max_retries=settings.max_retries, max_entries=settings.max_bundle_entries)
    app.state.tokens = TokenStore(engine, settings.token_lifetime_seconds)
    errors.install(app)
    hardening.install_statement_timeout(engine, settings.request_timeout_seconds)
    # Outermost last: request id → security headers/body timeout (→ CORS) → rights and audit → routes.
    app.add_middleware(AccessMiddleware, settings=settings, engine=engine)
    hardening.install(app, settings)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health_router)
    app.include_router(rest_hot_router)  # typed read/search/create first: see service.rest.router.hot_router
    app.include_router(auth_router)
    app.include_router(capability_router)
    app.include_router(transaction_router)
    app.include_router(domain_router)
    app.include_router(bulk_router)  # before rest_router: /fhir/Patient/$export is not a read
    app.include_router(derivation_api_router)
    app.include_router(derivation_fhir_router)  # before rest_router: /fhir/ResearchStudy/{id}/$endpoints
    app.include_router(report_router)
    app.include_router(rest_router)
    return app
