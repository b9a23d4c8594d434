"""Runs `aistack deploy SERVICE` / `aistack rollback SERVICE` for the Deploy page, one at a time,
each as its own process (its own session, so a redeploy of the dashboard itself survives it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aistack import services
from aistack.config import ENV_FILE_VARIABLE, Settings, resolve_env_file

ACTIONS = ("deploy", "rollback")
LOG_TAIL_CHARS = 20_000


@dataclass
class Job:
    service: str
    action: str
    log_path: Path
    process: subprocess.Popen
    started: float
    finished: float | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    @property
    def duration(self) -> float:
        end = self.finished or time.time()
        return end - self.started

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL_CHARS:]


class DeployRunner:
    def __init__(self, settings: Settings):
        self.logs_dir = settings.logs_dir
        self._lock = threading.Lock()
        self.last: Job | None = None

    def start(self, service: str, action: str) -> Job:
        """Start one deploy/rollback; refuses (ValueError, one line) while another one runs."""
        services.get(service)  # ValueError naming the allowed ones
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: allowed: {', '.join(ACTIONS)}")
        with self._lock:
            if self.last and self.last.running:
                raise ValueError(f"`aistack {self.last.action} {self.last.service}` is still running")
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            log_path = self.logs_dir / f"dashboard-{action}-{service}-{stamp}.log"
            log = log_path.open("wb")
            env = {**_environ(), ENV_FILE_VARIABLE: str(resolve_env_file())}
            process = subprocess.Popen(
                [sys.executable, "-m", "aistack", action, service],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            log.close()  # the child holds its own copy
            job = Job(service, action, log_path, process, time.time())
            threading.Thread(target=self._reap, args=(job,), daemon=True).start()
            self.last = job
            return job

    def earlier_log(self) -> tuple[str, str] | None:
        """(file name, tail) of the newest deploy log an earlier dashboard process started — after
        the dashboard redeployed itself, its new process still shows how that went."""
        if self.last is not None:
            return None
        logs = sorted(self.logs_dir.glob("dashboard-*-*.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return None
        return logs[-1].name, logs[-1].read_text(errors="replace")[-LOG_TAIL_CHARS:]

    @staticmethod
    def _reap(job: Job) -> None:
        job.process.wait()
        job.finished = time.time()


def _environ() -> dict[str, str]:
    # Plain, uncoloured output: it is shown in a <pre>.
    return {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"}
