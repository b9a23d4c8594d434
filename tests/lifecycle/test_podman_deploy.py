"""`aistack deploy --runtime podman` with real podman: image builds, container swap, rollback.

Needs podman (and root, for the debootstrap base image; built once and cached by its tag).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from lifecycle_support import aistack

from aistack.services import installed_source_root
from support import REPO_ROOT, missing, new_stack_env

pytestmark = [pytest.mark.podman, pytest.mark.timeout(1800)]  # a cold machine builds the base image and every image first

SERVICE = "ralph-wiggum"
NAME = "local-ai-ralph-wiggum"
BASE_IMAGE = "localhost/aistack-base:bookworm"
CONF = REPO_ROOT / "deploy" / "podman" / "containers.conf"


def podman(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not shutil.which("podman"):
        missing("podman is not installed (scripts/setup.sh --test installs it)")
    os.environ.setdefault("CONTAINERS_CONF", str(CONF))
    if podman("container", "exists", NAME).returncode == 0:
        missing(f"a container {NAME} exists already; not touching it")
    build = subprocess.run([str(REPO_ROOT / "deploy/podman/base-image.sh")], capture_output=True, text=True, timeout=900)
    if build.returncode != 0:
        missing(f"no base image: {build.stderr.strip()[-300:]}")
    env = new_stack_env(tmp_path_factory.mktemp("podman"))
    env.set(RALPH_WIGGUM_API_KEY="test-key", STARTUP_TIMEOUT_SECONDS=3)
    yield env
    for name in (NAME, NAME + "-backup"):
        podman("rm", "-f", name)
    for line in (env.data_dir / "deploys.jsonl").read_text().splitlines() if (env.data_dir / "deploys.jsonl").exists() else []:
        version = json.loads(line).get("version")
        if version:
            podman("rmi", f"localhost/aistack-{SERVICE}:{version}")


def deploy(stack, source: Path | None = None, health_timeout: str = "30"):
    args = ["deploy", SERVICE, "--runtime", "podman", "--base-image", BASE_IMAGE, "--health-timeout", health_timeout]
    return aistack(stack, *args, *(["--source", str(source)] if source else []), timeout=900)


def copy_source(dest: Path, web_py_addition: str = "") -> Path:
    shutil.copytree(installed_source_root() / "aistack", dest / "src" / "aistack", ignore=shutil.ignore_patterns("__pycache__"))
    if web_py_addition:
        web = dest / "src" / "aistack" / "web.py"
        web.write_text(web.read_text() + "\n" + web_py_addition + "\n")
    return dest


def serving(stack) -> str:
    """The release label of the running container, after checking it answers /health on 127.0.0.1."""
    assert podman("container", "exists", NAME + "-backup").returncode == 1  # no backup left behind
    info = json.loads(podman("container", "inspect", NAME, check=True).stdout)[0]
    assert info["State"]["Running"]
    assert httpx.get(stack.url(SERVICE) + "/health", timeout=5).status_code == 200
    return info["Config"]["Labels"]["aistack.release"]


@pytest.fixture(scope="module")
def first(stack) -> str:
    result = deploy(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    return serving(stack)


def test_deploy_publishes_only_on_loopback(stack, first):
    info = json.loads(podman("container", "inspect", NAME, check=True).stdout)[0]
    bindings = {port: hosts for port, hosts in info["HostConfig"]["PortBindings"].items() if hosts}  # EXPOSE alone: None
    port = stack.values["RALPH_WIGGUM_PORT"]
    assert bindings == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}
    assert "local-ai" in info["NetworkSettings"]["Networks"]


def test_syntax_error_is_rejected_before_anything_is_built(stack, first, tmp_path):
    source = copy_source(tmp_path)
    (source / "src/aistack/ralph_wiggum/api.py").write_text("def broken(:\n")
    result = deploy(stack, source)
    assert result.returncode == 1 and "syntax error in aistack/ralph_wiggum/api.py line 1" in result.stderr
    assert serving(stack) == first


def test_crash_at_start_restores_the_backup_container(stack, first, tmp_path):
    source = copy_source(tmp_path, "def serve(app, host, port, log_level='info'):\n    raise RuntimeError('injected: crash at start')")
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "the container exited with status 1" in result.stderr and f"release {first} restored and healthy" in result.stderr
    assert "RuntimeError: injected: crash at start" in result.stderr
    assert serving(stack) == first


def test_never_healthy_restores_the_backup_container(stack, first, tmp_path):
    source = copy_source(
        tmp_path,
        """
_real_serve = serve

def serve(app, host, port, log_level="info"):
    @app.middleware("http")
    async def _sick(request, call_next):  # injected: /health never turns 200
        if request.url.path == "/health":
            return JSONResponse({"status": "starting"}, status_code=503)
        return await call_next(request)

    _real_serve(app, host, port, log_level)
""",
    )
    result = deploy(stack, source, health_timeout="8")
    assert result.returncode == 1
    assert "/health not ready after 8 s (last: HTTP 503 (starting))" in result.stderr and "restored and healthy" in result.stderr
    assert serving(stack) == first
    entry = json.loads((stack.data_dir / "deploys.jsonl").read_text().splitlines()[-1])
    assert entry["runtime"] == "podman" and entry["restore_s"] is not None  # its figure: bench_lifecycle


def test_taken_port_restores_the_backup_container(stack, first, tmp_path):
    source = copy_source(
        tmp_path,
        """
import socket as _socket
_real_serve = serve

def serve(app, host, port, log_level="info"):
    squatter = _socket.socket()  # injected: something else holds the service's port
    squatter.bind((host, port))
    squatter.listen()
    _real_serve(app, host, port, log_level)
""",
    )
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "its port is taken" in result.stderr and "restored and healthy" in result.stderr
    assert serving(stack) == first


def test_good_deploy_then_rollback(stack, first, tmp_path):
    source = copy_source(tmp_path, "# a harmless change makes a new release")
    result = deploy(stack, source)
    assert result.returncode == 0, result.stdout + result.stderr
    second = serving(stack)
    assert second != first
    back = aistack(stack, "rollback", SERVICE, "--runtime", "podman", timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    assert serving(stack) == first
