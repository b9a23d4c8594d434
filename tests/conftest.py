from __future__ import annotations

from pathlib import Path

import pytest

from support import ServiceProcess, StackEnv, new_stack_env


@pytest.fixture
def stack_env(tmp_path: Path) -> StackEnv:
    """A fresh, isolated .env (own data dir, workspace root and free ports)."""
    return new_stack_env(tmp_path)


@pytest.fixture
def services():
    """Start real service processes; every one is stopped at the end of the test."""
    started: list[ServiceProcess] = []

    def start(name: str, env: StackEnv, extra_env: dict[str, str] | None = None, wait: bool = True, timeout: float = 60):
        proc = ServiceProcess(name, env, extra_env)
        started.append(proc)
        return proc.wait_healthy(timeout) if wait else proc

    yield start
    for proc in reversed(started):
        proc.stop()
