"""Contract tests of the orchestrator: a real `aistack serve ralph-wiggum` process, a real SQLite
file (and PostgreSQL server, for the kill -9 test), real git repositories and the `command` backend
running real shell scripts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from support import (
    AISTACK,
    StackEnv,
    alive,
    child_env,
    git,
    group_alive,
    group_members,
    make_git_repo,
    recorded_groups,
    wait_until,
    warden_of,
)

AGENT = """#!/bin/sh
# appends one line per iteration and says so
echo "line $AISTACK_ITERATION" >> notes.txt
echo "appended line $AISTACK_ITERATION"
"""
THREE_LINES = "test $(wc -l < notes.txt) -ge 3"


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    """Start ralph-wiggum with the given command agent; returns (client, env, process)."""
    clients = []

    def start(agent: str = AGENT, **settings):
        script = write_script(stack_env.root / "agent.sh", agent)
        stack_env.set(RALPH_COMMAND_BACKEND=str(script), **settings)
        proc = services("ralph-wiggum", stack_env)
        client = httpx.Client(base_url=proc.url, timeout=10)
        clients.append(client)
        return client, proc

    yield start
    for c in clients:
        c.close()


def repo(env: StackEnv, name: str = "repo", files: dict[str, str] | None = None) -> Path:
    return make_git_repo(env.workspace_root / name, files)


def wait_for(client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/tasks/{task_id}").json()
        if task["status"] in statuses:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s: {task}")


def submit(client: httpx.Client, **body) -> str:
    body.setdefault("backend", "command")
    body.setdefault("prompt", "add notes")
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"
    return resp.json()["task_id"]


# --- the main promise -------------------------------------------------------------------------------


def test_iterates_until_check_passes_with_checkpoints_and_untouched_checkout(ralph, stack_env):
    client, _ = ralph()
    workspace = repo(stack_env, files={"README.md": "hi\n", "dirty.txt": "committed\n"})
    (workspace / "dirty.txt").write_text("user's uncommitted edit\n")
    (workspace / "untracked.txt").write_text("user's untracked file\n")
    head_before = git(workspace, "rev-parse", "HEAD")
    status_before = git(workspace, "status", "--porcelain")

    task_id = submit(client, workspace="repo", check_command=THREE_LINES)
    task = wait_for(client, task_id, {"completed", "exhausted", "failed"})

    assert task["status"] == "completed" and task["iteration"] == 3
    assert task["completion_reason"] == "check_command"
    assert task["evidence"]["rule"] == "check_command" and task["evidence"]["iteration"] == 3
    assert task["evidence"]["check_exit_code"] == 0
    assert task["branch"] == f"aistack/{task_id}"
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert [it["number"] for it in iterations] == [1, 2, 3]
    assert [it["check_exit_code"] for it in iterations] == [1, 1, 0]
    assert all(it["files_modified"] == ["notes.txt"] for it in iterations)
    assert all(it["output_excerpt"].startswith("appended line") for it in iterations)
    # every iteration is a checkpoint commit on the task branch, in order
    log = git(workspace, "log", "--format=%H %s", f"aistack/{task_id}").splitlines()
    assert [line.split()[0] for line in log[:3]] == [it["checkpoint_commit"] for it in reversed(iterations)]
    assert git(workspace, "show", f"aistack/{task_id}:notes.txt").splitlines() == ["line 1", "line 2", "line 3"]
    # the user's checkout, index and uncommitted files are untouched
    assert git(workspace, "rev-parse", "HEAD") == head_before
    assert git(workspace, "status", "--porcelain") == status_before
    assert (workspace / "dirty.txt").read_text() == "user's uncommitted edit\n"
    assert not (workspace / "notes.txt").exists()
    diff = client.get(f"/tasks/{task_id}/diff").json()["diff"]
    assert "+line 3" in diff
    one = client.get(f"/tasks/{task_id}/diff", params={"iteration": 2}).json()["diff"]
    assert "+line 2" in one and "+line 1" not in one


def test_limit_reached_without_evidence_is_exhausted(ralph, stack_env):
    client, _ = ralph()
    repo(stack_env)
    task = wait_for(client, submit(client, workspace="repo", check_command="false", max_iterations=2), {"exhausted", "completed", "failed"})
    assert task["status"] == "exhausted" and task["iteration"] == 2 and task["evidence"] is None
    assert task["limit_source"] == "request"


def test_failed_check_output_reaches_next_iteration(ralph, stack_env):
    agent = '#!/bin/sh\ncp "$AISTACK_PROMPT_FILE" "prompt-$AISTACK_ITERATION.txt"\ncat > stdin.txt\necho ok\n'
    client, _ = ralph(agent)
    workspace = repo(stack_env)
    check = "echo 'E   expected 42, got 41'; test -f prompt-2.txt"
    task_id = submit(client, workspace="repo", prompt="Make it 42", check_command=check, max_iterations=3)
    task = wait_for(client, task_id, {"completed", "exhausted", "failed"})
    assert task["status"] == "completed" and task["iteration"] == 2
    first = git(workspace, "show", f"aistack/{task_id}:prompt-1.txt")
    second = git(workspace, "show", f"aistack/{task_id}:prompt-2.txt")
    assert first == "Make it 42"
    assert second.startswith("Make it 42\n") and "expected 42, got 41" in second
    assert git(workspace, "show", f"aistack/{task_id}:stdin.txt") == second  # stdin carries the same prompt


CHEATING_AGENT = """#!/bin/sh
# first makes the check pass by rewriting it, then does the work (and keeps the prompt it got)
if [ "$AISTACK_ITERATION" = 1 ]; then
    echo 'exit 0' > tests/check.sh; echo 'exit 0' > tests/extra.sh; rm tests/fixture.txt; echo "the check passes now"
else
    cp "$AISTACK_PROMPT_FILE" prompt.txt; touch done.txt; echo "wrote done.txt"
fi
"""


def test_changes_to_protected_paths_are_undone_before_the_check_and_the_next_prompt_says_so(ralph, stack_env):
    client, _ = ralph(CHEATING_AGENT)
    checks = {"tests/check.sh": "test -f done.txt\n", "tests/fixture.txt": "data\n"}
    workspace = repo(stack_env, files=checks)
    task_id = submit(client, workspace="repo", prompt="Write done.txt", check_command="sh tests/check.sh", max_iterations=3,
                     protected_paths=["tests/**"])  # fmt: skip
    task = wait_for(client, task_id, {"completed", "exhausted", "failed"})

    assert task["status"] == "completed" and task["iteration"] == 2 and task["protected_paths"] == ["tests/**"]
    first, second = client.get(f"/tasks/{task_id}/iterations").json()
    assert first["protected_undone"] == ["tests/check.sh", "tests/extra.sh", "tests/fixture.txt"]
    assert first["check_exit_code"] == 1 and first["files_modified"] == [] and first["checkpoint_commit"] is None
    assert first["status"] == "no_progress" and "protected" in first["error"]
    assert second["protected_undone"] == [] and second["check_exit_code"] == 0
    prompt = git(workspace, "show", f"aistack/{task_id}:prompt.txt")
    assert "Attempt 1 changed tests/check.sh, tests/extra.sh, tests/fixture.txt, which this task does not let you change" in prompt
    for name, text in checks.items():
        assert git(workspace, "show", f"aistack/{task_id}:{name}") == text.strip()
    assert sorted(git(workspace, "diff", "--name-only", task["base_commit"], f"aistack/{task_id}").split()) == ["done.txt", "prompt.txt"]


def test_completion_promise_must_be_the_last_line(ralph, stack_env):
    agent = (
        '#!/bin/sh\necho "$AISTACK_ITERATION" >> n.txt\n'
        'if [ "$AISTACK_ITERATION" = 1 ]; then echo "I will say <promise>SHIPPED</promise> when done"; echo working;'
        ' else echo done; echo "<promise>SHIPPED</promise>"; fi\n'
    )
    client, _ = ralph(agent)
    repo(stack_env)
    task = wait_for(client, submit(client, workspace="repo", completion_promise="SHIPPED"), {"completed", "exhausted", "failed"})
    assert task["status"] == "completed" and task["iteration"] == 2
    assert task["evidence"]["rule"] == "completion_promise"
    assert task["evidence"]["promise_line"] == "<promise>SHIPPED</promise>"


def test_without_check_a_real_diff_is_the_evidence_and_no_change_gets_stuck(ralph, stack_env):
    agent = '#!/bin/sh\nif [ -f go ]; then echo change > out.txt; fi\necho "nothing to do"\n'
    client, _ = ralph(agent, RALPH_STUCK_ITERATIONS=3)
    repo(stack_env, "idle")
    repo(stack_env, "busy", {"go": "1\n"})
    idle = wait_for(client, submit(client, workspace="idle", max_iterations=10), {"completed", "exhausted", "failed"})
    assert idle["status"] == "failed" and idle["completion_reason"] == "stuck" and idle["iteration"] == 3
    assert "stuck" in idle["error"]
    busy = wait_for(client, submit(client, workspace="busy", max_iterations=10), {"completed", "exhausted", "failed"})
    assert busy["status"] == "completed" and busy["iteration"] == 1
    assert busy["evidence"]["rule"] == "diff" and busy["evidence"]["files_modified"] == ["out.txt"]


def test_files_written_by_the_check_do_not_count_as_changes(ralph, stack_env):
    agent = "#!/bin/sh\necho same\n"
    client, _ = ralph(agent)
    repo(stack_env)
    task_id = submit(client, workspace="repo", check_command="date > check-artifact; false", max_iterations=2)
    task = wait_for(client, task_id, {"exhausted", "failed", "completed"})
    iterations = client.get(f"/tasks/{task['id']}/iterations").json()
    assert [it["files_modified"] for it in iterations] == [[], []]


# --- approval and stop ----------------------------------------------------------------------------------


def test_approval_gates_even_a_single_iteration(ralph, stack_env):
    client, _ = ralph()
    workspace = repo(stack_env)
    task_id = submit(client, workspace="repo", max_iterations=1, require_approval=True)
    task = wait_for(client, task_id, {"awaiting_approval"})
    time.sleep(1.5)  # a bypass would show within one scheduler pass (1 s): this waits for an absence
    task = client.get(f"/tasks/{task_id}").json()
    assert task["status"] == "awaiting_approval" and task["iteration"] == 0
    assert client.get(f"/tasks/{task_id}/iterations").json() == []
    assert git(workspace, "log", "--format=%s", f"aistack/{task_id}") == "initial"
    events = client.get(f"/tasks/{task_id}/events.json").json()
    assert any(e["type"] == "approval_needed" and e["data"]["iteration"] == 1 for e in events)

    resp = client.post(f"/tasks/{task_id}/approve", json={"approved": True})
    assert resp.status_code == 200, resp.text
    task = wait_for(client, task_id, {"completed", "exhausted", "failed"})
    assert task["status"] == "completed" and task["iteration"] == 1
    assert client.post(f"/tasks/{task_id}/approve", json={"approved": True}).status_code == 409


def test_approval_before_every_iteration_and_reject(ralph, stack_env):
    client, _ = ralph()
    repo(stack_env)
    task_id = submit(client, workspace="repo", max_iterations=5, check_command="false", require_approval=True)
    wait_for(client, task_id, {"awaiting_approval"})
    assert client.post(f"/tasks/{task_id}/approve", params={"approved": "true"}).status_code == 200
    wait_for(client, task_id, {"awaiting_approval"}, timeout=10)
    task = client.get(f"/tasks/{task_id}").json()
    assert task["iteration"] == 1  # ran exactly one iteration, then waits again
    assert client.post(f"/tasks/{task_id}/approve").status_code == 422
    resp = client.post(f"/tasks/{task_id}/approve", json={"approved": False})
    assert resp.status_code == 200 and resp.json()["status"] == "rejected"
    assert client.get(f"/tasks/{task_id}").json()["status"] == "rejected"


def test_stop_mid_iteration_ends_the_agents_process_group(ralph, stack_env):
    pidfile = stack_env.root / "child.pid"
    # unsandboxed: the agent writes its child's pid, as this machine numbers it, outside its worktree
    client, _ = ralph(f'#!/bin/sh\nsleep 300 &\necho $! > "{pidfile}"\nwait\n', RALPH_SANDBOX="off")
    repo(stack_env)
    task_id = submit(client, workspace="repo")
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "agent never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert client.post(f"/tasks/{task_id}/stop").status_code == 202
    task = wait_for(client, task_id, {"stopped"}, timeout=20)  # not the agent's 300 s (its speed: bench_loop)
    assert task["iteration"] == 0 and task["completion_reason"] == "stopped by user"
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the agent's child process survived the stop"
    assert client.post(f"/tasks/{task_id}/stop").status_code == 409


def test_agent_leaving_a_helper_behind_finishes_and_the_helper_is_ended(ralph, stack_env):
    pidfile = stack_env.root / "helper.pid"
    # the helper inherits stdout and would hold the pipe open for 300 s
    client, _ = ralph(
        f'#!/bin/sh\necho x >> f.txt\nsleep 300 &\necho $! > "{pidfile}"\necho started a helper\n',
        RALPH_ITERATION_TIMEOUT_SECONDS=120,
        RALPH_SANDBOX="off",  # as above
    )
    repo(stack_env)
    task = wait_for(client, submit(client, workspace="repo", max_iterations=1), {"completed", "exhausted", "failed"}, timeout=15)
    assert task["status"] == "completed"
    iteration = client.get(f"/tasks/{task['id']}/iterations").json()[0]
    assert iteration["exit_code"] == 0 and "started a helper" in iteration["output_excerpt"]
    deadline = time.monotonic() + 2
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pidfile.read_text())), "the agent's background helper outlived its iteration"


def test_hung_agent_and_hung_check_are_ended_at_their_timeouts_with_their_groups(ralph, stack_env):
    """RALPH_ITERATION_TIMEOUT_SECONDS ends an agent that never returns, RALPH_CHECK_TIMEOUT_SECONDS a
    check that never returns: each is recorded as timed out, and nothing of its process group is left."""
    groups = stack_env.root / "groups"
    groups.mkdir()
    # `$$` is the group leader: each command runs in a session of its own.
    hang = f'echo $$ > "{groups}/$1"; sleep 600 & wait'
    client, _ = ralph(
        f'#!/bin/sh\ncase "$(cat "$AISTACK_PROMPT_FILE")" in hang*) {hang.replace("$1", "agent")};; esac\necho x >> f.txt\n',
        RALPH_ITERATION_TIMEOUT_SECONDS=2,
        RALPH_CHECK_TIMEOUT_SECONDS=2,
        RALPH_SANDBOX="off",  # the agent writes its host pid outside its worktree
    )
    repo(stack_env)
    agent_task = submit(client, workspace="repo", prompt="hang, agent", max_iterations=1)
    check_task = submit(client, workspace="repo", prompt="write", max_iterations=1, check_command=hang.replace("$1", "check"))
    for task_id in (agent_task, check_task):
        ended = wait_for(client, task_id, {"exhausted", "failed"}, timeout=30)
        assert ended["iteration"] == 1, ended  # a recurrence under load says why it ended before its iteration
    [agent_run] = client.get(f"/tasks/{agent_task}/iterations").json()
    assert agent_run["status"] == "error" and agent_run["error"] == "command timed out after 2 s"
    [checked] = client.get(f"/tasks/{check_task}/iterations").json()
    assert checked["status"] == "success" and checked["check_exit_code"] is None
    assert checked["check_output"].endswith("[check timed out after 2 s]")
    for name in ("agent", "check"):
        group = int((groups / name).read_text())
        assert wait_until(lambda group=group: not group_alive(group), 5), f"the {name}'s process group outlived its timeout"


def test_stop_a_queued_task(ralph, stack_env):
    client, _ = ralph("#!/bin/sh\nsleep 5\n", RALPH_MAX_CONCURRENT_TASKS=1)
    repo(stack_env)
    first = submit(client, workspace="repo")
    wait_for(client, first, {"running"})
    second = submit(client, workspace="repo")
    assert client.get(f"/tasks/{second}").json()["status"] == "queued"
    assert client.post(f"/tasks/{second}/stop").status_code == 202
    assert client.get(f"/tasks/{second}").json()["status"] == "stopped"
    client.post(f"/tasks/{first}/stop")


# --- durability -----------------------------------------------------------------------------------------


def test_kill_9_mid_task_resumes_after_last_finished_iteration(stack_env, services, database_url):
    """On each store (a SQLite file, PostgreSQL): the one end-to-end run of the service on both."""
    agent = write_script(stack_env.root / "slow.sh", '#!/bin/sh\necho "line $AISTACK_ITERATION" >> notes.txt\nsleep 0.7\necho done\n')
    stack_env.set(RALPH_COMMAND_BACKEND=str(agent), AISTACK_DATABASE_URL=database_url)
    workspace = repo(stack_env)
    first = services("ralph-wiggum", stack_env)
    client = httpx.Client(base_url=first.url, timeout=10)
    task_id = submit(client, workspace="repo", check_command="test $(wc -l < notes.txt) -ge 5", max_iterations=8)
    deadline = time.monotonic() + 20
    while not any(e["type"] == "iteration_started" and e["data"]["iteration"] == 3
                  for e in client.get(f"/tasks/{task_id}/events.json").json()):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.kill9()  # inside iteration 3

    second = services("ralph-wiggum", stack_env)
    task = wait_for(client, task_id, {"completed", "exhausted", "failed"}, timeout=30)
    assert task["status"] == "completed" and task["iteration"] == 5
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert [it["number"] for it in iterations] == [1, 2, 3, 4, 5]
    assert git(workspace, "show", f"aistack/{task_id}:notes.txt").splitlines() == [f"line {i}" for i in range(1, 6)]
    assert len(git(workspace, "log", "--format=%H", f"aistack/{task_id}").splitlines()) == 6  # 5 checkpoints + base
    second.stop()


# Iteration 1's first attempt leaves a writer behind that outlives the orchestrator: it waits for
# the re-run to begin, then writes into the tree. The re-run waits for that writer's write (or its
# end), so an orphan that is still alive then is always credited to the re-run.
ORPHANING_AGENT = """#!/bin/sh
alive() {{ read -r _ _ state _ < "/proc/$1/stat" 2>/dev/null && [ "$state" != Z ]; }}
if [ "$AISTACK_ITERATION" = 1 ] && mkdir "{root}/first" 2>/dev/null; then
    echo $$ > "{root}/first/pgid"
    ( i=0; while [ ! -e "{root}/rerun" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      echo "late write" >> notes.txt; touch "{root}/late" ) &
    echo $! > "{root}/first/writer"
    sleep 300
elif [ "$AISTACK_ITERATION" = 1 ]; then
    touch "{root}/rerun"
    writer=$(cat "{root}/first/writer")
    alive "$writer" && touch "{root}/writer-alive-at-rerun"
    i=0; while alive "$writer" && [ ! -e "{root}/late" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
echo "line $AISTACK_ITERATION" >> notes.txt
"""


def test_kill_9_mid_iteration_ends_what_the_agent_left_before_the_iteration_runs_again(stack_env, services):
    root = stack_env.root
    agent = write_script(root / "orphaning.sh", ORPHANING_AGENT.format(root=root))
    stack_env.set(RALPH_COMMAND_BACKEND=str(agent), RALPH_SANDBOX="off")  # it keeps host pids and marks outside its worktree
    workspace = repo(stack_env)
    first = services("ralph-wiggum", stack_env)
    client = httpx.Client(base_url=first.url, timeout=10)
    task_id = submit(client, workspace="repo", check_command=THREE_LINES, max_iterations=6)
    assert wait_until(lambda: (root / "first" / "writer").exists() and (root / "first" / "writer").read_text().strip())
    pgid = int((root / "first" / "pgid").read_text())
    assert wait_until(lambda: pgid in recorded_groups(stack_env)), "the orchestrator never recorded the agent's group"
    try:
        # inside iteration 1, its writer asleep; the warden goes too, so only the take-over can end the group
        os.kill(warden_of(first.proc.pid), signal.SIGKILL)
        first.kill9()
        services("ralph-wiggum", stack_env)
        task = wait_for(client, task_id, {"completed", "exhausted", "failed"}, timeout=60)
        # the group of the first attempt was ended before the re-run: its write never landed
        assert not (root / "writer-alive-at-rerun").exists() and not (root / "late").exists()
        assert group_members(pgid) == []
        assert task["status"] == "completed" and task["iteration"] == 3  # as many as the task needed, not one fewer
        assert [it["number"] for it in client.get(f"/tasks/{task_id}/iterations").json()] == [1, 2, 3]
        assert git(workspace, "show", f"aistack/{task_id}:notes.txt").splitlines() == ["line 1", "line 2", "line 3"]
        # the re-run of iteration 1 is marked as its second attempt
        starts = [(e["data"]["iteration"], e["data"]["attempt"]) for e in client.get(f"/tasks/{task_id}/events.json").json()
                  if e["type"] == "iteration_started"]  # fmt: skip
        assert starts == [(1, 1), (1, 2), (2, 1), (3, 1)]
    finally:
        for pid in group_members(pgid):  # what the old code left running
            os.kill(pid, signal.SIGKILL)


def test_agent_and_check_die_with_the_orchestrator(stack_env, services):
    root = stack_env.root
    # One task's agent waits for a helper it started; the other's agent is quick, and its check
    # waits for a helper. Their whole groups go: the helpers too, not only the leaders.
    agent = f'mkdir "{root}/agent" 2>/dev/null && {{ sleep 300 & echo $! > "{root}/agent/pid"; wait; }}; echo x >> f.txt'
    check = f'sleep 300 & echo $! > "{root}/check.pid"; wait'
    stack_env.set(
        RALPH_COMMAND_BACKEND=str(write_script(root / "agent.sh", f"#!/bin/sh\n{agent}\n")),
        RALPH_MAX_CONCURRENT_TASKS=2,
        RALPH_SANDBOX="off",
    )  # it keeps host pids outside its worktree; bwrap's own death is its --die-with-parent
    repo(stack_env)
    ralph = services("ralph-wiggum", stack_env)
    client = httpx.Client(base_url=ralph.url, timeout=10)
    for _ in range(2):
        submit(client, workspace="repo", check_command=check)
    pidfiles = [root / "agent" / "pid", root / "check.pid"]
    assert wait_until(lambda: all(p.exists() and p.read_text().strip() for p in pidfiles)), ralph.log()[-2000:]
    pids = [int(p.read_text()) for p in pidfiles]
    groups = {os.getpgid(pid) for pid in pids}
    assert wait_until(lambda: groups <= recorded_groups(stack_env)), "the orchestrator never recorded its groups"  # watched since
    try:
        ralph.kill9()
        assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), "the agent or the check outlived the orchestrator"
    finally:
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)


def test_queued_tasks_run_fifo_within_the_concurrency_limit(ralph, stack_env):
    client, _ = ralph("#!/bin/sh\necho x >> f.txt\nsleep 0.3\n", RALPH_MAX_CONCURRENT_TASKS=1)
    repo(stack_env)
    ids = [submit(client, workspace="repo", max_iterations=1) for _ in range(3)]
    tasks = [wait_for(client, i, {"completed"}) for i in ids]
    starts = [t["started_at"] for t in tasks]
    assert starts == sorted(starts)
    for earlier, later in zip(tasks, tasks[1:], strict=False):
        assert later["started_at"] >= earlier["finished_at"]


# --- transient failures -----------------------------------------------------------------------------------


def test_unreachable_backend_does_not_consume_iterations_then_fails_naming_it(ralph, stack_env):
    client, _ = ralph(RALPH_TRANSIENT_RETRY_SECONDS=3)
    repo(stack_env)
    task_id = submit(client, workspace="repo", backend="aider", max_iterations=3)
    task = wait_for(client, task_id, {"failed", "completed", "exhausted"}, timeout=20)
    assert task["status"] == "failed" and task["iteration"] == 0
    assert "aider-wrapper" in task["error"] and stack_env.url("aider-wrapper") in task["error"]
    assert client.get(f"/tasks/{task_id}/iterations").json() == []
    events = client.get(f"/tasks/{task_id}/events.json").json()
    assert sum(e["type"] == "transient_retry" for e in events) >= 2


# --- input validation -------------------------------------------------------------------------------------


def test_bad_submissions_get_4xx_naming_the_field(ralph, stack_env, tmp_path):
    client, proc = ralph()
    repo(stack_env)
    (stack_env.workspace_root / "plain").mkdir()
    make_git_repo(tmp_path / "outside")
    (stack_env.workspace_root / "escape").symlink_to(tmp_path / "outside")
    empty = stack_env.workspace_root / "empty"
    empty.mkdir()
    git(empty, "init", "-q")

    cases = [
        ({"backend": "nope"}, "backend", "unknown backend 'nope'; available: aider, command, "),
        ({"max_iterations": 0}, "max_iterations", "between 1 and 100"),
        ({"max_iterations": 101}, "max_iterations", "between 1 and 100"),
        ({"workspace": "../outside"}, "workspace", "outside"),
        ({"workspace": str(tmp_path / "outside")}, "workspace", "outside"),
        ({"workspace": "escape"}, "workspace", "outside"),
        ({"workspace": "plain"}, "workspace", "not a git repository"),
        ({"workspace": "missing"}, "workspace", "does not exist"),
        ({"workspace": "empty"}, "workspace", "without commits"),
        ({"prompt": ""}, "prompt", "at least 1"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"context": {"files": "a.py"}}, "context.files", "list"),
        ({"protected_paths": ["tests/**", "../outside/x"]}, "protected_paths.1", "inside the repository"),
        ({"protected_paths": ["/etc/passwd"]}, "protected_paths.0", "not absolute"),
        ({"protected_paths": [":(top)x"]}, "protected_paths.0", "not starting with ':'"),
        ({"protected_paths": "tests"}, "protected_paths", "valid list"),
    ]
    for extra, field, words in cases:
        body = {"prompt": "p", "backend": "command", "workspace": "repo", **extra}
        resp = client.post("/tasks", json=body)
        assert 400 <= resp.status_code < 500, (extra, resp.text)
        assert resp.json()["field"] == field, (extra, resp.json())
        assert words in resp.json()["detail"], (extra, resp.json())
    assert client.post("/tasks", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/tasks/unknown").status_code == 404
    assert client.get("/tasks", params={"status": "bogus"}).status_code == 422
    assert client.get("/tasks", params={"limit": 0}).status_code == 422
    assert client.get("/tasks").json()["total"] == 0  # nothing was stored
    # Where a symlink leads is told to the server's log, never to the client.
    escape = client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": "escape"}).json()["detail"]
    assert "outside the allowed root" in escape and str(tmp_path / "outside") not in escape
    assert str(tmp_path / "outside") in proc.log()


SLOW_AGENT = """#!/bin/sh
echo working
exec sleep 30
"""

GOOSE = """#!/bin/sh
# stands where goose would be on PATH: does the task from the prompt file, shows what it was told
cp "$AISTACK_PROMPT_FILE" done.txt
echo "goose for $GOOSE_MODEL at $OPENAI_HOST"
"""


def test_only_available_backends_take_tasks_and_a_preset_becomes_available_on_path(ralph, stack_env, services, tmp_path):
    client, proc = ralph()
    repo(stack_env)
    health = {b["name"]: b for b in client.get("/health").json()["backends"]}
    assert {"aider", "command", "continue", "opencode", "qwen-code", "goose", "autogpt"} <= set(health)
    assert health["goose"]["available"] is False and health["goose"]["detail"].startswith("not installed: 'goose' is not on PATH")
    assert health["autogpt"]["available"] is False and "not installed" in health["autogpt"]["detail"]
    assert health["command"]["available"] is True
    assert client.get("/health").json()["status"] == "degraded"  # the wrapper is not running; goose not being installed degrades nothing
    refused = client.post("/tasks", json={"prompt": "p", "backend": "goose", "workspace": "repo"})
    assert refused.status_code == 422 and refused.json()["field"] == "backend"
    detail = refused.json()["detail"]
    assert detail.startswith("backend 'goose' is unavailable: not installed") and "available: aider, command" in detail
    assert "goose" not in detail.split("available: ")[-1] and "autogpt" not in detail.split("available: ")[-1]
    assert client.get("/tasks").json()["total"] == 0

    # goose on the service's PATH: the preset runs it, in the worktree, told where the LLM is
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir / "goose", GOOSE)
    proc.stop()
    services("ralph-wiggum", stack_env, {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    health = {b["name"]: b for b in client.get("/health").json()["backends"]}
    assert health["goose"]["available"] is True and health["autogpt"]["available"] is False
    task_id = submit(client, backend="goose", workspace="repo", prompt="write done.txt", check_command="test -s done.txt")
    task = wait_for(client, task_id, {"completed", "failed", "exhausted"})
    assert task["status"] == "completed", task
    iteration = client.get(f"/tasks/{task_id}/iterations").json()[0]
    assert iteration["files_modified"] == ["done.txt"]
    assert iteration["output_excerpt"].strip() == f"goose for local-coder at http://127.0.0.1:{stack_env.values['LLAMA_CPP_PORT']}"


def test_per_backend_limits_from_the_env(ralph, stack_env):
    client, _ = ralph(SLOW_AGENT, RALPH_BACKEND_MAX_ITERATIONS="command=2,opencode=9", RALPH_BACKEND_TIMEOUT_SECONDS="command=1")
    repo(stack_env)
    task = wait_for(client, submit(client, workspace="repo", check_command="false"), {"exhausted", "failed"})
    assert (task["max_iterations"], task["limit_source"], task["status"]) == (2, "backend", "exhausted")
    iterations = client.get(f"/tasks/{task['id']}/iterations").json()
    assert [it["error"] for it in iterations] == ["command timed out after 1 s"] * 2
    asked = wait_for(client, submit(client, workspace="repo", check_command="false", max_iterations=1), {"exhausted", "failed"})
    assert (asked["max_iterations"], asked["limit_source"]) == (1, "request")  # a request's own limit wins


def test_what_no_agent_could_take_is_refused_up_front_with_a_short_422(ralph, stack_env):
    """Each of these was accepted and failed later (a prompt too big for the environment, a NUL
    no process takes), or was a 500 (a NUL after `~`, a lone surrogate, a name too long)."""
    client, _ = ralph(RALPH_LOOP_ENABLED=False)
    repo(stack_env)
    cases = [
        ({"prompt": "x" * 70_000}, "prompt", "at most 65536 characters"),
        ({"prompt": "x" * 250_000}, "prompt", "at most 65536 characters"),  # was refused, and echoed whole
        ({"prompt": "fix it\x00"}, "prompt", "NUL"),
        ({"check_command": "true\x00rm -rf ."}, "check_command", "NUL"),
        ({"workspace": "~\x00"}, "workspace", "NUL"),
        ({"workspace": "\ud800"}, "workspace", "Unicode"),
        ({"completion_promise": "done\udc80"}, "completion_promise", "Unicode"),
        ({"workspace": "x" * 300}, "workspace", "at most 255"),
        ({"workspace": "/".join(["x" * 200] * 25)}, "workspace", "at most 4096"),
        ({"context": {"files": ["a.py\x00"]}}, "context", "NUL"),
        ({"context": {"files": ["x" * 5_000]}}, "context.files", "at most 4096 characters"),  # what the wrapper refuses
        ({"context": {"read_only_files": ["a.py"] * 1_001}}, "context.read_only_files", "at most 1000 items"),
        ({"context": {"\ud800": 1}}, "context", "Unicode"),
        ({"context": {"notes": "x" * 10_000_000}}, "context", "at most 65536 bytes"),
    ]
    for extra, field, words in cases:
        body = json.dumps({"prompt": "p", "backend": "command", "workspace": "repo", **extra})  # escapes \ud800 as any client may
        resp = client.post("/tasks", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 422, (extra.keys(), resp.status_code, resp.text[:300])
        assert resp.json()["field"] == field and words.lower() in resp.json()["detail"].lower(), resp.json()
        assert len(resp.content) < 1_000, resp.text[:300]  # what was refused is named, not echoed
    assert client.get("/tasks").json()["total"] == 0


def test_a_last_event_id_that_is_no_event_id_is_a_422(ralph, stack_env):
    client, _ = ralph(RALPH_LOOP_ENABLED=False)
    repo(stack_env)
    task_id = submit(client, workspace="repo")
    for header in (b"\xb2", b"9" * 5_000, b"-1", b"12abc"):  # "²" is a digit to str.isdigit, not to int()
        resp = client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": header})
        assert resp.status_code == 422, (header[:10], resp.status_code, resp.text[:300])
        assert resp.json()["field"] == "last-event-id"


def test_a_git_file_pointing_out_of_the_root_is_refused_and_nothing_is_written_there(ralph, stack_env, tmp_path):
    client, _ = ralph()
    outside = make_git_repo(tmp_path / "outside")
    sneaky = stack_env.workspace_root / "sneaky"  # a work tree inside the root, its repository outside
    sneaky.mkdir()
    (sneaky / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    git(outside, "worktree", "add", "-q", str(stack_env.workspace_root / "linked"))  # the same, made by git itself
    refs, trees = git(outside, "for-each-ref"), git(outside, "worktree", "list")
    for name in ("sneaky", "linked"):
        resp = client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": name, "check_command": "true"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["field"] == "workspace" and "outside the allowed root" in resp.json()["detail"]
    assert client.get("/tasks").json()["total"] == 0
    assert (git(outside, "for-each-ref"), git(outside, "worktree", "list")) == (refs, trees)


def test_a_git_file_pointed_out_of_the_root_after_submission_fails_the_task_untouched(stack_env, services, tmp_path):
    agent = write_script(stack_env.root / "agent.sh", AGENT)
    stack_env.set(RALPH_COMMAND_BACKEND=str(agent), RALPH_LOOP_ENABLED=False)
    outside = make_git_repo(tmp_path / "outside")
    workspace = repo(stack_env)
    accepting = services("ralph-wiggum", stack_env)
    client = httpx.Client(base_url=accepting.url, timeout=10)
    task_id = submit(client, workspace="repo", check_command="true")
    accepting.stop()
    shutil.rmtree(workspace / ".git")  # queued meanwhile: its repository is swapped for one outside the root
    (workspace / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    refs = git(outside, "for-each-ref")

    services("ralph-wiggum", stack_env.set(RALPH_LOOP_ENABLED=True))
    task = wait_for(client, task_id, {"failed", "completed", "exhausted"})
    assert task["status"] == "failed" and "outside the allowed root" in task["error"], task
    assert git(outside, "for-each-ref") == refs and "aistack/" not in git(outside, "branch", "--all")


def test_bad_env_value_stops_the_service_with_one_line(stack_env):
    stack_env.set(RALPH_MAX_ITERATIONS_CAP="lots")
    proc = subprocess.run([*AISTACK, "serve", "ralph-wiggum"], env=child_env(stack_env), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "RALPH_MAX_ITERATIONS_CAP='lots'" in lines[0] and "1 to 10000" in lines[0]


def test_non_loopback_bind_without_key_is_refused(stack_env):
    stack_env.set(AISTACK_BIND_ADDRESS="0.0.0.0")
    proc = subprocess.run([*AISTACK, "serve", "ralph-wiggum"], env=child_env(stack_env), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "RALPH_WIGGUM_API_KEY" in proc.stderr


def test_api_key_guards_everything_but_health_and_healths_details(ralph, stack_env):
    client, proc = ralph(RALPH_WIGGUM_API_KEY="s3cret-key")
    # Without the key /health says only what a readiness probe needs, not the agent's command.
    bare = client.get("/health")
    assert bare.status_code == 200 and set(bare.json()) == {"status"} and bare.json()["status"] in ("healthy", "degraded")
    full = client.get("/health", headers={"X-API-Key": "s3cret-key"}).json()
    assert {b["name"]: b["detail"] for b in full["backends"]}["command"] == stack_env.values["RALPH_COMMAND_BACKEND"]
    assert full["status"] == bare.json()["status"]
    for path in ("/tasks", "/stats", "/stats/daily", "/metrics", "/config/limits"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get(path, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert "s3cret-key" not in proc.log()


# --- observability --------------------------------------------------------------------------------------


def test_health_lists_backends_and_is_degraded_when_wrapper_is_down(ralph):
    client, _ = ralph()
    deadline = time.monotonic() + 10
    while True:
        health = client.get("/health").json()
        aider = next(b for b in health["backends"] if b["name"] == "aider")
        if aider["reachable"] is False or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert health["status"] == "degraded" and health["loop_enabled"] is True
    assert {b["name"] for b in health["backends"]} == {
        "aider",
        "command",
        "continue",
        "opencode",
        "qwen-code",
        "goose",
        "autogpt",
        "langchain",
        "mini-swe-agent",
    }


def test_health_says_why_mini_swe_agent_is_unavailable(ralph, stack_env):
    client, _ = ralph(RALPH_MINI_SWE_AGENT_BIN=stack_env.root / "no" / "mini")
    backends = {b["name"]: b for b in client.get("/health").json()["backends"]}
    mini = backends["mini-swe-agent"]
    assert mini["available"] is False and mini["detail"].startswith(f"not installed: {stack_env.root / 'no' / 'mini'}")
    assert "setup.sh" in mini["detail"]
    assert backends["langchain"]["available"] is True  # a dependency of the stack: always installed
    assert backends["langchain"]["url"] == stack_env.url("llama-cpp") + "/v1"


def test_events_stream_is_resumable(ralph, stack_env):
    client, _ = ralph()
    repo(stack_env)
    task_id = submit(client, workspace="repo", check_command=THREE_LINES)
    wait_for(client, task_id, {"completed"})

    def read_stream(headers=None):
        events = []
        with client.stream("GET", f"/tasks/{task_id}/events", headers=headers or {}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            current = {}
            for line in resp.iter_lines():
                if line.startswith("id:"):
                    current["id"] = int(line[3:])
                elif line.startswith("event:"):
                    current["event"] = line[6:].strip()
                elif line == "" and current:
                    events.append(current)
                    current = {}
        return events

    everything = read_stream()
    kinds = [e["event"] for e in everything]
    assert kinds[0] == "status" and kinds[-1] == "end"
    assert kinds.count("iteration_started") == 3 and kinds.count("iteration_finished") == 3 and kinds.count("check") == 3
    middle = everything[4]["id"]
    resumed = read_stream({"Last-Event-ID": str(middle)})
    assert [e["id"] for e in resumed if "id" in e] == [e["id"] for e in everything if e.get("id", 0) > middle]


def test_stats_metrics_and_live_limit_reload(ralph, stack_env):
    client, _ = ralph()
    repo(stack_env)
    wait_for(client, submit(client, workspace="repo", check_command="true"), {"completed"})
    wait_for(client, submit(client, workspace="repo", check_command="false", max_iterations=2), {"exhausted"})
    stats = client.get("/stats").json()
    assert stats["by_status"] == {"completed": 1, "exhausted": 1} and stats["total"] == 2
    assert stats["mean_iterations"] == 1.5
    assert stats["per_backend"]["command"] == {"total": 2, "completed": 1, "success_rate": 0.5, "iterations_per_solved": 1.0,
                                               "tokens_per_solved": 0.0}  # fmt: skip
    days = {task["finished_at"][:10] for task in client.get("/tasks").json()["items"]}  # UTC, as the API writes it
    daily = client.get("/stats/daily").json()["per_backend"]
    assert {r["day"] for r in daily} == days and {r["group"] for r in daily} == {"command"}
    assert sum(r["total"] for r in daily) == 2 and sum(r["completed"] for r in daily) == 1
    metrics = client.get("/metrics").text
    # the second iteration of the exhausted task appended a line again, said the same, and the check got no further
    assert 'aistack_iterations_total{backend="command",status="success"} 2.0' in metrics
    assert 'aistack_iterations_total{backend="command",status="no_progress"} 1.0' in metrics
    assert 'aistack_tasks{backend="command",status="completed"} 1.0' in metrics

    stack_env.set(RALPH_MAX_ITERATIONS_SIMPLE=4, RALPH_MAX_ITERATIONS_CAP=40)
    assert client.post("/config/reload").json()["ralph_max_iterations_simple"] == 4
    task_id = submit(client, workspace="repo", prompt="fix the typo")
    assert client.get(f"/tasks/{task_id}").json()["max_iterations"] == 4
    assert client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": "repo", "max_iterations": 41}).status_code == 422
    stack_env.set(RALPH_MAX_ITERATIONS_SIMPLE="many")
    resp = client.post("/config/reload")
    assert resp.status_code == 422 and "RALPH_MAX_ITERATIONS_SIMPLE" in resp.json()["detail"]
    assert client.get("/config/limits").json()["ralph_max_iterations_simple"] == 4


def test_tasks_on_the_same_repository_run_at_once(ralph, stack_env):
    client, _ = ralph('#!/bin/sh\necho "$AISTACK_TASK_ID" > who.txt\nsleep 0.5\n', RALPH_MAX_CONCURRENT_TASKS=2)
    workspace = repo(stack_env)
    a, b = submit(client, workspace="repo", max_iterations=1), submit(client, workspace="repo", max_iterations=1)
    ta, tb = wait_for(client, a, {"completed"}), wait_for(client, b, {"completed"})
    assert ta["started_at"] < tb["finished_at"] and tb["started_at"] < ta["finished_at"]  # overlapped
    assert git(workspace, "show", f"aistack/{a}:who.txt") == a and git(workspace, "show", f"aistack/{b}:who.txt") == b
    page = client.get("/tasks", params={"limit": 1}).json()
    assert page["total"] == 2 and [t["id"] for t in page["items"]] == [b]
    assert [t["id"] for t in client.get("/tasks", params={"limit": 1, "offset": 1}).json()["items"]] == [a]
    assert client.get("/tasks", params={"status": "queued"}).json()["total"] == 0
