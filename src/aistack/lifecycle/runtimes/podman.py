"""The podman runtime for `aistack deploy/rollback --runtime podman`.

A release is an image `localhost/aistack-<service>:<version>` built from the service's
Containerfile. The running instance is the container `local-ai-<service>` on the network
`local-ai`, reachable there by the service's name. A deploy renames the running container to
`local-ai-<service>-backup` and stops it, starts the new image, checks `/health` over HTTP at the
container's address, then removes the backup — or removes the new container and brings the backup
back. Container names are always matched exactly (`podman container exists`), never by substring.

Python dependencies are built into wheels on the host (pip works here, with whatever index and
certificates the host uses) and installed in the image with `--no-index`, so a build needs no
network inside the container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from aistack import services
from aistack.config import Settings, resolve_env_file
from aistack.health import Health
from aistack.lifecycle.releases import Releases
from aistack.lifecycle.runtimes import BuildError, Say, Swap, exit_reason, wait_healthy
from aistack.services import get, installed_source_root
from aistack.web import is_loopback

PREFIX = "local-ai"
NETWORK = "local-ai"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
STOP_TIMEOUT = 10


class PodmanError(Exception):
    pass


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise PodmanError("podman is not installed") from None
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise PodmanError(f"podman {args[0]} failed: {lines[-1] if lines else proc.returncode}")
    return proc


def container_name(service: str) -> str:
    return f"{PREFIX}-{service}"


def image_name(service: str, version: str) -> str:
    return f"localhost/aistack-{service}:{version}"


def exists(name: str) -> bool:
    return podman("container", "exists", name, check=False).returncode == 0


def inspect(name: str) -> dict:
    return json.loads(podman("container", "inspect", name).stdout)[0]


def project_root(root: Path) -> Path:
    """The project around a source root (`…/src` → `…`)."""
    return root.parent if root.name == "src" else root


def wheelhouse(settings: Settings, pyproject: Path) -> Path:
    """Wheels of every dependency (and the build backend), built once per dependency list."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"] + ["setuptools>=68", "wheel"]
    target = settings.aistack_cache_dir / "wheels" / hashlib.sha256(json.dumps(deps).encode()).hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(target), *deps],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise PodmanError(f"building the dependency wheels failed: {proc.stderr.strip().splitlines()[-1:]}")
    (target / ".complete").touch()
    return target


class PodmanRuntime:
    name = "podman"

    def __init__(self, settings: Settings, say: Say = lambda _: None, base_image: str = DEFAULT_BASE_IMAGE):
        self.settings = settings
        self.say = say
        self.base_image = base_image
        self.releases = Releases(settings, "podman")

    def unavailable(self) -> str | None:
        return None if shutil.which("podman") else "podman is not installed"

    def problem(self, service: str) -> str | None:
        return None  # the container network has its own ports

    def build(self, service: str, root: Path) -> str:
        """An image of `root`'s package for `service`, tagged with a new version."""
        self.say(f"building the image of {service}")
        try:
            return self._build(service, root)
        except (PodmanError, subprocess.TimeoutExpired) as exc:
            raise BuildError(str(exc)) from None

    def forget(self, service: str, versions: list[str]) -> None:
        for version in versions:
            podman("rmi", image_name(service, version), check=False)

    def can_return_to(self, service: str, version: str) -> bool:
        # "installed" (nothing of ours ran) and "unlabelled" (compose's container) have no image here
        return podman("image", "exists", image_name(service, version), check=False).returncode == 0

    def _build(self, service: str, root: Path) -> str:
        version = self.releases.build(service, root)  # the immutable source snapshot the image is made of
        snapshot = self.releases.root / service / version
        project = project_root(root)
        fallback = project_root(installed_source_root())
        containerfile = next(
            (p / "deploy" / service / "Containerfile" for p in (project, fallback) if (p / "deploy" / service / "Containerfile").is_file()),
            None,
        )
        pyproject = next((p / "pyproject.toml" for p in (project, fallback) if (p / "pyproject.toml").is_file()), None)
        if containerfile is None or pyproject is None:
            raise PodmanError(f"no deploy/{service}/Containerfile and pyproject.toml next to {root}")
        context = snapshot.with_name(version + ".context")
        shutil.rmtree(context, ignore_errors=True)
        try:
            (context / "deploy" / service).mkdir(parents=True)
            shutil.copy2(containerfile, context / "deploy" / service / "Containerfile")
            shutil.copy2(pyproject, context / "pyproject.toml")
            shutil.copytree(snapshot / "aistack", context / "src" / "aistack")
            wheels = wheelhouse(self.settings, pyproject)
            shutil.copytree(wheels, context / "deploy" / "wheels", copy_function=os.link)
            podman(
                "build",
                "-q",
                "-f",
                str(context / "deploy" / service / "Containerfile"),
                "-t",
                image_name(service, version),
                "--label",
                f"aistack.release={version}",
                "--build-arg",
                f"BASE_IMAGE={self.base_image}",
                "--build-arg",
                "PIP_INSTALL_ARGS=--no-index",
                *(["--build-arg", "BUILD_ENGINE=0"] if service == "llama-cpp" else []),
                str(context),
                timeout=1800,
            )
        finally:
            shutil.rmtree(context, ignore_errors=True)
        return version

    # --- containers -------------------------------------------------------------------------------

    def run_args(self, service: str, version: str) -> list[str]:
        s = self.settings
        name = container_name(service)
        args = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            "--network-alias",
            service,
            "--label",
            f"aistack.service={service}",
            "--label",
            f"aistack.release={version}",
        ]
        env_file = resolve_env_file()
        if env_file.is_file():
            args += ["--env-file", str(env_file)]
        # In a container, loopback is the container itself: a service configured at a loopback
        # host is reached by its name on the network instead. Other hosts are kept as they are.
        for other in services.NAMES:
            key = get(other).setting_prefix + "_HOST"
            if is_loopback(getattr(s, key.lower())):
                args += ["-e", f"{key}={other}"]
        args += ["-e", "AISTACK_BIND_ADDRESS=0.0.0.0", "-e", "AISTACK_DATA_DIR=/data", "-v", f"{s.aistack_data_dir}:/data"]
        if get(service).uses_workspaces:  # workspaces keep their host paths
            args += ["-e", f"WORKSPACE_ROOT={s.workspace_root}", "-v", f"{s.workspace_root}:{s.workspace_root}"]
        if get(service).uses_cache:  # llama-server and the model
            args += ["-e", "AISTACK_CACHE_DIR=/cache", "-v", f"{s.aistack_cache_dir}:/cache"]
        if get(service).user_facing:  # published on the host's 127.0.0.1; the rest stay on the network
            port = s.port(service)
            args += ["-p", f"127.0.0.1:{port}:{port}"]
        return [*args, image_name(service, version)]

    def start(self, service: str, version: str) -> None:
        if podman("network", "exists", NETWORK, check=False).returncode != 0:
            podman("network", "create", NETWORK)
        podman(*self.run_args(service, version))

    def health_url(self, name: str, service: str) -> str:
        networks = inspect(name)["NetworkSettings"]["Networks"]
        address = networks.get(NETWORK, {}).get("IPAddress") or "127.0.0.1"
        return f"http://{address}:{self.settings.port(service)}{get(service).health_path}"

    def wait_healthy(self, service: str, timeout: float) -> Health:
        name = container_name(service)

        def ended() -> Health | None:
            state = inspect(name)["State"]
            if state.get("Running"):
                return None
            return Health("exited", exit_reason(state.get("ExitCode"), self.logs(name, 40), "the container"))

        return wait_healthy(self.health_url(name, service), timeout, ended, interval=0.3)

    def logs(self, name: str, lines: int = 20) -> str:
        proc = podman("logs", "--tail", str(lines), name, check=False)
        return (proc.stdout + proc.stderr).strip()

    def current(self, service: str) -> str | None:
        """The release the service's container runs; "unlabelled" for one made elsewhere (compose):
        it is still backed up and restored, but there is no image of ours to roll back to."""
        name = container_name(service)
        if not exists(name):
            return None
        return (inspect(name)["Config"].get("Labels") or {}).get("aistack.release") or "unlabelled"

    # --- deploy / rollback ------------------------------------------------------------------------

    def swap(self, service: str, version: str, timeout: float) -> Swap:
        """Back up the running container, start `version`, verify; on failure bring the backup back."""
        name, backup = container_name(service), container_name(service) + "-backup"
        previous = self.current(service)
        if exists(backup):  # a leftover of an interrupted deploy: the running container is newer
            podman("rm", "-f", backup)
        if previous is not None:
            self.say(f"backing up {name} ({previous}) as {backup}")
            podman("rename", name, backup)
            podman("stop", "-t", str(STOP_TIMEOUT), backup, timeout=STOP_TIMEOUT + 30)
        self.say(f"starting {name} from {image_name(service, version)}")
        try:
            self.start(service, version)
            result = self.wait_healthy(service, timeout)
        except PodmanError as exc:
            result = Health("exited", str(exc))
        if result.ready:
            if exists(backup):
                podman("rm", "-f", backup)
            return Swap(result, serving=version)
        failed_at = time.monotonic()
        tail = self.logs(name) if exists(name) else ""
        podman("rm", "-f", name, check=False)
        if previous is None:
            return Swap(result, tail)
        self.say(f"restoring {backup} as {name}")
        podman("rename", backup, name)
        podman("start", name)
        again = self.wait_healthy(service, self.settings.health_timeout(service))
        restore_s = round(time.monotonic() - failed_at, 2)
        if again.ready:
            return Swap(result, tail, previous, restore_s, f"; release {previous} restored and healthy")
        return Swap(result, tail, None, restore_s, f"; restoring release {previous} FAILED too: {again.detail}")
