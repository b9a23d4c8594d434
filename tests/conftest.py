from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import STACK_VARIABLES, ServiceProcess, StackEnv, new_stack_env


@pytest.fixture(autouse=True)
def _callers_stack_settings_ignored(monkeypatch, tmp_path_factory):
    """In-process code reads neither the caller's stack variables nor their ~/.config/aistack/.env."""
    for name in STACK_VARIABLES & set(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AISTACK_ENV_FILE", str(tmp_path_factory.getbasetemp() / "no-such.env"))


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
