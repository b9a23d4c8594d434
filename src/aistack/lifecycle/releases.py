"""Immutable releases of the package source, one directory per service and version.

A release is a copy of the `aistack` package as it was when it was deployed, so an older release
can be started again after the working tree has moved on. `INSTALLED` stands for "the package this
command runs from" — what a service runs before its first deploy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from aistack.config import Settings
from aistack.files import atomic_write

INSTALLED = "installed"
KEEP_RELEASES = 5  # successful releases kept per service (older ones are pruned)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info")


@dataclass
class ReleaseState:
    """Which release of a service is current, and the successful ones before it (oldest first)."""

    current: str = INSTALLED
    stack: list[str] = field(default_factory=list)

    @property
    def previous(self) -> str | None:
        return self.stack[-2] if len(self.stack) >= 2 else None


class Releases:
    def __init__(self, settings: Settings, runtime: str = "process"):
        self.root = settings.aistack_data_dir / "releases" / runtime

    def dir(self, service: str, version: str) -> Path | None:
        """The directory to put on PYTHONPATH for a version (None: the installed package)."""
        return None if version == INSTALLED else self.root / service / version

    def exists(self, service: str, version: str) -> bool:
        path = self.dir(service, version)
        return path is None or (path / "aistack" / "__init__.py").is_file()

    def build(self, service: str, source_root: Path) -> str:
        """Copy `source_root/aistack` into a new release; returns its version."""
        package = source_root / "aistack"
        version = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{tree_hash(package)[:8]}"
        target = self.root / service / version
        n = 1
        while target.exists():  # the same tree deployed twice within a second
            n += 1
            target = self.root / service / f"{version}.{n}"
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(package, staging / "aistack", ignore=_IGNORE)
        (staging / "RELEASE.json").write_text(
            json.dumps({"service": service, "version": target.name, "source": str(source_root), "built": time.time()})
        )
        for path in staging.rglob("*.py"):
            path.chmod(0o444)  # a release is never edited in place
        staging.rename(target)  # appears whole or not at all
        return target.name

    # --- state ------------------------------------------------------------------------------------

    def _state_file(self, service: str) -> Path:
        return self.root / service / "state.json"

    def state(self, service: str) -> ReleaseState:
        try:
            data = json.loads(self._state_file(service).read_text())
            return ReleaseState(current=data["current"], stack=list(data["stack"]))
        except (OSError, ValueError, KeyError, TypeError):
            return ReleaseState()

    def save(self, service: str, state: ReleaseState) -> None:
        atomic_write(self._state_file(service), json.dumps({"current": state.current, "stack": state.stack}))

    def promote(self, service: str, version: str, previous: str) -> list[str]:
        """`version` is now current; `previous` (what ran before) stays reachable by rollback.
        Returns the releases pruned to keep KEEP_RELEASES."""
        state = self.state(service)
        if not state.stack:
            state.stack.append(previous)
        state.stack.append(version)
        state.current = version
        dropped, state.stack = state.stack[:-KEEP_RELEASES], state.stack[-KEEP_RELEASES:]
        self.save(service, state)
        for old in dropped:
            self.remove(service, old)
        return dropped

    def step_back(self, service: str) -> str:
        """After a rollback: the previous release is current again. Returns the one left behind."""
        state = self.state(service)
        gone = state.stack.pop()
        state.current = state.stack[-1]
        self.save(service, state)
        self.remove(service, gone)
        return gone

    def remove(self, service: str, version: str) -> None:
        path = self.dir(service, version)
        if path is not None and version not in self.state(service).stack:
            shutil.rmtree(path, ignore_errors=True)


def tree_hash(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
