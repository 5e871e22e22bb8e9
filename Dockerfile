# trialfhir — FHIR R4 server. Build: docker build -t trialfhir .
# Run:   docker run -p 8000:8000 -v trialfhir-data:/data trialfhir
# PostgreSQL instead of the SQLite file in /data:
#        docker run -p 8000:8000 -e TRIALFHIR_DATABASE_URL=postgresql+psycopg://user:pass@host:5432/db trialfhir
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the project (service, mappers, schemas and the migrations packaged as
# trialfhir_migrations) and drop the sources: the container runs the installed package.
COPY . /tmp/src
RUN pip install /tmp/src && rm -rf /tmp/src

# Non-root user owning the data directory (SQLite file, WAL and shm files live there).
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home trialfhir \
    && mkdir -p /data \
    && chown trialfhir:trialfhir /data
VOLUME ["/data"]
WORKDIR /app
USER trialfhir

ENV TRIALFHIR_DATABASE_URL=sqlite:////data/trialfhir.db
EXPOSE 8000

# The slim image has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# `serve` applies the migrations, then starts uvicorn.
CMD ["trialfhir", "serve", "--host", "0.0.0.0", "--port", "8000"]
