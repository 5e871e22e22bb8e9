"""The FastAPI application: wiring only (settings → engine → store → routers).

Capabilities live in their own packages (``rest``, ``search``, ``capability``,
``health``); this module assembles them and owns nothing else.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from service import __version__, errors
from service.capability.router import router as capability_router
from service.bulk.router import router as bulk_router
from service.bulk.service import BulkExports
from service.bulk.settings import BulkSettings
from service.config import Settings
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.derivation.router import api_router as derivation_api_router
from service.derivation.router import fhir_router as derivation_fhir_router
from service.domain.router import router as domain_router
from service.health.router import router as health_router
from service.observability import RequestIdMiddleware, configure_logging
from service.rest.router import router as rest_router
from service.rest.service import FhirStore
from service.transactions.router import router as transaction_router
from service.transactions.service import BundleProcessor


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url, pool_size=settings.pool_size)
    if settings.run_migrations:
        upgrade(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.bulk.start()  # the background export worker of this process
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
    errors.install(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health_router)
    app.include_router(capability_router)
    app.include_router(transaction_router)
    app.include_router(domain_router)
    app.include_router(bulk_router)  # before rest_router: /fhir/Patient/$export is not a read
    app.include_router(derivation_api_router)
    app.include_router(derivation_fhir_router)  # before rest_router: /fhir/ResearchStudy/{id}/$endpoints
    app.include_router(rest_router)
    return app
