"""The Docker engine, the CLIs and the compose project the container test drives.

Everything goes through the ``docker`` and compose command lines, as a user would type them;
the only traffic is to the engine's socket, to the containers' own network (the engine's) and
to HAProxy's port published on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
# One image per Bazar role, and HAProxy's (docker/<name>.Dockerfile, tagged bazar-<name>:local).
IMAGES = ("frontend", "catalog", "order", "haproxy")
BASE_IMAGE = "debian:bookworm-slim"  # the Dockerfiles' default BASE
# Where the host trusts a TLS-intercepting proxy, pip in the build must trust it too.
HOST_CA_BUNDLE = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")

T = TypeVar("T")


class NoEngine(Exception):
    """No Docker engine answers here: the container test cannot run (and is skipped)."""


def run(command: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """Run a command, return its stdout; a failure raises with its stderr in the message."""
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def docker_cli() -> str:
    """A docker CLI that talks to a running engine and can build with BuildKit (the Dockerfiles
    use a build secret). Since Docker 23 the CLI needs its buildx plugin for that; Debian's
    docker.io (20.10) builds with BuildKit by itself, given DOCKER_BUILDKIT=1."""
    found = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.access(c, os.X_OK)]
    if not found:
        raise NoEngine("no docker command (Debian: apt-get install docker.io)")
    try:
        answer = subprocess.run([found[0], "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise NoEngine("no Docker engine answers within 20 s") from None
    if answer.returncode != 0:
        why = [line for line in answer.stderr.splitlines() if line.strip()] or [f"exit {answer.returncode}"]
        raise NoEngine(f"no Docker engine answers ({why[-1].strip()})")
    for cli in found:
        major = run([cli, "version", "--format", "{{.Client.Version}}"], timeout=20).split(".")[0]
        buildx = subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0
        if buildx or (major.isdigit() and int(major) < 23):
            return cli
    raise RuntimeError(f"none of {found} can build with BuildKit: install the buildx plugin")


def compose_cli(docker: str) -> list[str]:
    """Compose v1 (Debian's docker-compose 1.29) or v2 (the docker CLI plugin): the file is
    written for both."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    raise RuntimeError("neither docker-compose nor `docker compose` (Debian: apt-get install docker-compose)")


def ensure_base_image(docker: str) -> str:
    """debian:bookworm-slim: already here, pulled, or made from Debian's packages
    (docker/debian-base.sh) where no registry can be reached. Says which."""
    if subprocess.run([docker, "image", "inspect", BASE_IMAGE], capture_output=True).returncode == 0:
        return "present"
    if subprocess.run([docker, "pull", "-q", BASE_IMAGE], capture_output=True, timeout=300).returncode == 0:
        return "pulled"
    run([str(ROOT / "docker" / "debian-base.sh"), BASE_IMAGE], timeout=600, env={"PATH": _sbin_path()})
    return "made with debootstrap"


def _sbin_path() -> str:
    """debootstrap lives in /usr/sbin, which a non-login PATH may lack."""
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def build_images(docker: str) -> None:
    """The role images and HAProxy's, tagged as compose.yaml names them, with BuildKit."""
    secret = [f"--secret=id=pip-cert,src={HOST_CA_BUNDLE}"] if HOST_CA_BUNDLE.is_file() else []
    for name in IMAGES:
        dockerfile, tag = f"docker/{name}.Dockerfile", f"bazar-{name}:local"
        build = [docker, "build", "-q", *secret, "-f", dockerfile, "-t", tag, str(ROOT)]
        run(build, timeout=900, env={"DOCKER_BUILDKIT": "1"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Project:
    """One compose project of compose.yaml: its own name, so its containers, network and volumes
    are its own; HAProxy published on a free loopback port."""

    docker: str
    compose: list[str]
    name: str
    port: int = field(default_factory=free_port)

    def __call__(self, *args: str, timeout: float = 300) -> str:
        command = [*self.compose, "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml")]
        return run([*command, "-p", self.name, *args], timeout=timeout, env={"BAZAR_PORT": str(self.port)})

    def container(self, service: str) -> str:
        """The id of the service's one container."""
        (cid,) = self("ps", "-q", service).split()
        return cid

    def inspect(self, service: str) -> dict[str, Any]:
        (state,) = json.loads(run([self.docker, "inspect", self.container(service)]))
        return dict(state)

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of this project still in the engine."""
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind in ("container ls -a", "network ls", "volume ls"):
            ids = run([self.docker, *kind.split(), "-q", "--filter", label]).split()
            found += [f"{kind.split()[0]} {i}" for i in ids]
        return found

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass(frozen=True)
class Reply:
    code: int
    body: Any
    headers: dict[str, str]


def http(project: Project, method: str, path: str, body: Any = None) -> Reply:
    """A JSON request through HAProxy's published loopback port, to whichever front end it picks."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(project.url(path), data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            code, content, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        code, content, headers = e.code, e.read(), e.headers
    try:
        parsed = json.loads(content) if content else None
    except ValueError:  # not Bazar's answer (HAProxy's own 503 page, say): kept as text for the report
        parsed = content.decode(errors="replace")
    return Reply(code, parsed, {k.lower(): v for k, v in headers.items()})


def poll(what: str, check: Callable[[], T], deadline: float = 60.0) -> T:
    """``check()`` until it returns without raising (an assertion or a transport error), for at
    most ``deadline`` seconds; the last error is in the failure message."""
    end = time.monotonic() + deadline
    while True:
        try:
            return check()
        except (AssertionError, OSError, ValueError) as e:  # URLError is an OSError
            if time.monotonic() > end:
                raise AssertionError(f"not within {deadline:.0f} s: {what} (last: {e!r})") from e
        time.sleep(0.5)
