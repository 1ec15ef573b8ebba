# Sami's image: the web process, workers and the scheduler run from it with different commands.
#
# BASE_IMAGE: any Debian-based image with python3 (3.11 or newer) and its venv module. Users keep
# the default; where no registry is reachable, scripts/build-base-image makes one from Debian's
# packages (docker build --network host --build-arg BASE_IMAGE=local/debian-python:bookworm .).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# git reads the deployments repo; docker.io's client, docker-compose and curl are what the built-in
# swarm, compose and health checks call. helm and kubectl (k8s targets) come with the add-on image
# of Dockerfile.k8s.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl ca-certificates docker.io docker-compose \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Sami's own virtual environment: the same on python:3.x-slim and on Debian's python3 (whose
# system site-packages pip must not touch).
RUN python3 -m venv /opt/sami
ENV PATH=/opt/sami/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Dependencies exactly as locked (scripts/lock), in a layer of their own that code changes reuse.
COPY requirements/runtime.txt ./requirements/
# pip trusts the system's certificates (the base image's, which may add a proxy's CA).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md app.py ./
COPY bot ./bot
COPY workers ./workers
COPY manifests_schema ./manifests_schema
COPY control_scripts ./control_scripts
COPY examples ./examples
# The build backend came with the lock: installing Sami itself fetches nothing.
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation -e . \
 && useradd --create-home --uid 10001 --user-group sami \
 && install -d -o sami -g sami /home/sami/instance /home/sami/instance/sites
USER 10001:10001
ENV SAMI_INSTANCE_DIR=/home/sami/instance
EXPOSE 8000
# On SIGTERM: gunicorn stops accepting and finishes in-flight requests; a worker finishes or hands
# back its action (SAMI_SHUTDOWN_GRACE); give `docker stop -t` / terminationGracePeriodSeconds more.
STOPSIGNAL SIGTERM
CMD ["sami", "serve", "--bind", "0.0.0.0:8000"]
