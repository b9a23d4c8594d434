"""The process runtime: each service is `python -m aistack serve NAME` in its own process group,
started in the background with a pid file and a log file under the data dir.

A pid file records the process's start time (from /proc), so a pid that the kernel has since
handed to another program is recognised as stale and never signalled.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from aistack import health
from aistack.config import Settings
from aistack.files import atomic_write
from aistack.lifecycle.releases import INSTALLED, Releases
from aistack.lifecycle.runtimes import Say, Swap, exit_reason, wait_healthy
from aistack.procgroup import group_exists, kill_group, proc_starttime
from aistack.services import get


@dataclass
class ProcessRecord:
    """What a pid file holds."""

    service: str
    pid: int
    starttime: int  # clock ticks after boot (/proc/PID/stat field 22): pid + starttime name one process
    cmdline: list[str]
    release: str
    started_at: float  # wall clock, for uptime
    log_path: str
    log_offset: int  # where this run's output starts in the log

    def uptime(self) -> float:
        return max(0.0, time.time() - self.started_at)


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port (a bind attempt, as the service would make)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


class ProcessRuntime:
    name = "process"

    def __init__(self, settings: Settings, say: Say = lambda _: None):
        self.settings = settings
        self.say = say
        self.run_dir = settings.aistack_data_dir / "run"
        self.logs_dir = settings.logs_dir
        self.releases = Releases(settings, "process")
        self._children: dict[int, subprocess.Popen] = {}  # processes this command started, to reap them

    # --- pid files --------------------------------------------------------------------------------

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid.json"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    def _read(self, service: str) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads(self.pid_file(service).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_alive(self, record: ProcessRecord) -> bool:
        """The recorded process still runs — the same process, not a later one with the same pid."""
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return False
        return proc_starttime(record.pid) == record.starttime

    def running(self, service: str, prune: bool = True) -> ProcessRecord | None:
        """The live process of `service`, or None; nothing is signalled. A stale pid file is removed
        only with `prune` — readers outside the `exclusive()` lock (status, the dashboard) pass
        False, so they can never delete a pid file that `up` or `deploy` has just written."""
        record = self._read(service)
        if record is None or not self.is_alive(record):
            if prune:
                self.pid_file(service).unlink(missing_ok=True)
            return None
        return record

    def exit_code(self, record: ProcessRecord) -> int | None:
        child = self._children.get(record.pid)
        return child.poll() if child is not None else None

    # --- start / stop -----------------------------------------------------------------------------

    def start(self, service: str, release: str = INSTALLED) -> ProcessRecord:
        """Start `release` of `service` in the background (does not wait for health)."""
        svc = get(service)
        release_dir = self.releases.dir(service, release)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if release_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(release_dir), os.environ.get("PYTHONPATH")) if p)
        cmd = [sys.executable, *svc.command]
        log_path = self.log_file(service)
        with log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service} release {release}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=release_dir or self.settings.aistack_data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `stop` reaches its children too
            )
        self._children[proc.pid] = proc
        starttime = proc_starttime(proc.pid) or 0
        record = ProcessRecord(service, proc.pid, starttime, cmd, release, time.time(), str(log_path), offset)
        atomic_write(self.pid_file(service), json.dumps(asdict(record)))
        return record

    def stop(self, service: str, timeout: float = 10.0) -> ProcessRecord | None:
        """SIGTERM to the service's process group, SIGKILL after `timeout`. Returns what was stopped."""
        record = self.running(service)
        if record is None:
            return None
        self._signal(record, signal.SIGTERM)
        if not self._wait_group_gone(record, timeout):
            self._signal(record, signal.SIGKILL)
            self._wait_group_gone(record, 5.0)
        self.pid_file(service).unlink(missing_ok=True)
        return record

    def _signal(self, record: ProcessRecord, sig: int) -> None:
        if self.is_alive(record) or group_exists(record.pid):
            kill_group(record.pid, sig)  # pgid == pid: it was started in a new session

    def _wait_group_gone(self, record: ProcessRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = self._children.get(record.pid)
            if child is not None:
                child.poll()  # reap it, or its zombie keeps the group alive
            if not self.is_alive(record) and not group_exists(record.pid):
                return True
            time.sleep(0.05)
        return False

    # --- health and logs --------------------------------------------------------------------------

    def wait_healthy(self, record: ProcessRecord, timeout: float) -> health.Health:
        """Poll /health until it answers 200, the process exits, or `timeout` passes."""

        def ended() -> health.Health | None:
            if self.is_alive(record):
                return None
            tail = self.log_tail(record.service, 40, since=record.log_offset)
            return health.Health("exited", exit_reason(self.exit_code(record), tail))

        return wait_healthy(self.settings.health_url(record.service), timeout, ended, interval=0.2)

    def log_tail(self, service: str, lines: int = 20, since: int = 0) -> str:
        path = self.log_file(service)
        try:
            with path.open("rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- the Runtime protocol (deploy / rollback) ----------------------------------------------------

    def unavailable(self) -> str | None:
        return None  # a process can always be started

    def current(self, service: str) -> str | None:
        record = self.running(service)
        return record.release if record else None

    def problem(self, service: str) -> str | None:
        if self.running(service) is None and port_in_use(self.settings.aistack_bind_address, self.settings.port(service)):
            return f"port {self.settings.port(service)} is in use by another program; free it or change {get(service).setting_prefix}_PORT"
        return None

    def build(self, service: str, root: Path) -> str:
        return self.releases.build(service, root)  # a release is a snapshot of the package

    def swap(self, service: str, version: str, timeout: float) -> Swap:
        """Stop what runs (its release stays on disk), start `version`; if it is not healthy in
        time, stop it and start the release that ran before."""
        running = self.running(service)
        if running:
            self.say(f"stopping {service} release {running.release}")
            self.stop(service)
        self.say(f"starting {service} release {version}")
        record = self.start(service, version)
        result = self.wait_healthy(record, timeout)
        if result.ready:
            return Swap(result, serving=version)
        failed_at, tail = time.monotonic(), self.log_tail(service, 20, since=record.log_offset)
        self.say(f"release {version} failed: {result.detail}; bringing back what ran")
        self.stop(service)
        if running is None:
            return Swap(result, tail)
        again = self.wait_healthy(self.start(service, running.release), self.settings.health_timeout(service))
        restore_s = round(time.monotonic() - failed_at, 2)
        if again.ready:
            return Swap(result, tail, running.release, restore_s, f"; release {running.release} restored and healthy")
        self.stop(service)
        return Swap(result, tail, None, restore_s, f"; restoring release {running.release} FAILED too: {again.detail}")

    def forget(self, service: str, versions: list[str]) -> None:
        return None  # pruned snapshots are removed by Releases itself

    def can_return_to(self, service: str, version: str) -> bool:
        return self.releases.exists(service, version)


@contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """One `up`/`down`/`deploy`/`rollback` at a time per data dir."""
    run_dir = settings.aistack_data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "lifecycle.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
