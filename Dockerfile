# Knowlarity voice agent: slim image, non-root, health-checked.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY pipeline ./pipeline
COPY audio ./audio
COPY config ./config
COPY kpi ./kpi
COPY testkit ./testkit
COPY bench ./bench
RUN pip install . && useradd --create-home --uid 10001 agent
USER agent

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)" || exit 1

# uvloop and httptools come with uvicorn[standard]. `voice-agent serve` runs one worker per
# CPU core it may use (SO_REUSEPORT); under a CPU quota (--cpus, k8s limits) set WORKERS to it.
# `voice-agent serve` (not bare uvicorn) applies MAX_FRAME_BYTES in the WebSocket layer and
# TRUSTED_PROXIES to X-Forwarded-For. HOST=0.0.0.0 needs VOICE_WS_TOKEN (or VOICE_ALLOWED_IPS):
# without it the container exits at once with a one-line explanation. SIGTERM drains calls, then exits 0: give the container
# a stop timeout above DRAIN_SECONDS + 20 s (docker stop -t, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["voice-agent", "serve"]
