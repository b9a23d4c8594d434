"""`aistack deploy / rollback` (process runtime) with faults injected into a copy of the source tree.

Every fault must end with the previous release serving and healthy, and a message that says why.
One stack (real ralph-wiggum) is shared by the module: each test starts from a healthy deployed
release and must leave one behind — which is exactly what it asserts.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import httpx
import pytest
from lifecycle_support import aistack

from aistack.services import installed_source_root
from support import new_stack_env

SERVICE = "ralph-wiggum"
HEALTH_TIMEOUT = "6"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = new_stack_env(tmp_path_factory.mktemp("deploy"))
    env.set(STARTUP_TIMEOUT_SECONDS=3)
    yield env
    aistack(env, "down", "--timeout", "5")


def copy_source(dest: Path) -> Path:
    """A project tree like the developer's: `dest/src/aistack`."""
    shutil.copytree(installed_source_root() / "aistack", dest / "src" / "aistack", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def running(stack) -> dict:
    return json.loads((stack.data_dir / "run" / f"{SERVICE}.pid.json").read_text())


def serving_healthy(stack) -> bool:
    return httpx.get(stack.url(SERVICE) + "/health", timeout=5).status_code == 200


def deploy(stack, source: Path):
    return aistack(stack, "deploy", SERVICE, "--source", str(source), "--health-timeout", HEALTH_TIMEOUT)


@pytest.fixture(scope="module")
def base_release(stack, tmp_path_factory) -> str:
    """A first good release, deployed and serving."""
    result = deploy(stack, copy_source(tmp_path_factory.mktemp("good")))
    assert result.returncode == 0, result.stdout + result.stderr
    return running(stack)["release"]


def append(path: Path, text: str) -> None:
    path.chmod(0o644)
    path.write_text(path.read_text() + "\n" + text + "\n")


def assert_previous_serves(stack, release: str, pid: int | None = None) -> None:
    now = running(stack)
    assert now["release"] == release
    if pid is not None:
        assert now["pid"] == pid  # untouched, not even restarted
    assert serving_healthy(stack)


def last_history(stack) -> dict:
    return json.loads((stack.data_dir / "deploys.jsonl").read_text().splitlines()[-1])


def test_good_deploy_then_history(stack, base_release, tmp_path):
    assert serving_healthy(stack)
    assert (stack.data_dir / "releases" / "process" / SERVICE / base_release / "aistack" / "__init__.py").is_file()
    history = aistack(stack, "deploy", "--history")
    assert history.returncode == 0 and base_release in history.stdout and "deployed" in history.stdout


def test_syntax_error_is_rejected_at_validation(stack, base_release, tmp_path):
    before = running(stack)
    source = copy_source(tmp_path)
    append(source / "src/aistack/ralph_wiggum/api.py", "def broken(:")
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "rejected" in result.stderr and "syntax error in aistack/ralph_wiggum/api.py line" in result.stderr
    assert_previous_serves(stack, before["release"], pid=before["pid"])
    assert last_history(stack)["stage"] == "validate"


def test_a_rejected_deploy_of_a_service_that_is_not_running_says_nothing_serves(tmp_path):
    idle = new_stack_env(tmp_path / "idle")
    source = copy_source(tmp_path / "source")
    append(source / "src/aistack/ralph_wiggum/api.py", "def broken(:")
    result = deploy(idle, source)
    assert result.returncode == 1 and "rejected" in result.stderr and f"{SERVICE} is not running" in result.stderr
    entry = last_history(idle)
    assert entry["outcome"] == "rejected" and entry["serving"] is None and entry["previous"] == "installed"


def test_crash_at_import_is_rejected_at_validation(stack, base_release, tmp_path):
    before = running(stack)
    source = copy_source(tmp_path)
    append(source / "src/aistack/ralph_wiggum/app.py", "raise RuntimeError('injected: broken at import')")
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "importing aistack.ralph_wiggum.app failed: RuntimeError: injected: broken at import" in result.stderr
    assert_previous_serves(stack, before["release"], pid=before["pid"])


def test_invalid_env_is_rejected_by_the_new_code(stack, base_release, tmp_path):
    """The new release's Settings refuse the .env (here: it demands a setting the .env lacks)."""
    before = running(stack)
    source = copy_source(tmp_path)
    config = source / "src/aistack/config.py"
    config.write_text(
        config.read_text().replace(
            'log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$"',
            'log_level: str = Field(default="info", pattern=r"^(debug|warning|error)$"',
        )
    )
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "the .env does not validate: invalid setting LOG_LEVEL='info'" in result.stderr
    assert_previous_serves(stack, before["release"], pid=before["pid"])


def test_crash_at_start_rolls_back(stack, base_release, tmp_path):
    before = running(stack)
    source = copy_source(tmp_path)
    append(
        source / "src/aistack/web.py", "def serve(app, host, port, log_level='info'):\n    raise RuntimeError('injected: crash at start')"
    )
    result = deploy(stack, source)
    assert result.returncode == 1
    assert "rolled back" in result.stderr and "exited with status 1" in result.stderr
    assert f"release {before['release']} restored and healthy" in result.stderr
    assert "RuntimeError: injected: crash at start" in result.stderr  # the new release's last log lines
    assert_previous_serves(stack, before["release"])
    entry = last_history(stack)
    assert entry["outcome"] == "rolled back" and entry["stage"] == "start" and entry["serving"] == before["release"]
    # the failed release is not kept
    assert not (stack.data_dir / "releases" / "process" / SERVICE / entry["version"]).exists()


def test_never_healthy_rolls_back(stack, base_release, tmp_path):
    before = running(stack)
    source = copy_source(tmp_path)
    append(
        source / "src/aistack/web.py",
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
    result = deploy(stack, source)
    assert result.returncode == 1
    assert f"/health not ready after {HEALTH_TIMEOUT} s (last: HTTP 503 (starting))" in result.stderr
    assert f"release {before['release']} restored and healthy" in result.stderr
    assert_previous_serves(stack, before["release"])
    entry = last_history(stack)
    assert entry["stage"] == "verify" and entry["restore_s"] is not None  # its figure: bench_lifecycle


def test_taken_port_rolls_back(stack, base_release, tmp_path):
    before = running(stack)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        source = copy_source(tmp_path)
        append(
            source / "src/aistack/web.py",
            f"""
_real_serve = serve

def serve(app, host, port, log_level="info"):
    _real_serve(app, host, {taken}, log_level)  # injected: binds a port another program holds
""",
        )
        result = deploy(stack, source)
    assert result.returncode == 1
    assert "its port is taken" in result.stderr and "address already in use" in result.stderr.lower()
    assert_previous_serves(stack, before["release"])


def test_good_deploy_then_rollback(stack, base_release, tmp_path):
    before = running(stack)
    source = copy_source(tmp_path)
    append(source / "src/aistack/ralph_wiggum/app.py", "# a harmless change makes a new release")
    result = deploy(stack, source)
    assert result.returncode == 0, result.stdout + result.stderr
    new = running(stack)["release"]
    assert new != before["release"] and serving_healthy(stack)

    back = aistack(stack, "rollback", SERVICE)
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"back on release {before['release']}" in back.stdout
    assert_previous_serves(stack, before["release"])
    history = aistack(stack, "deploy", "--history")
    assert "rollback" in history.stdout and new in history.stdout
