"""`aistack up / status / down / logs` with the process runtime, on real services."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from lifecycle_support import aistack, pid_files, table_rows

from aistack.procgroup import proc_starttime
from aistack.services import SERVICES, installed_source_root
from support import AISTACK, StackEnv, child_env, wait_until


def healthy(env: StackEnv, service: str) -> bool:
    try:
        return httpx.get(env.url(service) + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(env: StackEnv, service: str) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(env.url(service).rsplit(":", 1)[1]))) != 0


def llama_server_pids(env: StackEnv) -> list[str]:
    pattern = f"llama-server .*--port {env.values['LLAMA_CPP_PORT']}"
    return subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()


def open_files(pid: int) -> set[Path]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            found.add(Path(os.readlink(fd)))
        except OSError:
            continue
    return found


def read_until(proc: subprocess.Popen, marks: tuple[str, ...], timeout: float) -> str:
    """What `proc` printed, read until one of `marks` shows up (or the time is up)."""
    os.set_blocking(proc.stdout.fileno(), False)
    text, deadline = "", time.monotonic() + timeout
    while not any(mark in text for mark in marks) and time.monotonic() < deadline:
        select.select([proc.stdout], [], [], 0.2)
        text += proc.stdout.read() or ""
    return text


def in_build(service: str) -> bool:
    return SERVICES[service].present_in(installed_source_root())


@pytest.mark.e2e  # starts the real llama-server
def test_up_status_logs_down(stack):
    up = aistack(stack, "up", "llama-cpp", "ralph-wiggum", "--timeout", "120")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "llama-cpp" in up.stdout and "ralph-wiggum" in up.stdout and "healthy" in up.stdout
    assert healthy(stack, "llama-cpp") and healthy(stack, "ralph-wiggum")
    records = {p.name.split(".")[0]: json.loads(p.read_text()) for p in pid_files(stack)}
    assert set(records) == {"llama-cpp", "ralph-wiggum"}
    assert all(proc_starttime(r["pid"]) == r["starttime"] for r in records.values())

    again = aistack(stack, "up", "llama-cpp", "ralph-wiggum")  # idempotent: nothing restarted
    assert again.returncode == 0 and again.stdout.count("already running") == 2
    assert {p.name.split(".")[0]: json.loads(p.read_text())["pid"] for p in pid_files(stack)} == {k: v["pid"] for k, v in records.items()}

    status = aistack(stack, "status")
    lines = table_rows(status.stdout)
    assert str(records["llama-cpp"]["pid"]) in lines["llama-cpp"] and " healthy " in lines["llama-cpp"]
    # ralph-wiggum serves, degraded while its aider backend is not running
    ralph = lines["ralph-wiggum"]
    assert str(records["ralph-wiggum"]["pid"]) in ralph
    assert " healthy " in ralph or "HTTP 200 (degraded: backend unreachable: aider)" in ralph
    # aider-wrapper (and the dashboard, where it is built) are not running: status is not all-healthy
    assert status.returncode == 1
    if in_build("aider-wrapper"):
        assert "down" in lines["aider-wrapper"]

    assert llama_server_pids(stack)  # the grandchild runs (checked again after `down`)

    logs = aistack(stack, "logs", "ralph-wiggum", "-n", "200")
    assert logs.returncode == 0 and "starting ralph-wiggum release installed" in logs.stdout

    down = aistack(stack, "down", "--timeout", "10")
    assert down.returncode == 0
    assert "stopped ralph-wiggum" in down.stdout and "stopped llama-cpp" in down.stdout
    assert down.stdout.index("stopped ralph-wiggum") < down.stdout.index("stopped llama-cpp")  # reverse order
    assert pid_files(stack) == []
    for record in records.values():
        assert proc_starttime(record["pid"]) is None
    assert port_free(stack, "llama-cpp") and port_free(stack, "ralph-wiggum")
    # llama-server, the grandchild, went with its process group
    assert llama_server_pids(stack) == []


@pytest.mark.e2e  # starts the real llama-server
def test_a_stale_pid_file_never_touches_another_process(stack):
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        run_dir = stack.data_dir / "run"
        run_dir.mkdir(parents=True)
        # The pid now belongs to `sleep`; the recorded start time is that of the process that had it before.
        (run_dir / "llama-cpp.pid.json").write_text(
            json.dumps(
                {
                    "service": "llama-cpp",
                    "pid": stranger.pid,
                    "starttime": proc_starttime(stranger.pid) - 1,
                    "cmdline": ["python", "-m", "aistack", "serve", "llama-cpp"],
                    "release": "installed",
                    "started_at": time.time() - 100,
                    "log_path": "",
                    "log_offset": 0,
                }
            )
        )
        status = aistack(stack, "status")
        assert status.returncode == 1
        row = table_rows(status.stdout)["llama-cpp"]
        assert str(stranger.pid) not in row and "down" in row

        (run_dir / "llama-cpp.pid.json").write_text(
            json.dumps(
                {
                    "service": "llama-cpp",
                    "pid": stranger.pid,
                    "starttime": proc_starttime(stranger.pid) + 7,
                    "cmdline": [],
                    "release": "installed",
                    "started_at": 0,
                    "log_path": "",
                    "log_offset": 0,
                }
            )
        )
        down = aistack(stack, "down")
        assert down.returncode == 0 and "llama-cpp was not running" in down.stdout
        assert stranger.poll() is None  # still alive: never signalled

        up = aistack(stack, "up", "llama-cpp", "--timeout", "120")
        assert up.returncode == 0, up.stdout + up.stderr
        record = json.loads((run_dir / "llama-cpp.pid.json").read_text())
        assert record["pid"] != stranger.pid and healthy(stack, "llama-cpp")
    finally:
        stranger.kill()
        stranger.wait()


def test_up_refuses_a_port_taken_by_another_program(stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(stack.values["LLAMA_CPP_PORT"])))
        s.listen()
        up = aistack(stack, "up", "llama-cpp")
    assert up.returncode == 1
    assert f"llama-cpp did not start: port {stack.values['LLAMA_CPP_PORT']} is in use by another program" in up.stderr
    assert pid_files(stack) == []


@pytest.mark.parametrize(("service", "dependency"), [("aider-wrapper", "llama-cpp"), ("ralph-wiggum", "aider-wrapper")])
def test_up_with_an_unreachable_dependency_and_fail_fast(stack, service, dependency):
    if not in_build(service):
        pytest.skip(f"{service} is not in this build")
    stack.set(STARTUP_DEPENDENCY_CHECK=True, STARTUP_FAIL_FAST=True, STARTUP_TIMEOUT_SECONDS=3)
    started = time.monotonic()
    up = aistack(stack, "up", service)
    assert up.returncode == 1
    assert time.monotonic() - started < 60  # failed fast: not the service's whole start timeout
    assert f"{service} did not start" in up.stderr
    # the service's own last log lines say why
    assert f"✗ {dependency} at {stack.url(dependency)} not reachable after 3 s" in up.stderr
    assert pid_files(stack) == [] and port_free(stack, service)


@pytest.mark.parametrize(("service", "dependency"), [("aider-wrapper", "llama-cpp"), ("ralph-wiggum", "aider-wrapper")])
def test_up_with_an_unreachable_dependency_without_fail_fast(stack, service, dependency):
    if not in_build(service):
        pytest.skip(f"{service} is not in this build")
    stack.set(STARTUP_DEPENDENCY_CHECK=True, STARTUP_FAIL_FAST=False, STARTUP_TIMEOUT_SECONDS=3)
    up = aistack(stack, "up", service)
    assert up.returncode == 0, up.stdout + up.stderr
    assert healthy(stack, service)
    log = aistack(stack, "logs", service).stdout
    assert f"⚠ {dependency} at {stack.url(dependency)} not reachable after 3 s" in log and "— continuing" in log
    body = httpx.get(stack.url(service) + "/health", timeout=5).json()
    assert body.get("status") == "degraded", body


@pytest.mark.e2e  # starts the real llama-server
def test_a_failed_start_stops_what_up_started(stack):
    """ralph-wiggum cannot reach aider-wrapper (not started) and fails fast: llama-cpp, which this `up`
    started first, is stopped again — nothing is left half-started."""
    stack.set(STARTUP_DEPENDENCY_CHECK=True, STARTUP_FAIL_FAST=True, STARTUP_TIMEOUT_SECONDS=2)
    up = aistack(stack, "up", "llama-cpp", "ralph-wiggum", "--timeout", "120")
    assert up.returncode == 1
    assert "ralph-wiggum did not start" in up.stderr and "stopped llama-cpp" in up.stderr
    assert "last lines of ralph-wiggum's log" in up.stderr
    assert pid_files(stack) == [] and port_free(stack, "llama-cpp")


def test_down_escalates_to_sigkill(stack):
    """A service that ignores SIGTERM is killed after --timeout."""
    up = aistack(stack, "up", "ralph-wiggum")
    assert up.returncode == 0, up.stdout + up.stderr
    record = json.loads((stack.data_dir / "run" / "ralph-wiggum.pid.json").read_text())
    os.kill(record["pid"], signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    down = aistack(stack, "down", "ralph-wiggum", "--timeout", "1")
    assert down.returncode == 0 and "stopped ralph-wiggum" in down.stdout
    assert 1 <= time.monotonic() - started < 30  # SIGKILL after the 1 s --timeout
    assert proc_starttime(record["pid"]) is None


@pytest.mark.e2e  # starts the real llama-server
def test_whole_stack_up_status_all_healthy_then_down(stack):
    stack.set(STARTUP_DEPENDENCY_CHECK=True, STARTUP_TIMEOUT_SECONDS=30)  # the real order matters now
    up = aistack(stack, "up", "--timeout", "120", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    present = [name for name in SERVICES if in_build(name)]
    assert all(healthy(stack, name) for name in present)

    status = aistack(stack, "status")
    assert status.returncode == 0, status.stdout  # every service in this build is healthy
    rows = table_rows(status.stdout)
    assert all(rows[name].split()[2] == "healthy" for name in present)

    # each service found its dependency by the URL from the .env
    for name in present[1:]:
        dependency = present[present.index(name) - 1]
        log = aistack(stack, "logs", name, "-n", "400").stdout
        assert f"✓ {dependency} is reachable at {stack.url(dependency)}" in log

    log_path = stack.data_dir / "logs" / f"{present[-1]}.log"
    follow = subprocess.Popen(
        [*AISTACK, "logs", present[-1], "-f", "-n", "0"], env=child_env(stack), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert wait_until(lambda: log_path in open_files(follow.pid), 30), "logs -f never opened the log"
        assert aistack(stack, "down").returncode == 0
        followed = read_until(follow, ("Shutting down", "Finished server process"), 30)
    finally:
        follow.terminate()
        follow.wait(10)
    assert "Shutting down" in followed or "Finished server process" in followed, followed
    assert pid_files(stack) == []


def test_up_names_the_signal_that_killed_llama_server(stack):
    """A llama-server that crashes on this CPU (as llama.cpp's AMX kernels do on some machines)
    is caught by its self-test, and `up` says how it died, not "status 139"."""
    crash = stack.root / "llama-server"
    crash.write_text("#!/bin/sh\necho 'llama_model_loader: loading model'\nkill -SEGV $$\n")
    crash.chmod(0o755)
    model = stack.root / "tiny.gguf"  # the self-test needs a model file; this binary reads none
    model.write_bytes(b"GGUF\x03\x00\x00\x00")
    stack.set(LLAMA_CPP_SERVER_BIN=crash, LLAMA_CPP_MODEL_FILE=model, AISTACK_CACHE_DIR=stack.root / "cache")
    up = aistack(stack, "up", "llama-cpp", "--timeout", "60")
    assert up.returncode == 1
    message = " ".join(up.stderr.split())  # rich folds long lines
    assert "llama-cpp did not start:" in message
    assert "was killed by SIGSEGV (signal 11) while loading the model in its self-test" in message
    assert "it is left as it is" in message and "Traceback" not in up.stderr
    assert crash.read_text().endswith("kill -SEGV $$\n")  # reported, never replaced
    assert pid_files(stack) == []
