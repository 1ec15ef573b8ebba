"""Container images from Debian's packages for tests on the private Swarm (no registry needed).

`debian_rootfs(packages)` writes a minimal Debian root filesystem with the packages into a
tarball with mmdebstrap, once per package set (kept under ~/.cache/sami-tests, so a second run
costs nothing); `import_image(swarm, tar, tag, changes)` turns it into an image of a private
dockerd. `redis_image` and `postgres_image` make images that follow scripts/images/redis and
scripts/images/postgres (data folders owned by their users, the postgres entrypoint);
`router_image` one that follows scripts/images/router (haproxy, its entrypoint).
Images are imported, never built: a build on the tests' vfs storage copies the whole root
filesystem for every step.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.support.docker import DockerSwarm

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sami-tests"
# Folders the images' processes write, owned by their users (as the Dockerfiles in scripts/images do).
# mmdebstrap empties /run after the hooks, so what the images need there is added to the tarball
# (postgres_image: the server's socket and lock folder).
_HOOK = ("chroot \"$1\" sh -c 'mkdir -p /data /var/lib/postgresql/data /run/postgresql"
         " && chown -R redis:redis /data && chown -R postgres:postgres /var/lib/postgresql /run/postgresql'")
PACKAGES = ("redis-server", "redis-tools", "postgresql-15", "postgresql-client-15")
# The entry router: haproxy, socat for its runtime API, curl for the probes through it.
ROUTER_PACKAGES = ("haproxy", "socat", "curl")
_ROUTER_HOOK = "chroot \"$1\" sh -c 'mkdir -p /var/lib/sami-router /run/sami-router'"


def unavailable_reason() -> str | None:
    return None if shutil.which("mmdebstrap") else "mmdebstrap is not installed (apt-get install mmdebstrap)"


def _mirror() -> str:
    try:
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split(":", 1)[1].split()[0]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def debian_rootfs(packages: tuple[str, ...] = PACKAGES, suite: str = "bookworm", hook: str = _HOOK) -> Path:
    """A tarball of a minimal Debian with the packages; built once per package set."""
    key = hashlib.sha256(" ".join((suite, *sorted(packages), hook)).encode()).hexdigest()[:16]
    path = CACHE / f"debian-{suite}-{key}.tar"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as temp:
        partial = Path(temp) / "rootfs.tar"
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}", f"--customize-hook={hook}",
             suite, str(partial), _mirror()],
            check=True, capture_output=True, timeout=900,
        )
        os.replace(partial, path)
    return path


def import_image(swarm: DockerSwarm, tar: Path, tag: str, changes: tuple[str, ...] = ()) -> str:
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    with tar.open("rb") as handle:
        subprocess.run([swarm.docker, *args, "-", tag], env=swarm.env(), stdin=handle, check=True,
                       capture_output=True, timeout=600)
    return tag


def redis_image(swarm: DockerSwarm, tag: str = "local/redis:1") -> str:
    return import_image(swarm, debian_rootfs(), tag, ("WORKDIR /data", "USER redis",
                                                      'CMD ["redis-server", "--protected-mode", "no"]'))


def _with_file(rootfs: Path, temp: str, source: Path, arcname: str) -> Path:
    """A copy of the rootfs tarball with one executable file appended."""
    tar = Path(temp) / "image.tar"
    shutil.copyfile(rootfs, tar)
    with tarfile.open(tar, "a") as archive:
        info = archive.gettarinfo(str(source), arcname=arcname)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with source.open("rb") as handle:
            archive.addfile(info, handle)
    return tar


def _user_ids(tar: Path, user: str) -> tuple[int, int]:
    """The uid and gid of ``user`` in the tarball's /etc/passwd."""
    with tarfile.open(tar) as archive:
        passwd = archive.extractfile("./etc/passwd")
        for line in (passwd.read().decode() if passwd is not None else "").splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
    raise LookupError(f"no user {user} in {tar.name}")


def _with_folder(tar: Path, arcname: str, owner: str, mode: int) -> None:
    """Append an empty folder owned by ``owner`` to the tarball."""
    uid, gid = _user_ids(tar, owner)
    with tarfile.open(tar, "a") as archive:
        info = tarfile.TarInfo(arcname)
        info.type, info.mode, info.uid, info.gid, info.uname, info.gname = tarfile.DIRTYPE, mode, uid, gid, owner, owner
        archive.addfile(info)


def postgres_image(swarm: DockerSwarm, tag: str = "local/postgres:1") -> str:
    """The rootfs with scripts/images/postgres's entrypoint and the server's socket folder (/run/postgresql,
    which its Dockerfile makes too) appended, imported (no build, no network)."""
    entrypoint = REPO_ROOT / "scripts" / "images" / "postgres" / "entrypoint"
    with tempfile.TemporaryDirectory(dir=CACHE) as temp:
        tar = _with_file(debian_rootfs(), temp, entrypoint, "./usr/local/bin/postgres-entrypoint")
        _with_folder(tar, "./run/postgresql", "postgres", 0o2775)
        return import_image(swarm, tar, tag, (
            "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV PGDATA=/var/lib/postgresql/data",
            "USER postgres",
            'ENTRYPOINT ["postgres-entrypoint"]',
            'CMD ["postgres"]',
        ))


def router_rootfs() -> Path:
    return debian_rootfs(ROUTER_PACKAGES, hook=_ROUTER_HOOK)


def router_image(swarm: DockerSwarm, tag: str = "local/router:1") -> str:
    """haproxy from Debian's packages with scripts/images/router's entrypoint, as its Dockerfile builds it."""
    entrypoint = REPO_ROOT / "scripts" / "images" / "router" / "entrypoint"
    with tempfile.TemporaryDirectory(dir=CACHE) as temp:
        tar = _with_file(router_rootfs(), temp, entrypoint, "./usr/local/bin/sami-router")
        return import_image(swarm, tar, tag, ('ENTRYPOINT ["sami-router"]',))
