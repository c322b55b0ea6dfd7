# The Dungeon Master bot in a container: slim Python, a non-root user, the database on a volume.
# Configuration comes from config.toml (baked in, or mounted over /app/config.toml) and DM_<SECTION>_<KEY>
# environment variables; secrets only from the environment (DISCORD_TOKEN, ANTHROPIC_API_KEY, OPENAI_API_KEY).
#
#   docker build -t dungeon-master .
#   docker run -d --name dm -e DISCORD_TOKEN=... -e ANTHROPIC_API_KEY=... -v dm-data:/app/data dungeon-master
# With -e DM_METRICS_PORT=9100 (and -p 9100:9100) it serves /metrics and /healthz, and HEALTHCHECK asks /healthz.
# `make image-test` builds this image and plays one /start and one /act with it against local stand-ins.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DM_CONFIG=/app/config.toml \
    DM_DATABASE_URL=sqlite:////app/data/dungeon-master.db \
    DM_METRICS_HOST=0.0.0.0

WORKDIR /app
RUN useradd --create-home --uid 10001 dm

# The project and its pinned dependency ranges (pyproject.toml).
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install . && rm -rf /root/.cache

COPY config.toml ./config.toml
RUN mkdir -p /app/data && chown dm:dm /app/data
USER dm
VOLUME ["/app/data"]

# Healthy = connected to Discord's gateway and the database answers (GET /healthz on [metrics] port). Without a
# metrics port the check has nothing to ask and passes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["dungeon-master", "health"]

CMD ["dungeon-master", "run"]
