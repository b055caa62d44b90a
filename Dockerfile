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
COPY wire ./wire
COPY streamnode ./streamnode
COPY agents ./agents
# Cloud-only by default; `--build-arg EXTRAS=local` adds the keyless local models
# (piper-tts in it is GPL-3.0-or-later: see the README's dependency table).
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && useradd --create-home --uid 10001 agent
USER agent

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)" || exit 1

# uvloop and httptools come with uvicorn[standard]; one process per container, scale out.
# `voice-agent serve` (not bare uvicorn) applies MAX_FRAME_BYTES in the WebSocket layer and
# TRUSTED_PROXIES to X-Forwarded-For. SIGTERM drains calls, then exits 0: give the container
# a stop timeout above DRAIN_SECONDS + 20 s (docker stop -t, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["voice-agent", "serve"]
