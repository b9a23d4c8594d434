"""Safe deploy: validate → build → back up → start → verify over HTTP → commit, or roll back.

Whatever fails, the service ends up running the release it ran before (when it ran one), healthy,
and the caller gets a one-line reason plus the failed release's last log lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aistack.config import Settings
from aistack.lifecycle.process import ProcessRuntime
from aistack.lifecycle.releases import INSTALLED
from aistack.services import get, installed_source_root

Say = Callable[[str], None]

# Run by the *new* code, in a fresh interpreter: the .env must validate and the app must import.
_VALIDATE = """
import importlib, sys
import aistack
from aistack.config import ConfigError, load_settings
if not aistack.__file__.startswith(sys.argv[2]):
    sys.exit(f"imported aistack from {aistack.__file__}, not from the release")
try:
    load_settings()
except ConfigError as exc:
    sys.exit(f"the .env does not validate: {exc}")
importlib.import_module(sys.argv[1])
"""


@dataclass
class DeployResult:
    service: str
    action: str  # deploy | rollback
    ok: bool
    outcome: str  # deployed | rejected | rolled back | failed | rolled back (manual)
    version: str | None  # the release that was being brought up
    previous: str | None  # the release that ran before
    serving: str | None  # what serves when we are done (None: nothing)
    stage: str  # where it ended: validate | build | start | verify | done
    message: str
    log_tail: str = ""
    started_at: float = field(default_factory=time.time)
    duration_s: float = 0.0
    restore_s: float | None = None  # failed health check → previous release healthy again
    runtime: str = "process"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "log_tail"}


def source_root(source: Path | None) -> Path:
    """The directory holding `aistack/`: `--source DIR` (a project root or that directory itself)."""
    if source is None:
        return installed_source_root()
    source = source.expanduser().resolve()
    for candidate in (source / "src", source):
        if (candidate / "aistack" / "__init__.py").is_file():
            return candidate
    raise ValueError(f"--source {source}: no aistack package there (looked for src/aistack and aistack)")


def validate(service: str, root: Path) -> str | None:
    """None when the tree is deployable for `service`, else why not (one line)."""
    svc = get(service)
    if not svc.present_in(root):
        return f"{svc.entry_module} is not in {root}"
    for path in sorted((root / "aistack").rglob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)  # byte-compile, nothing written
        except (SyntaxError, ValueError) as exc:
            line = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            return f"syntax error in {path.relative_to(root)}{line}: {getattr(exc, 'msg', exc)}"
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _VALIDATE, svc.entry_module, str(root)],
            env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        return f"importing {svc.entry_module} took longer than 120 s"
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        return f"importing {svc.entry_module} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}"
    return None


class Deployer:
    def __init__(self, settings: Settings, runtime: ProcessRuntime | None = None, say: Say = lambda _: None):
        self.settings = settings
        self.runtime = runtime or ProcessRuntime(settings)
        self.say = say

    def health_timeout(self, service: str) -> float:
        return get(service).start_timeout + self.settings.startup_timeout_seconds

    def deploy(self, service: str, source: Path | None = None, health_timeout: float | None = None) -> DeployResult:
        started = time.monotonic()
        rt, releases = self.runtime, self.runtime.releases
        timeout = health_timeout or self.health_timeout(service)
        running = rt.running(service)
        previous = running.release if running else releases.state(service).current

        def done(result: DeployResult) -> DeployResult:
            result.duration_s = round(time.monotonic() - started, 2)
            record_history(self.settings, result)
            return result

        # 1. validate — nothing running is touched before this passes
        self.say(f"validating {service}")
        try:
            root = source_root(source)
        except ValueError as exc:
            return done(DeployResult(service, "deploy", False, "rejected", None, previous, running and running.release, "validate", str(exc)))
        problem = validate(service, root)
        if problem is None and running is None and rt.port_taken_by_other(service):
            problem = f"port {self.settings.port(service)} is in use by another program; free it or change {service.upper().replace('-', '_')}_PORT"
        if problem:
            return done(DeployResult(service, "deploy", False, "rejected", None, previous, running and running.release, "validate", problem))

        # 2. build an immutable release
        version = releases.build(service, root)
        self.say(f"built release {version}")

        # 3. back up: the previous release stays on disk; stop its process to free the port
        if running:
            self.say(f"stopping {service} release {running.release}")
            rt.stop(service)

        # 4. start, 5. verify over HTTP
        self.say(f"starting {service} release {version}")
        record = rt.start(service, version)
        result = rt.wait_healthy(record, timeout)
        if result.ready:
            # 6a. commit
            releases.promote(service, version, previous)
            return done(DeployResult(service, "deploy", True, "deployed", version, previous, version, "done",
                                     f"{service} {version} is healthy ({result.detail})"))

        # 6b. roll back
        failed_at = time.monotonic()
        tail = rt.log_tail(service, 20, since=record.log_offset)
        hint = " — its port is taken" if "address already in use" in tail.lower() else ""
        self.say(f"release {version} failed: {result.detail}{hint}; rolling back")
        rt.stop(service)
        releases.remove(service, version)
        serving, restore_s, restored = None, None, ""
        if running:
            back = rt.start(service, running.release)
            again = rt.wait_healthy(back, self.health_timeout(service))
            restore_s = round(time.monotonic() - failed_at, 2)
            if again.ready:
                serving, restored = running.release, f"; release {running.release} restored and healthy"
            else:
                rt.stop(service)
                restored = f"; restoring release {running.release} FAILED too: {again.detail}"
        return done(DeployResult(service, "deploy", False, "rolled back" if serving else "failed", version, previous, serving,
                                 "start" if result.state == "exited" else "verify",
                                 f"release {version} {result.detail}{hint}{restored}", tail, restore_s=restore_s))

    def rollback(self, service: str) -> DeployResult:
        """Return `service` to the release it ran before its current one."""
        started = time.monotonic()
        rt, releases = self.runtime, self.runtime.releases
        state = releases.state(service)
        running = rt.running(service)
        current = running.release if running else state.current

        def done(result: DeployResult) -> DeployResult:
            result.duration_s = round(time.monotonic() - started, 2)
            record_history(self.settings, result)
            return result

        target = state.previous
        if target is None or not releases.exists(service, target):
            return done(DeployResult(service, "rollback", False, "rejected", target, current, current, "validate",
                                     f"{service} has no previous release to return to"))
        if running:
            rt.stop(service)
        self.say(f"starting {service} release {target}")
        record = rt.start(service, target)
        result = rt.wait_healthy(record, self.health_timeout(service))
        if result.ready:
            releases.step_back(service)
            return done(DeployResult(service, "rollback", True, "rolled back", target, current, target, "done",
                                     f"{service} is back on release {target} ({result.detail})"))
        tail = rt.log_tail(service, 20, since=record.log_offset)
        rt.stop(service)
        serving, note = None, ""
        if running:
            back = rt.start(service, running.release)
            again = rt.wait_healthy(back, self.health_timeout(service))
            serving = running.release if again.ready else None
            note = f"; release {running.release} restored" if serving else f"; restoring {running.release} failed: {again.detail}"
            if not serving:
                rt.stop(service)
        return done(DeployResult(service, "rollback", False, "failed", target, current, serving, "verify",
                                 f"release {target} {result.detail}{note}", tail))


# --- history -------------------------------------------------------------------------------------


def history_file(settings: Settings) -> Path:
    return settings.aistack_data_dir / "deploys.jsonl"


def record_history(settings: Settings, result: DeployResult) -> None:
    path = history_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per deploy; appends of this size are atomic
        f.write(json.dumps(result.to_json()) + "\n")


def read_history(settings: Settings, service: str | None = None, limit: int = 50) -> list[dict]:
    try:
        lines = history_file(settings).read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash is skipped, not fatal
        if service is None or entry.get("service") == service:
            entries.append(entry)
    return entries[-limit:]


__all__ = ["Deployer", "DeployResult", "INSTALLED", "read_history", "source_root", "validate"]
