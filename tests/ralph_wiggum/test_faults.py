"""Faults of the machine around the orchestrator, on real processes: the data dir's disk full, a
git lock left behind. Each must end in a clear state with nothing lost or counted twice.
(The wrapper killed mid-iteration and llama-server answering 503: tests/e2e/test_faults_between_services.py.)"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from load_support import AGENT, ITERATIONS, PROMISE, TERMINAL, write_agent
from support import StackEnv, git, make_git_repo, missing, wait_until

GATE_WAIT = 'while [ ! -e "{gate}" ]; do sleep 0.05; done\n'


def wait_status(client: httpx.Client, task_id: str, statuses: frozenset[str], timeout: float = 60) -> dict:
    seen: list[dict] = []
    if not wait_until(lambda: seen.append(client.get(f"/tasks/{task_id}").json()) or seen[-1]["status"] in statuses, timeout):
        raise AssertionError(f"task {task_id} still {seen[-1]['status']} after {timeout:.0f} s: {seen[-1]}")
    return seen[-1]


def submit(client: httpx.Client, workspace: str) -> httpx.Response:
    body = {"prompt": "append", "backend": "command", "workspace": workspace, "completion_promise": PROMISE,
            "max_iterations": ITERATIONS + 1}  # fmt: skip
    return client.post("/tasks", json=body)


# --- the data dir's disk full ----------------------------------------------------------------------


@pytest.fixture
def small_data_dir(stack_env: StackEnv):
    """The data dir on a 16 MiB tmpfs of its own (needs the right to mount: root here)."""
    data = stack_env.data_dir
    data.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], capture_output=True, text=True)
    except OSError as exc:  # no mount(8) at all
        missing(f"cannot mount a tmpfs for the data dir: {exc}")
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs for the data dir: {mounted.stderr.strip() or mounted.returncode}")
    yield data
    subprocess.run(["umount", "--lazy", str(data)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the file system under `directory`."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_data_dir_refuses_writes_clearly_and_loses_nothing(stack_env, small_data_dir, services):
    gate = stack_env.root / "gate"
    agent = write_agent(stack_env.root / "agent.sh", AGENT.replace("\n", "\n" + GATE_WAIT.format(gate=gate), 1))
    stack_env.set(RALPH_COMMAND_BACKEND=str(agent), RALPH_SANDBOX="off")  # the gate lies in /tmp, which bwrap makes private
    ralph = services("ralph-wiggum", stack_env)
    make_git_repo(stack_env.workspace_root / "repo", {"notes.txt": ""})
    with httpx.Client(base_url=ralph.url, timeout=30) as client:
        gate.touch()
        before = submit(client, "repo").json()["task_id"]
        assert wait_status(client, before, TERMINAL)["status"] == "completed"
        gate.unlink()
        caught = submit(client, "repo").json()["task_id"]  # mid-iteration when the disk fills
        assert wait_until(lambda: any(e["type"] == "iteration_started" for e in client.get(f"/tasks/{caught}/events.json").json()))

        filler = fill(small_data_dir)
        accepted, refused = [], None
        for _ in range(200):  # the database may take a few writes into its log's free room first
            resp = submit(client, "repo")
            if resp.status_code != 202:
                refused = resp
                break
            accepted.append(resp.json()["task_id"])
        assert refused is not None and refused.status_code == 507, refused and refused.text
        assert "no space" in refused.json()["detail"] and str(small_data_dir) in refused.json()["detail"]
        for path in ("/tasks", f"/tasks/{before}", f"/tasks/{before}/iterations", f"/tasks/{before}/events.json", "/stats"):
            assert client.get(path).status_code == 200, path
        gate.touch()  # the caught task's agent goes on, into the full disk
        assert wait_until(lambda: f"task {caught} waits for disk space" in ralph.log(), 30), ralph.log()[-3000:]
        assert client.get(f"/tasks/{caught}").json()["status"] == "running"  # not failed: it waits
        assert "crashed" not in ralph.log()  # a line per wait, not a crash with its traceback per scheduler pass

        filler.unlink()
        for task_id in [caught, *accepted, submit(client, "repo").json()["task_id"]]:
            task = wait_status(client, task_id, TERMINAL)
            assert (task["status"], task["iteration"]) == ("completed", ITERATIONS), task
            numbers = [it["number"] for it in client.get(f"/tasks/{task_id}/iterations").json()]
            assert numbers == list(range(1, ITERATIONS + 1))
    ralph.stop()
    with sqlite3.connect(small_data_dir / "aistack.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# --- a git lock left behind --------------------------------------------------------------------------

# The second iteration leaves what a git killed mid-commit leaves: the worktree's index.lock.
LOCKING_AGENT = AGENT + 'if [ "$AISTACK_ITERATION" = 2 ]; then touch "$(git rev-parse --git-path index.lock)"; fi\n'


def test_a_git_lock_left_behind_fails_the_task_naming_it(stack_env, services):
    # Unsandboxed: under bwrap an agent cannot write git's metadata at all; the lock stands for
    # what a git killed mid-commit leaves.
    stack_env.set(RALPH_COMMAND_BACKEND=str(write_agent(stack_env.root / "agent.sh", LOCKING_AGENT)), RALPH_SANDBOX="off")
    ralph = services("ralph-wiggum", stack_env)
    repo = make_git_repo(stack_env.workspace_root / "repo")
    users_lock = repo / ".git" / "index.lock"  # a person's own git, busy in their checkout
    users_lock.touch()
    with httpx.Client(base_url=ralph.url, timeout=30) as client:
        locked = submit(client, "repo").json()["task_id"]
        task = wait_status(client, locked, TERMINAL)
        lock = repo / ".git" / "worktrees" / locked / "index.lock"

        assert task["status"] == "failed" and task["iteration"] == 1, task
        assert str(lock) in task["error"] and "remove" in task["error"] and not task["error"].startswith("internal error"), task
        assert [it["number"] for it in client.get(f"/tasks/{locked}/iterations").json()] == [1]  # the second is not counted
        assert git(repo, "show", f"aistack/{locked}:notes.txt") == "line 1"  # the first one's checkpoint stays
        # its worktree (lock and all) goes, just after the status is written (TaskService.finish, then release)
        assert wait_until(lambda: not Path(task["worktree"]).exists() and not lock.exists(), 10)
        assert users_lock.exists()  # the person's lock is theirs: not removed, and it stops no task
        stack_env.set(RALPH_COMMAND_BACKEND=str(write_agent(stack_env.root / "agent.sh", AGENT)))
        other = wait_status(client, submit(client, "repo").json()["task_id"], TERMINAL)
        assert (other["status"], other["iteration"]) == ("completed", ITERATIONS), other
    git(repo, "fsck", "--no-progress")
