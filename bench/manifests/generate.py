"""Generate a synthetic deployments repo: many services, a few environments each, some errors."""

from __future__ import annotations

import random
from pathlib import Path

ENVIRONMENTS = ("stage", "production", "pull_request", "qa")
TYPES = ("swarm", "compose", "k8s", "static_file", "cron")

VALID = """\
version: v1beta
service_name: {service}
type: {type}
repository: acme/{service}
image: ghcr.io/acme/{service}
url: "https://{{name}}.{{base_domain}}"
files: [stack.yml]
oob:
  update-image:
    file: stack.yml
    path: services.{service}.image
health:
  path: /healthz
  timeout: 5s
timeout: 20m
status_timeout: 10m
pr_deploy: {pr_deploy}
ttl: 7d
overrides:
  app:
    LOG_LEVEL: info
    WORKERS: {workers}
  deployment:
    replicas: 2
allowed_overrides:
  app: [LOG_LEVEL]
  deployment: [replicas, port]
secrets: [DATABASE_PASSWORD, API_KEY]
"""

STACK = """\
version: "3.8"
services:
  {service}:
    image: ghcr.io/acme/{service}:latest
    deploy:
      replicas: 2
  worker:
    image: ghcr.io/acme/{service}:latest
    command: ["worker"]
"""

# Each breaks one rule; the loader must report it and keep going.
BROKEN = (
    lambda text: text + "zigzag: 1\n",  # unknown key
    lambda text: text.replace("timeout: 20m", "timeout: twenty minutes"),  # bad duration
    lambda text: text.replace("files: [stack.yml]", "files: [missing.yml]"),  # missing file
    lambda text: text.replace("type: ", "type: dockerz-"),  # bad enum
    lambda text: text.replace("path: /healthz", "path: healthz"),  # bad pattern
    lambda text: text.replace("oob:\n", "oob: [\n"),  # invalid YAML
    lambda text: text.replace("secrets: [", "secrets: [API_KEY, "),  # duplicate secret
    lambda text: text.replace('url: "https://', 'url: "https://{nope}.'),  # unknown placeholder
)


def generate_repo(root: Path, count: int = 10_000, error_rate: float = 0.05, seed: int = 7) -> int:
    """Write count manifests (about error_rate of them broken) under root; return broken count."""
    rng = random.Random(seed)
    broken = 0
    services = (count + len(ENVIRONMENTS) - 1) // len(ENVIRONMENTS)
    written = 0
    for index in range(services):
        service = f"svc-{index:05d}"
        kind = TYPES[index % len(TYPES)]
        for environment in ENVIRONMENTS:
            if written == count:
                return broken
            folder = root / "services" / service / kind / environment
            folder.mkdir(parents=True, exist_ok=True)
            text = VALID.format(
                service=service,
                type=kind,
                pr_deploy="true" if environment == "pull_request" else "false",
                workers=rng.randint(1, 8),
            )
            if rng.random() < error_rate:
                text = rng.choice(BROKEN)(text)
                broken += 1
            (folder / "sami.yaml").write_text(text)
            (folder / "stack.yml").write_text(STACK.format(service=service))
            written += 1
    return broken
