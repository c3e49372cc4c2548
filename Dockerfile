# syntax=docker/dockerfile:1.7
# Cold Harbour: one image for web, workers (manager, ingester) and the simulator; the command decides.
#   docker build -t coldharbour .
#   docker run --env-file .env -p 5000:5000 coldharbour            # web (gunicorn, dashboard.app:server)
#   docker run --env-file .env coldharbour manager                 # or: ingester, workers, simulator
# See docs/infrastructure.md for tunnels, Cloud Build and scaling.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm
ARG CLOUDFLARED_VERSION=2026.3.0

# cloudflared comes from Cloudflare's own image (a static binary), pinned by version.
FROM cloudflare/cloudflared:${CLOUDFLARED_VERSION} AS cloudflared

# ---- assets: the dashboard's plotly.js partial bundle, an npm package (package.json) -------------
FROM node:20-slim AS assets
WORKDIR /assets
COPY package.json ./
RUN npm install --no-audit --no-fund --loglevel=error

# ---- build: a virtualenv holding only the pinned runtime dependencies -----------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only requirements.txt here: this layer is rebuilt when the dependencies change, not the source.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/requirements.txt

# ---- runtime -------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime
LABEL org.opencontainers.image.title="coldharbour" \
      org.opencontainers.image.description="Cold Harbour: multi-account Alpaca monitoring dashboard and workers"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=5000

# A fixed, non-root uid/gid so volume permissions and Kubernetes runAsNonRoot checks are predictable.
RUN groupadd --system --gid 10001 coldharbour \
    && useradd --system --uid 10001 --gid coldharbour --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin coldharbour

COPY --from=cloudflared /usr/local/bin/cloudflared /usr/local/bin/cloudflared
COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# The source stays root-owned and read-only to the service user; only the data directory is writable.
COPY . /app
COPY --chmod=0755 entrypoint.sh /app/entrypoint.sh
COPY --from=assets /assets/node_modules /app/node_modules
RUN mkdir -p /app/.coldharbour \
    && chown coldharbour:coldharbour /app/.coldharbour \
    && python -m compileall -q core workers dashboard simulator

USER 10001:10001
EXPOSE 5000
STOPSIGNAL SIGTERM
# Probes the web role's /healthz. Worker and simulator containers serve no HTTP: docker-compose.yml
# gives them their own healthcheck (or none); Cloud Run uses its own startup/liveness probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/app/entrypoint.sh", "healthcheck", "/healthz"]
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["web"]
