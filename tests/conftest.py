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


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole run (initdb + pg_ctl in a temp dir); stopped at the end."""
    from postgres import start_server

    server = start_server()
    yield server
    server.stop()
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """Each store the stack runs on, empty: a SQLite file, or a new database on the suite's server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aistack.db'}"
    return request.getfixturevalue("postgres_server").database()


@pytest.fixture
def open_store(database_url: str):
    """Opens `Store`s on `database_url` (a plain libpq URL, as an operator writes it); all closed at the end."""
    from aistack.config import database_url as engine_url
    from aistack.ralph_wiggum.store import Store

    opened: list[Store] = []

    def open_(**kwargs) -> Store:
        opened.append(Store(engine_url(database_url), **kwargs))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()
