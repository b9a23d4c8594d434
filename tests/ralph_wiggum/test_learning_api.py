"""Learning through a real orchestrator (`aistack serve ralph-wiggum`, real git, the `command`
backend running a real shell script, SQLite): finished tasks leave outcomes, `POST /learn` turns
them into proposals, and accepting one writes the .env and changes the running service's
behaviour at once; a rollback undoes both. The CLI drives the same routes."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from aistack import envfile
from support import StackEnv, child_env, make_git_repo

ENDED = {"completed", "exhausted", "failed", "stopped"}
# Solves a task that says "solve" in one iteration; any other changes a file every iteration and never passes the check.
AGENT = """#!/bin/sh
if grep -q solve "$AISTACK_PROMPT_FILE"; then touch done; else date +%s%N > noise; fi
echo worked
"""


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    script = stack_env.root / "agent.sh"
    script.write_text(AGENT)
    script.chmod(0o755)
    stack_env.set(RALPH_COMMAND_BACKEND=str(script), RALPH_SANDBOX="off", RALPH_LEARN_MIN_OUTCOMES=6, RALPH_MAX_CONCURRENT_TASKS=4)
    make_git_repo(stack_env.workspace_root / "repo")
    with httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=10) as client:
        yield client


def run_tasks(client: httpx.Client, prompts: list[str], max_iterations: int | None = None) -> list[dict]:
    ids = []
    for prompt in prompts:
        body = {"prompt": prompt, "backend": "command", "workspace": "repo", "check_command": "test -f done"}
        resp = client.post("/tasks", json={**body, **({"max_iterations": max_iterations} if max_iterations else {})})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["task_id"])
    deadline, tasks = time.monotonic() + 180, []
    for task_id in ids:
        while (task := client.get(f"/tasks/{task_id}").json())["status"] not in ENDED:
            assert time.monotonic() < deadline, task
            time.sleep(0.05)
        tasks.append(task)
    return tasks


def cli(stack_env: StackEnv, *args: str) -> subprocess.CompletedProcess[str]:
    wide = {"COLUMNS": "400"}  # rich wraps no table cell
    return subprocess.run([sys.executable, "-m", "aistack", "learn", *args], env=child_env(stack_env, wide), capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_an_accepted_limit_is_written_and_applies_to_the_next_task_and_a_rollback_undoes_it(ralph, stack_env):
    client = ralph
    assert client.post("/learn").json() == []  # nothing finished yet: nothing learned
    solved = run_tasks(client, ["solve the greeting", "solve the sum", "solve the title"])
    failed = run_tasks(client, [f"fix the {what}" for what in ("greeting", "sum", "title", "menu", "logo", "footer")], max_iterations=4)
    ended = [(t["status"], t["iteration"], t["error"]) for t in solved + failed]  # an error says why a task failed
    assert ended == [("completed", 1, None)] * 3 + [("exhausted", 4, None)] * 6

    made = client.post("/learn").json()
    [limit] = [p for p in made if p["kind"] == "iteration_limit"]
    assert limit["subject"] == "simple" and limit["changes"] == {"RALPH_MAX_ITERATIONS_SIMPLE": "1"} and limit["status"] == "open"
    assert limit["evidence"]["iterations_saved"] == 18 and set(limit["evidence"]["tasks"]) == {t["id"] for t in solved + failed}
    assert [p["id"] for p in client.get("/learn/proposals", params={"status": "open"}).json()] == [p["id"] for p in made][::-1]

    listed = cli(stack_env, "proposals")
    assert listed.returncode == 0 and "RALPH_MAX_ITERATIONS_SIMPLE=1" in listed.stdout, listed.stderr
    accepted = cli(stack_env, "accept", str(limit["id"]), "--who", "ann", "--why", "tasks past 1 never finish")
    assert accepted.returncode == 0, accepted.stderr
    assert envfile.read(stack_env.env_file)["RALPH_MAX_ITERATIONS_SIMPLE"] == "1"  # written, the rest of the file kept
    assert envfile.read(envfile.backup_path(stack_env.env_file)).get("RALPH_MAX_ITERATIONS_SIMPLE") is None
    assert client.get("/config/limits").json()["ralph_max_iterations_simple"] == 1  # live, no restart
    [next_one] = run_tasks(client, ["fix the header"])
    assert (next_one["max_iterations"], next_one["limit_source"]) == (1, "adaptive")
    assert (next_one["status"], next_one["iteration"]) == ("exhausted", 1)

    again = client.post(f"/learn/proposals/{limit['id']}/accept", json={"who": "bob"})
    assert again.status_code == 409 and again.json()["field"] == "id" and "accepted" in again.json()["detail"]
    back = client.post(f"/learn/proposals/{limit['id']}/rollback", json={"who": "bob", "detail": "too tight"})
    assert back.status_code == 200 and back.json()["status"] == "rolled_back"
    assert [(d["decision"], d["who"], d["detail"]) for d in back.json()["decisions"]] == [
        ("accepted", "ann", "tasks past 1 never finish"), ("rolled_back", "bob", "too tight")]  # fmt: skip
    assert "RALPH_MAX_ITERATIONS_SIMPLE" not in envfile.read(stack_env.env_file)  # unset again, as it was
    assert client.get("/config/limits").json()["ralph_max_iterations_simple"] == 10  # its default, live


def test_decisions_on_what_is_not_there_or_not_open_are_refused_with_the_field(ralph):
    client = ralph
    missing = client.post("/learn/proposals/12345/accept")
    assert missing.status_code == 404 and missing.json() == {"detail": "no proposal 12345"}
    assert client.get("/learn/proposals/0").status_code == 422
    bad = client.get("/learn/proposals", params={"status": "maybe"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    assert client.post("/learn/proposals/1/reject", json={"who": ""}).status_code == 422


def test_on_a_schedule_the_same_failing_check_drafts_a_task_that_runs_only_once_accepted(stack_env, services):
    script = stack_env.root / "agent.sh"
    script.write_text(AGENT)
    script.chmod(0o755)
    stack_env.set(
        RALPH_COMMAND_BACKEND=str(script),
        RALPH_SANDBOX="off",
        RALPH_LEARN_INTERVAL_SECONDS=1,
        RALPH_LEARN_MIN_OUTCOMES=4,
        RALPH_MAX_CONCURRENT_TASKS=4,
    )
    make_git_repo(stack_env.workspace_root / "repo")
    with httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=10) as client:
        failed = run_tasks(client, ["fix the greeting", "fix the sum", "fix the title", "fix the header"], max_iterations=2)
        deadline = time.monotonic() + 60
        while not (drafts := [p for p in client.get("/learn/proposals").json() if p["kind"] == "task"]):  # nobody asked: the schedule
            assert time.monotonic() < deadline
            time.sleep(0.2)
        [draft] = drafts
        assert draft["task"]["check_command"] == "test -f done" and "exit code 1" in draft["task"]["prompt"]
        assert set(draft["evidence"]["tasks"]) == {t["id"] for t in failed}
        assert client.get("/tasks").json()["total"] == 4  # drafted, not submitted

        accepted = client.post(f"/learn/proposals/{draft['id']}/accept", json={"who": "ann"}).json()
        submitted = accepted["decisions"][-1]["detail"].removeprefix("submitted as task ")
        task = client.get(f"/tasks/{submitted}").json()
        assert task["prompt"] == draft["task"]["prompt"] and task["check_command"] == "test -f done"
        undo = client.post(f"/learn/proposals/{draft['id']}/rollback")
        assert undo.status_code == 409 and "nothing to roll back" in undo.json()["detail"]


def test_once_enough_tasks_finished_a_new_task_takes_its_limit_from_similar_ones(stack_env, services):
    script = stack_env.root / "agent.sh"
    script.write_text(AGENT)
    script.chmod(0o755)
    stack_env.set(RALPH_COMMAND_BACKEND=str(script), RALPH_SANDBOX="off", RALPH_LEARNED_LIMITS_AFTER=7, RALPH_LEARN_MIN_OUTCOMES=4,
                  RALPH_MAX_CONCURRENT_TASKS=4)  # fmt: skip
    make_git_repo(stack_env.workspace_root / "repo")
    with httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=10) as client:
        run_tasks(client, ["solve the greeting", "solve the sum", "solve the title", "fix the greeting", "fix the sum", "fix the title"])
        [first] = run_tasks(client, ["fix the header"])
        assert first["limit_source"] == "adaptive"  # 6 finished: below the threshold, and not yet learned from
        client.post("/learn")  # what the learned limits read is refreshed with each learning
        [learned] = run_tasks(client, ["fix the footer"])
        assert (learned["limit_source"], learned["max_iterations"], learned["complexity"]) == ("learned", 2, "simple")
        assert (
            "7 past simple tasks on command with this strategy: 3 solved, in at most 1 iterations; 4 still failing"
            in learned["complexity_reason"]
        )
