# Sami's image: the web process, workers and the scheduler run from it with different commands.
FROM python:3.11-slim

# git reads the deployments repo; docker.io's client and curl are what the built-in swarm,
# compose and health checks call. Kubernetes targets need helm and kubectl added to the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git curl docker.io docker-compose util-linux \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies exactly as locked (scripts/lock), in a layer of their own that code changes reuse.
COPY requirements/runtime.txt ./requirements/
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md app.py ./
COPY bot ./bot
COPY workers ./workers
COPY manifests_schema ./manifests_schema
COPY control_scripts ./control_scripts
COPY examples ./examples
# The build backend came with the lock: installing Sami itself fetches nothing.
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation -e . \
 && useradd --create-home --uid 10001 sami
USER sami
ENV SAMI_INSTANCE_DIR=/home/sami/instance
EXPOSE 8000
CMD ["sami", "serve", "--bind", "0.0.0.0:8000"]
