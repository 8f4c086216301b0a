# msgroute: the whole engine (`msgroute run`: gateway + route, dispatch and status workers)
# in one container. Configure it entirely with environment variables (see docs/operations.md):
# MSGROUTE_AMQP_URL, MSGROUTE_DATABASE_URL, MSGROUTE_PUBLIC_URL, MSGROUTE_ADMIN_TOKEN, and
# MSGROUTE_CONFIG for a carriers file mounted into the container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MSGROUTE_HTTP_HOST=0.0.0.0 \
    MSGROUTE_HTTP_PORT=8080 \
    MSGROUTE_DATABASE_URL=sqlite:////var/lib/msgroute/msgroute.db

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/msgroute --create-home \
        --shell /usr/sbin/nologin msgroute

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY workers ./workers
COPY carriers ./carriers
COPY config ./config
RUN pip install --no-cache-dir .

USER 10001:10001
EXPOSE 8080
VOLUME ["/var/lib/msgroute"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = os.environ.get('MSGROUTE_HTTP_PORT', '8080'); [u.urlopen(f'http://127.0.0.1:{p}/{path}', timeout=4) for path in ('healthz', 'readyz')]"]
CMD ["msgroute", "run"]
