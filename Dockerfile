# Production image of the ICC platform: `icc serve` by default; the same image runs
# `icc worker` and `icc migrate`. Configuration (ICC_DATABASE_URL, ICC_REDIS_URL,
# ICC_BOOTSTRAP_ADMIN_KEY, ...) comes from the environment at run time; nothing secret is baked in.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/icc
WORKDIR /src
COPY . .
RUN /opt/icc/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/icc/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 icc \
    && useradd --system --uid 10001 --gid icc --home-dir /srv/icc --shell /usr/sbin/nologin icc \
    && mkdir -p /srv/icc/var \
    && chown -R icc:icc /srv/icc
COPY --from=build /opt/icc /opt/icc
# The working directory holds ./var/ for the SQLite default; production sets ICC_DATABASE_URL.
WORKDIR /srv/icc
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["icc", "serve", "--host", "0.0.0.0", "--port", "8000"]
