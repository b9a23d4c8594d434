"""Test helpers shared by every suite: free ports, git repos, .env files, real service processes."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from aistack.config import ENV_FILE_VARIABLE, Settings
from aistack.procgroup import Warden

REPO_ROOT = Path(__file__).resolve().parents[1]
AISTACK = [sys.executable, "-m", "aistack"]


# `make test` (and so CI) sets this: there, a suite whose dependency is missing fails instead of
# skipping, so a green run always ran the podman, compose and browser suites.
REQUIRE_ALL_SUITES = os.environ.get("AISTACK_TESTS_REQUIRE_ALL") == "1"


def wait_until(condition, timeout: float = 15, interval: float = 0.05) -> bool:
    """Whether `condition()` came true within `timeout` seconds (it is asked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def missing(why: str) -> NoReturn:
    """A suite's dependency is missing: skipped on a developer's machine, a failure under `make test`."""
    if REQUIRE_ALL_SUITES:
        pytest.fail(f"{why} — every suite must run under make test (AISTACK_TESTS_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_git_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A repository with one commit holding `files` (default: a README)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "test")
    for name, text in (files or {"README.md": "# sample\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@dataclass
class StackEnv:
    """An isolated stack configuration: its own data dir, workspace root, ports and .env file.
    The cache dir (models, llama-server builds) is shared with the machine on purpose."""

    root: Path
    values: dict[str, str] = field(default_factory=dict)

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    @property
    def workspace_root(self) -> Path:
        return Path(self.values["WORKSPACE_ROOT"])

    @property
    def data_dir(self) -> Path:
        return Path(self.values["AISTACK_DATA_DIR"])

    def set(self, **values: object) -> StackEnv:
        for key, value in values.items():
            self.values[key.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))
        return self

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.values[service.upper().replace('-', '_') + '_PORT']}"


def new_stack_env(root: Path) -> StackEnv:
    env = StackEnv(root)
    (root / "workspaces").mkdir(parents=True, exist_ok=True)
    return env.set(
        AISTACK_DATA_DIR=root / "data",
        WORKSPACE_ROOT=root / "workspaces",
        LLAMA_CPP_HOST="127.0.0.1",
        AIDER_WRAPPER_HOST="127.0.0.1",
        RALPH_WIGGUM_HOST="127.0.0.1",
        DASHBOARD_HOST="127.0.0.1",
        LLAMA_CPP_PORT=free_port(),
        AIDER_WRAPPER_PORT=free_port(),
        RALPH_WIGGUM_PORT=free_port(),
        DASHBOARD_PORT=free_port(),
        STARTUP_DEPENDENCY_CHECK=False,
    )


# Every variable the stack reads. Tests never take them from the caller (a LLAMA_CPP_SERVER_BIN
# or a RALPH_WIGGUM_API_KEY of the person running the suite), except where the machine keeps its
# built llama-server and assembled models, which only says where shared files are.
STACK_VARIABLES = frozenset({name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE}) - {"AISTACK_CACHE_DIR"}


def caller_free_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}


def child_env(env: StackEnv, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process: only the .env file configures it, not the caller's variables."""
    base = caller_free_environ()
    base.update({"AISTACK_ENV_FILE": str(env.env_file), "PYTHONUNBUFFERED": "1"})
    base.update(extra or {})
    return base


class ServiceProcess:
    """`aistack serve NAME` as a real child process in its own process group."""

    def __init__(self, name: str, env: StackEnv, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.name, self.env = name, env
        self.port = (extra_env or {}).get(name.upper().replace("-", "_") + "_PORT")  # one of several of a kind
        self.log_path = env.root / f"{name}.{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*AISTACK, "serve", name, *args],
            env=child_env(env, extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else self.env.url(self.name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60, path: str = "/health") -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.proc.returncode


# --- what a process holds (Linux /proc) ------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS) of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} has no VmRSS (a zombie?)")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def serving_llama(tmp_path_factory: pytest.TempPathFactory, values: dict[str, str]) -> Iterator[StackEnv]:
    """A real llama-cpp service (`aistack serve llama-cpp`, configured with `values`) for a fixture
    to yield: the stack env whose .env points at it; stopped when the fixture ends."""
    env = new_stack_env(tmp_path_factory.mktemp("llama")).set(**values)
    proc = ServiceProcess("llama-cpp", env)
    try:
        proc.wait_healthy(timeout=300)
        yield env
    finally:
        proc.stop()


@dataclass(frozen=True)
class ProcStat:
    """A process as /proc/<pid>/stat shows it."""

    pid: int
    state: str  # R, S, D, Z (a zombie: ended, not yet reaped) ...
    ppid: int
    pgid: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]))


def live_processes() -> list[ProcStat]:
    """Every process on the machine but the zombies."""
    found = (proc_stat(int(entry.name)) for entry in Path("/proc").glob("[0-9]*"))
    return [stat for stat in found if stat is not None and stat.state != "Z"]


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


def group_alive(pgid: int) -> bool:
    """Whether the process group has a process, a zombie included (what kill(2) sees)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int) -> list[int]:
    return [stat.pid for stat in live_processes() if stat.pgid == pgid]


def children(pid: int) -> list[int]:
    return [stat.pid for stat in live_processes() if stat.ppid == pid]


def descendants(pid: int) -> list[int]:
    """Live processes below `pid`, however deep, but for its warden (the one helper a service
    keeps for its whole life: procgroup.Warden)."""
    parents: dict[int, list[int]] = {}
    for stat in live_processes():
        if not is_warden(stat.pid):
            parents.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [pid]
    while todo:
        below = parents.get(todo.pop(), [])
        found += below
        todo += below
    return found


def is_warden(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [b"/bin/sh", b"-c", Warden.SCRIPT.encode()]
    except OSError:
        return False


def recorded_groups(env: StackEnv) -> set[int]:
    """The process groups an orchestrator on SQLite has recorded as running (`process_groups`).
    A group is recorded only after `start_in_group` returned, so its warden had been told of it:
    a test that kills the orchestrator waits for this, not merely for the group's processes."""
    path = env.data_dir / "aistack.db"
    if not path.exists():
        return set()
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        return {pgid for (pgid,) in db.execute("SELECT pgid FROM process_groups")}


def warden_of(pid: int) -> int:
    """The process that ends `pid`'s children when it dies (procgroup.Warden)."""
    (warden,) = [child for child in children(pid) if is_warden(child)]
    return warden


def processes_in(cwd: Path) -> list[int]:
    """Live processes whose working directory is `cwd` (aider runs in the workspace)."""
    found = []
    for stat in live_processes():
        try:
            if Path(os.readlink(f"/proc/{stat.pid}/cwd")) == cwd.resolve():
                found.append(stat.pid)
        except OSError:
            continue
    return found
