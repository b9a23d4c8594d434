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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aistack.config import Settings
from aistack.lifecycle.runtimes import BuildError, Runtime, Say
from aistack.services import get, installed_source_root

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
            line = f" line {lineno}" if (lineno := getattr(exc, "lineno", None)) else ""
            return f"syntax error in {path.relative_to(root)}{line}: {getattr(exc, 'msg', exc)}"
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _VALIDATE, svc.entry_module, str(root)],
            env=env,
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return f"importing {svc.entry_module} took longer than 120 s"
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        return f"importing {svc.entry_module} failed: {lines[-1] if lines else f'exit status {proc.returncode}'}"
    return None


class Deployer:
    """The one deploy algorithm, over either runtime. Whatever fails, the service ends up running
    the release it ran before (when it ran one), and the history records what happened."""

    def __init__(self, settings: Settings, runtime: Runtime, say: Say = lambda _: None):
        self.settings, self.runtime, self.say = settings, runtime, say

    def deploy(self, service: str, source: Path | None = None, health_timeout: float | None = None) -> DeployResult:
        started, rt = time.monotonic(), self.runtime
        unavailable = rt.unavailable()
        serving = None if unavailable else rt.current(service)
        previous = serving or rt.releases.state(service).current  # nothing runs: the release that ran last

        def rejected(stage: str, why: str) -> DeployResult:
            return self._done(started, DeployResult(service, "deploy", False, "rejected", None, previous, serving, stage, why))

        # 1. validate: nothing running is touched before this passes
        if unavailable is not None:
            return rejected("validate", unavailable)
        self.say(f"validating {service}")
        try:
            root = source_root(source)
        except ValueError as exc:
            return rejected("validate", str(exc))
        if problem := validate(service, root) or rt.problem(service):
            return rejected("validate", problem)
        # 2. build an immutable release
        try:
            version = rt.build(service, root)
        except BuildError as exc:
            return rejected("build", str(exc))
        self.say(f"built release {version}")
        # 3. back up, 4. start, 5. verify over HTTP — or restore what ran
        swap = rt.swap(service, version, health_timeout or self.settings.health_timeout(service))
        if swap.health.ready:  # 6a. promote
            rt.forget(service, rt.releases.promote(service, version, previous))
            return self._done(started, DeployResult(service, "deploy", True, "deployed", version, previous, version, "done",
                                                    f"{service} {version} is healthy ({swap.health.detail})"))  # fmt: skip
        rt.releases.remove(service, version)  # 6b. the failed release goes
        rt.forget(service, [version])
        hint = " — its port is taken" if "address already in use" in swap.log_tail.lower() else ""
        return self._done(started, DeployResult(
            service, "deploy", False, "rolled back" if swap.serving else "failed", version, previous, swap.serving,
            "start" if swap.health.state == "exited" else "verify", f"release {version} {swap.health.detail}{hint}{swap.note}",
            swap.log_tail, restore_s=swap.restore_s,
        ))  # fmt: skip

    def rollback(self, service: str) -> DeployResult:
        """Return `service` to the release it ran before its current one."""
        started, rt = time.monotonic(), self.runtime
        state = rt.releases.state(service)
        serving = rt.current(service)
        current, target = serving or state.current, state.previous
        if target is None or not rt.can_return_to(service, target):
            return self._done(started, DeployResult(service, "rollback", False, "rejected", target, current, serving, "validate",
                                                    f"{service} has no previous release to return to"))  # fmt: skip
        swap = rt.swap(service, target, self.settings.health_timeout(service))
        if swap.health.ready:
            rt.forget(service, [rt.releases.step_back(service)])
            return self._done(started, DeployResult(service, "rollback", True, "rolled back", target, current, target, "done",
                                                    f"{service} is back on release {target} ({swap.health.detail})"))  # fmt: skip
        return self._done(started, DeployResult(service, "rollback", False, "failed", target, current, swap.serving, "verify",
                                                f"release {target} {swap.health.detail}{swap.note}", swap.log_tail))  # fmt: skip

    def _done(self, started: float, result: DeployResult) -> DeployResult:
        result.duration_s = round(time.monotonic() - started, 2)
        result.runtime = self.runtime.name
        record_history(self.settings, result)
        return result


# --- history -------------------------------------------------------------------------------------


def history_file(settings: Settings) -> Path:
    return settings.aistack_data_dir / "deploys.jsonl"


def record_history(settings: Settings, result: DeployResult) -> None:
    path = history_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per deploy; appends of this size are atomic
        f.write(json.dumps(result.to_json()) + "\n")


def read_history(settings: Settings, service: str | None = None, limit: int | None = 50) -> list[dict]:
    """The last `limit` entries (all with None), oldest first."""
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
    return entries[-limit:] if limit else entries
