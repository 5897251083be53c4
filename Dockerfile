# syntax=docker/dockerfile:1
#
# One image for the whole service: the API (default command), the Celery GPU worker
# (`forgetd worker`) and the one-off migration job (`forgetd migrate`); see docker-compose.yml.
#
# Base image: python:3.11-slim, not a CUDA image. The torch and torchvision wheels on PyPI bundle
# the CUDA runtime libraries they need (the nvidia-* wheels that torch depends on), so the image
# needs no CUDA toolkit; the GPU host needs only the NVIDIA driver and the NVIDIA Container
# Toolkit, which mount the driver into the container. (A nvidia/cuda *runtime* base would only
# duplicate those libraries.) Without a GPU the same image runs everything on the CPU.

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The service runs as this unprivileged user; it owns only /var/lib/forgetd (state), not /app.
ARG FORGETD_UID=10001
RUN groupadd --system --gid "${FORGETD_UID}" forgetd \
 && useradd --system --uid "${FORGETD_UID}" --gid forgetd \
      --create-home --home-dir /home/forgetd --shell /usr/sbin/nologin forgetd

WORKDIR /app

# Step 1, dependencies only (torch alone is several GB): read them from pyproject.toml, so this
# layer is rebuilt only when pyproject.toml changes, not on every source edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Step 2, the project itself, as an EDITABLE install of the source tree kept at /app.
# Why editable: app/db/migrate.py finds alembic.ini and migrations/ at
# Path(__file__).resolve().parents[2], the project root. With a plain `pip install .` the code
# would live in site-packages and that path would point at site-packages' parent, where there is
# no alembic.ini, so `forgetd migrate` would fail. Installed with -e, the `app` package is imported
# from /app/app, so the root is /app and /app/alembic.ini and /app/migrations are found; pip
# still puts the `forgetd` console script on PATH (/usr/local/bin/forgetd).
# Byte-code is compiled here, as root, because the service user cannot write to /app.
COPY . .
RUN pip install --no-deps -e . \
 && python -m compileall -q app worker models_store migrations \
 && test -f /app/alembic.ini && test -d /app/migrations/versions \
 && mkdir -p /var/lib/forgetd/home /var/lib/forgetd/store /var/lib/forgetd/data \
             /var/lib/forgetd/cache /var/lib/forgetd/keys /var/lib/forgetd/torch \
 && chown -R forgetd:forgetd /var/lib/forgetd \
 && chmod 700 /var/lib/forgetd/keys

# Where the service keeps its state (app/settings.py). docker-compose.yml mounts named volumes at
# these paths; a new named volume copies the ownership and mode from the image (keys stays 0700).
# Without a database URL the image runs embedded (SQLite files under FORGETD_HOME_DIR).
ENV FORGETD_HOME_DIR=/var/lib/forgetd/home \
    FORGETD_STORE_ROOT=/var/lib/forgetd/store \
    FORGETD_DATA_ROOTS=/var/lib/forgetd/data \
    FORGETD_CACHE_ROOT=/var/lib/forgetd/cache \
    FORGETD_SIGNING_KEY_PATH=/var/lib/forgetd/keys/signing.pem

USER forgetd

EXPOSE 8000

# No HEALTHCHECK here: the worker and the migration job share this image and listen on no port.
# docker-compose.yml gives the API its health check (GET /healthz).
CMD ["forgetd", "serve", "--host", "0.0.0.0", "--port", "8000"]
