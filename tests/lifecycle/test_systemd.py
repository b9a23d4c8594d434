"""`aistack systemd install|uninstall`: the units pass `systemd-analyze verify`, follow services.py's
dependencies, and their commands start a real service and wait for its health. systemd is not PID 1
here, so no unit is started by systemd itself (docs/deployment.md)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lifecycle_support import aistack

from aistack import services
from aistack.lifecycle.systemd import MARKER, TARGET, unit_name
from support import StackEnv, child_env, missing, new_stack_env

UNITS = [unit_name(name) for name in services.NAMES] + [TARGET]


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def snapshot(directory: Path) -> dict[str, str]:
    """Every entry under `directory`: a file's text, a link's target, a directory as such."""
    found = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        found[key] = f"-> {os.readlink(path)}" if path.is_symlink() else (path.read_text() if path.is_file() else "dir")
    return found


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path, user: bool):
    """With the .env in a directory whose name systemd would misread unquoted or unescaped."""
    analyze = shutil.which("systemd-analyze") or missing("systemd-analyze is not installed (Debian's systemd package)")
    stack_env = new_stack_env(tmp_path / "my stack, 100% $HOME")
    unit_dir = tmp_path / "units"
    result = aistack(stack_env, "systemd", "install", "--unit-dir", str(unit_dir), *(["--user"] if user else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in unit_dir.iterdir()) == sorted(UNITS)
    runtime = tmp_path / "runtime"  # the user manager's runtime directory, which no session made here
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(
        [analyze, *(["--user"] if user else []), "verify", *(str(unit_dir / name) for name in UNITS)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )  # fmt: skip
    # verify exits 0 over an unknown key or a bad value (it only warns): any word from it is a failure
    assert verify.returncode == 0 and not verify.stderr.strip() and not verify.stdout.strip(), verify.stdout + verify.stderr


def test_each_unit_runs_its_service_after_what_it_calls(stack_env: StackEnv, tmp_path: Path):
    result = aistack(stack_env, "systemd", "install", "--unit-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    for name, service in services.SERVICES.items():
        unit = read_unit(tmp_path / unit_name(name))
        needs = {unit_name(dep) for dep in service.depends_on}
        assert set(unit["Unit"].get("Requires", "").split()) == needs, name
        assert set(unit["Unit"]["After"].split()) == needs | {"network-online.target"}, name
        run = unit["Service"]
        assert shlex.split(run["ExecStart"]) == [sys.executable, *service.command]
        assert shlex.split(run["ExecStartPost"])[3:5] == ["preflight", name]  # ready only once its /health says so
        assert run["EnvironmentFile"] == f"-{stack_env.env_file}" and run["Restart"] == "on-failure"
        assert run["Environment"] == f"AISTACK_ENV_FILE={stack_env.env_file}"
    target = read_unit(tmp_path / TARGET)
    assert target["Unit"]["Wants"].split() == [unit_name(name) for name in services.NAMES]
    assert target["Install"]["WantedBy"] == "multi-user.target"


def test_the_commands_of_a_unit_start_its_service_and_wait_until_it_is_ready(stack_env: StackEnv, tmp_path: Path):
    """What systemd would run, run here: ExecStart serves, ExecStartPost returns 0 once /health is
    200; for a service that never comes up, ExecStartPost fails, and so does the unit's start."""
    stack_env.set(STARTUP_DEPENDENCY_CHECK=False)  # the dashboard alone: its API is not needed to serve
    assert aistack(stack_env, "systemd", "install", "--user", "--unit-dir", str(tmp_path)).returncode == 0
    run = read_unit(tmp_path / unit_name("dashboard"))["Service"]
    env = child_env(stack_env)  # the unit's Environment= and EnvironmentFile= give the same file
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(shlex.split(run["ExecStart"]), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        post = subprocess.run(shlex.split(run["ExecStartPost"]), env=env, capture_output=True, text=True, timeout=180)
        assert post.returncode == 0, post.stdout + post.stderr + (tmp_path / "dashboard.log").read_text()
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
    never = read_unit(tmp_path / unit_name("llama-cpp"))["Service"]["ExecStartPost"]
    words = shlex.split(never)
    words[words.index("--wait") + 1] = "2"
    post = subprocess.run(words, env=env, capture_output=True, text=True, timeout=60)
    assert post.returncode == 1 and "llama-cpp" in post.stdout


def test_uninstall_removes_exactly_what_install_wrote(stack_env: StackEnv, tmp_path: Path):
    unit_dir = tmp_path / "units"
    (unit_dir / "multi-user.target.wants").mkdir(parents=True)
    (unit_dir / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    (unit_dir / "multi-user.target.wants" / "other.service").symlink_to(unit_dir / "other.service")
    before = snapshot(unit_dir)
    assert aistack(stack_env, "systemd", "install", "--unit-dir", str(unit_dir)).returncode == 0
    (unit_dir / "multi-user.target.wants" / TARGET).symlink_to(unit_dir / TARGET)  # as `systemctl enable` links it
    (unit_dir / "aistack.target.wants").mkdir()
    (unit_dir / "aistack.target.wants" / unit_name("dashboard")).symlink_to(unit_dir / unit_name("dashboard"))
    result = aistack(stack_env, "systemd", "uninstall", "--unit-dir", str(unit_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(unit_dir) == before
    again = aistack(stack_env, "systemd", "uninstall", "--unit-dir", str(unit_dir))
    assert again.returncode == 0 and "no aistack units" in again.stdout


def test_a_file_of_the_same_name_that_is_not_ours_is_never_touched(stack_env: StackEnv, tmp_path: Path):
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    own = unit_dir / unit_name("dashboard")
    own.write_text("[Service]\nExecStart=/usr/local/bin/my-dashboard\n")
    result = aistack(stack_env, "systemd", "install", "--unit-dir", str(unit_dir))
    assert result.returncode == 1 and str(own) in result.stderr
    assert [p.name for p in unit_dir.iterdir()] == [own.name]  # refused before writing anything
    assert aistack(stack_env, "systemd", "uninstall", "--unit-dir", str(unit_dir)).returncode == 0
    assert own.read_text().startswith("[Service]") and not own.read_text().startswith(MARKER)
