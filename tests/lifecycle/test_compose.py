"""deploy/compose.yaml brings the whole stack up under podman-compose, configured by one .env.

Slow on a cold machine (base image, aider's wheels, four image builds); cached afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support import REPO_ROOT, StackEnv, free_port, missing

pytestmark = [pytest.mark.podman, pytest.mark.e2e, pytest.mark.timeout(1800)]  # a cold machine builds the base image and every image first

CONF = REPO_ROOT / "deploy" / "podman" / "containers.conf"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")
AIDER_PIP = REPO_ROOT / ".venv" / "aider" / "bin" / "pip"
SERVICES = ("llama-cpp", "aider-wrapper", "ralph-wiggum", "dashboard")


def run(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


def fill_wheels(cache: Path) -> None:
    """deploy/wheels: every wheel the four images install, built on the host (offline builds)."""
    from aistack.config import Settings
    from aistack.lifecycle.runtimes.podman import wheelhouse

    target = REPO_ROOT / "deploy" / "wheels"
    sources = [wheelhouse(Settings(_env_file=None, aistack_cache_dir=cache), REPO_ROOT / "pyproject.toml")]
    aider = cache / "wheels" / "aider-0.86.2"
    if not (aider / ".complete").exists():
        built = run(str(AIDER_PIP), "wheel", "-q", "--disable-pip-version-check", "-w", str(aider), "aider-chat==0.86.2")
        assert built.returncode == 0, built.stderr[-2000:]
        (aider / ".complete").touch()
    sources.append(aider)
    for source in sources:
        for wheel in source.glob("*.whl"):
            if not (target / wheel.name).exists():
                os.link(wheel, target / wheel.name)


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory):
    if not shutil.which("podman") or not PODMAN_COMPOSE.exists() or not AIDER_PIP.exists():
        missing("needs podman, podman-compose (pip) and .venv/aider (scripts/setup.sh --test)")
    os.environ.setdefault("CONTAINERS_CONF", str(CONF))
    existing = run("podman", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    if any(name.startswith("local-ai-") for name in existing):
        missing("containers of a local-ai stack exist already; not touching them")
    base = run(str(REPO_ROOT / "deploy/podman/base-image.sh"))
    if base.returncode != 0:
        missing(f"no base image: {base.stderr.strip()[-300:]}")

    root = tmp_path_factory.mktemp("compose")
    env = StackEnv(root)
    (root / "workspaces").mkdir()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aistack"
    env.set(
        AISTACK_DATA_DIR=root / "data",
        AISTACK_CACHE_DIR=cache,
        WORKSPACE_ROOT=root / "workspaces",
        RALPH_WIGGUM_API_KEY="compose-test-key",
        RALPH_WIGGUM_PORT=free_port(),
        DASHBOARD_PORT=free_port(),
        LLAMA_CPP_MODEL="smollm2-135m",
        LLAMA_CPP_CONTEXT_SIZE=1024,
        LLAMA_CPP_THREADS=1,
        STARTUP_TIMEOUT_SECONDS=120,
        BASE_IMAGE="localhost/aistack-base:bookworm",
        PIP_INSTALL_ARGS="--no-index",
        BUILD_ENGINE=0,
    )
    (root / "data").mkdir()
    child = dict(os.environ, AISTACK_ENV_FILE=str(env.env_file))
    for prepare in (["engine"], ["model"]):  # llama-server and the model, into the cache the container mounts
        done = run(sys.executable, "-m", "aistack", *prepare, env=child)
        assert done.returncode == 0, done.stderr[-2000:]
    fill_wheels(cache)
    compose = [str(PODMAN_COMPOSE), "--env-file", str(env.env_file), "-f", str(COMPOSE)]
    up = run(*compose, "up", "-d", "--build", env=child, timeout=1800)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield env
    finally:
        run(*compose, "down", env=child, timeout=300)


def wait_healthy(url: str, timeout: float = 180) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=3, headers={"X-API-Key": "compose-test-key"})  # the details need the key
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(1)


def test_compose_stack_comes_up_healthy_and_services_find_each_other_by_name(compose_stack):
    ralph = wait_healthy(compose_stack.url("ralph-wiggum") + "/health")
    assert ralph.status_code == 200
    backend = ralph.json()["backends"][0]
    assert backend["url"] == "http://aider-wrapper:8099" and backend["reachable"] is True
    assert wait_healthy(compose_stack.url("dashboard") + "/health").status_code == 200

    logs = {}
    for name in SERVICES:
        out = run("podman", "logs", f"local-ai-{name}")
        logs[name] = out.stdout + out.stderr
    assert "✓ llama-cpp is reachable at http://llama-cpp:8080" in logs["aider-wrapper"]
    assert "✓ aider-wrapper is reachable at http://aider-wrapper:8099" in logs["ralph-wiggum"]


def test_only_user_facing_ports_are_published_and_only_on_loopback(compose_stack):
    published = {}
    for name in SERVICES:
        info = json.loads(run("podman", "container", "inspect", f"local-ai-{name}").stdout)[0]
        assert info["State"]["Running"], name
        assert "local-ai" in info["NetworkSettings"]["Networks"]
        published[name] = {p: h for p, h in (info["HostConfig"]["PortBindings"] or {}).items() if h}
    assert published["llama-cpp"] == {} and published["aider-wrapper"] == {}
    for name in ("ralph-wiggum", "dashboard"):
        port = compose_stack.values[f"{name.upper().replace('-', '_')}_PORT"]
        assert published[name] == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}
