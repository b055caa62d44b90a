# syntax=docker/dockerfile:1
# Knowlarity voice agent: slim image, non-root, health-checked.
#
#   docker build -t voice-agent:cloud .                          # cloud providers only
#   docker build --build-arg VARIANT=local -t voice-agent:local .  # + the local speech models
#
# Dependencies come from a lock file (pinned, with hashes) in their own layer, so a code
# change rebuilds only the last layers. Update the locks with `sh deploy/lock.sh [local]`.
# The test kit (testkit/), the benchmark (bench/), tests and docs are not in the image.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG VARIANT=cloud
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. Dependencies only: cached until a lock file changes.
COPY requirements*.lock ./
RUN lock=requirements.lock; \
    if [ "$VARIANT" = "local" ]; then lock=requirements-local.lock; fi; \
    if [ ! -f "$lock" ]; then echo "missing $lock: run sh deploy/lock.sh $VARIANT" >&2; exit 1; fi; \
    pip install --require-hashes --no-deps -r "$lock"

# 2. The application (no dependency resolution: everything is already pinned above).
COPY pyproject.toml README.md ./
COPY server ./server
COPY pipeline ./pipeline
COPY audio ./audio
COPY config ./config
COPY wire ./wire
COPY kpi ./kpi
COPY streamnode ./streamnode
COPY records ./records
COPY agents ./agents
RUN pip install --no-deps --no-build-isolation . \
    && pip uninstall --yes setuptools \
    && python -c "import server.application, records.store" \
    && voice-agent --help >/dev/null

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data
RUN useradd --create-home --uid 10001 agent \
    && mkdir -p /data \
    && chown agent /data
COPY --from=build /opt/venv /opt/venv
USER agent
WORKDIR /home/agent
# Call records default to SQLite in /data; set DATABASE_URL for PostgreSQL.
VOLUME ["/data"]

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)"]

# uvloop and httptools come with uvicorn[standard]. `voice-agent serve` runs one worker per
# CPU core it may use (SO_REUSEPORT); under a CPU quota (--cpus, k8s limits) set WORKERS to it
# (deploy/ runs one process per container and scales out with containers: WORKERS=1).
# `voice-agent serve` (not bare uvicorn) applies MAX_FRAME_BYTES in the WebSocket layer and
# TRUSTED_PROXIES to X-Forwarded-For. HOST=0.0.0.0 needs VOICE_WS_TOKEN (or VOICE_ALLOWED_IPS):
# without it the container exits at once with a one-line explanation. SIGTERM drains calls,
# then exits 0: give the container a stop timeout above DRAIN_SECONDS + 20 s (docker stop -t,
# stop_grace_period, terminationGracePeriodSeconds). Call-record migrations run at start-up.
STOPSIGNAL SIGTERM
CMD ["voice-agent", "serve"]
