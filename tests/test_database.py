"""AISTACK_DATABASE_URL as an operator writes it: a plain libpq URL works as given, `aistack db`
upgrades and reports the schema, and the password shows nowhere (config show, errors, /health,
the service's log)."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from sqlalchemy import create_engine, text

from aistack.config import ConfigError, load_settings
from aistack.ralph_wiggum import migrations
from support import AISTACK, child_env, make_git_repo, new_stack_env


def aistack(env, *args: str) -> subprocess.CompletedProcess[str]:
    wide = {"COLUMNS": "400"}  # rich wraps no URL
    return subprocess.run([*AISTACK, *args], env=child_env(env, wide), capture_output=True, text=True, timeout=60)


def test_config_show_masks_the_password_and_the_default_is_the_sqlite_file(tmp_path, postgres_server):
    env = new_stack_env(tmp_path)
    shown = aistack(env, "config", "show").stdout
    assert "AISTACK_DATABASE_URL" in shown
    assert load_settings(env.env_file).database_url == f"sqlite:///{env.data_dir / 'aistack.db'}"
    env.set(AISTACK_DATABASE_URL=postgres_server.url("tasks"))
    shown = aistack(env, "config", "show").stdout
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:{postgres_server.port}/tasks" in shown
    assert postgres_server.password not in shown


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://root:hunter2secret@db/x", "AISTACK_DATABASE_URL"),
        ("not a url hunter2secret", "AISTACK_DATABASE_URL"),
    ],
)
def test_a_database_url_no_store_takes_stops_the_service_with_one_line_without_the_password(tmp_path, url, words):
    env = new_stack_env(tmp_path).set(AISTACK_DATABASE_URL=url)
    with pytest.raises(ConfigError, match=words) as raised:
        load_settings(env.env_file)
    assert "hunter2secret" not in str(raised.value)
    proc = aistack(env, "serve", "ralph-wiggum")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stdout + proc.stderr
    assert "hunter2secret" not in proc.stdout + proc.stderr


def test_db_upgrade_and_current_on_postgresql(tmp_path, postgres_server):
    env = new_stack_env(tmp_path).set(AISTACK_DATABASE_URL=postgres_server.database())
    before = aistack(env, "db", "current")
    assert before.returncode == 0 and "none (not under migrations yet)" in before.stdout, before.stderr
    upgraded = aistack(env, "db", "upgrade")
    assert upgraded.returncode == 0 and f"at revision {migrations.head()}" in upgraded.stdout, upgraded.stderr
    after = aistack(env, "db", "current")
    assert f"revision {migrations.head()}, up to date" in after.stdout
    for proc in (before, upgraded, after):
        assert postgres_server.password not in proc.stdout + proc.stderr and "postgres:***@" in proc.stdout


def test_a_database_that_refuses_the_login_is_one_line_without_the_password(tmp_path, postgres_server):
    wrong = postgres_server.url("postgres").replace(postgres_server.password, "wrong-hunter2secret")
    env = new_stack_env(tmp_path).set(AISTACK_DATABASE_URL=wrong)
    for proc in (aistack(env, "db", "current"), aistack(env, "serve", "ralph-wiggum")):
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode != 0 and len(lines) == 1, proc.stdout + proc.stderr
        assert "password authentication failed" in lines[0] and "postgres:***@" in lines[0]
        assert "hunter2secret" not in lines[0]


def test_the_service_on_postgresql_keeps_its_tasks_there_and_its_password_to_itself(tmp_path, postgres_server, services):
    url = postgres_server.database()
    env = new_stack_env(tmp_path).set(AISTACK_DATABASE_URL=url, RALPH_LOOP_ENABLED=False, RALPH_COMMAND_BACKEND="true")
    make_git_repo(env.workspace_root / "repo")
    proc = services("ralph-wiggum", env)
    with httpx.Client(base_url=proc.url, timeout=10) as client:
        accepted = client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": "repo"})
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        health = client.get("/health").text
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            assert db.execute(text("SELECT status FROM tasks WHERE id = :id"), {"id": task_id}).scalar() == "queued"
    finally:
        engine.dispose()
    assert not (env.data_dir / "aistack.db").exists()
    proc.stop()
    assert postgres_server.password not in health + proc.log() and "postgres:***@" in proc.log()
