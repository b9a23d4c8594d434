"""The loop's strategies through a real orchestrator: `aistack serve ralph-wiggum`, real git, the
`command` backend running real shell scripts, and real pytest as the check."""

from __future__ import annotations

import shlex
import sys
import time

import httpx
import pytest

from support import StackEnv, git, make_git_repo

ENDED = {"completed", "exhausted", "failed", "stopped"}


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    """Start ralph-wiggum with `agent` (a shell script) as its command backend; an httpx client."""
    clients: list[httpx.Client] = []

    def start(agent: str, **settings) -> httpx.Client:
        script = stack_env.root / "agent.sh"
        script.write_text(agent)
        script.chmod(0o755)
        stack_env.set(RALPH_COMMAND_BACKEND=str(script), **settings)
        clients.append(httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=10))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def finish(client: httpx.Client, body: dict, timeout: float = 120) -> tuple[dict, list[dict], list[dict]]:
    """Submit a task and wait for its end: the task, its iterations, its events."""
    resp = client.post("/tasks", json={"backend": "command", "workspace": "repo", **body})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    deadline = time.monotonic() + timeout
    while (task := client.get(f"/tasks/{task_id}").json())["status"] not in ENDED:
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
    return task, client.get(f"/tasks/{task_id}/iterations").json(), client.get(f"/tasks/{task_id}/events.json").json()


NO_OP = """#!/bin/sh
cat > {log}/prompt-$AISTACK_ITERATION.txt
echo "temperature=$AISTACK_TEMPERATURE seed=$AISTACK_SEED" > {log}/sampling-$AISTACK_ITERATION.txt
if [ "$AISTACK_ITERATION" = 3 ]; then echo "x = 1" > fix.py; fi
printf 'I fixed the spacing.\\n```\\n```\\n'
"""


def test_a_no_op_iteration_is_no_progress_and_the_next_request_differs(ralph, stack_env, tmp_path):
    """The observed failure: a reply announcing a fix with an empty code block, recorded as a
    success, then the very same request again. Now, with the default strategy: `no_progress`, and
    a request that differs: the prompt names the attempt that got nowhere and quotes its reply."""
    log = tmp_path / "requests"
    log.mkdir()
    client = ralph(NO_OP.format(log=log), RALPH_SANDBOX="off")  # the agent writes its requests outside the worktree
    make_git_repo(stack_env.workspace_root / "repo")
    task, iterations, _ = finish(client, {"prompt": "Fix it", "check_command": "test -f fix.py", "max_iterations": 4})

    assert task["status"] == "completed" and task["iteration"] == 3
    assert [it["status"] for it in iterations] == ["no_progress", "no_progress", "success"]
    assert iterations[0]["error"] == "no progress: changed no file" and iterations[0]["files_modified"] == []
    prompts = [(log / f"prompt-{n}.txt").read_text() for n in (1, 2, 3)]
    assert len(set(prompts)) == 3  # never the same request twice
    assert prompts[0] == "Fix it"
    assert "Attempt 1 changed no file." in prompts[1] and "I fixed the spacing." in prompts[1]  # carried: its reply, quoted
    assert "Attempt 2 changed no file." in prompts[2]
    assert {(log / f"sampling-{n}.txt").read_text().strip() for n in (1, 2, 3)} == {"temperature= seed="}  # no diversity asked
    todays = {"keep_best": False, "feedback": "tail", "diversity": False, "context": "carried", "candidates": 1, "restart": False}
    assert task["strategy"] == todays


def test_diversity_gives_each_retry_a_hotter_temperature_and_its_own_seed_and_fresh_context_no_old_reply(ralph, stack_env, tmp_path):
    log = tmp_path / "requests"
    log.mkdir()
    client = ralph(NO_OP.format(log=log), RALPH_SANDBOX="off")
    make_git_repo(stack_env.workspace_root / "repo")
    body = {"prompt": "Fix it", "check_command": "test -f fix.py", "max_iterations": 4, "strategy": {"diversity": True, "context": "fresh"}}
    task, _, _ = finish(client, body)
    assert task["status"] == "completed" and task["strategy"]["diversity"] is True and task["strategy"]["context"] == "fresh"
    sampling = [(log / f"sampling-{n}.txt").read_text().strip() for n in (1, 2, 3)]
    assert sampling == ["temperature= seed=", "temperature=0.4 seed=2", "temperature=0.7 seed=3"]
    second = (log / "prompt-2.txt").read_text()
    assert "Attempt 1 changed no file." in second and "I fixed the spacing." not in second


CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
TESTS = (
    "from calc import add, sub\n\n\ndef test_add():\n    assert add(1, 1) == 2\n\n\n"
    "def test_sub():\n    assert sub(3, 1) == 2\n\n\ndef test_ok():\n    assert True\n"
)


def test_keep_best_undoes_a_worse_attempt_and_tells_the_next_one_with_shaped_feedback(ralph, stack_env, tmp_path):
    log = tmp_path / "requests"
    log.mkdir()
    # 1: a change that leaves the check as it was (1 failing); 2: breaks sub too (2 failing);
    # 3: says what calc.py holds when it starts, then fixes add.
    agent = f"""#!/bin/sh
cat > {log}/prompt-$AISTACK_ITERATION.txt
case "$AISTACK_ITERATION" in
  1) echo "notes" > notes.txt; echo "added notes";;
  2) sed -i 's/return a - b/return 0/g' calc.py; echo "changed both";;
  3) echo "calc.py holds:"; cat calc.py; sed -i '0,/return a - b/s//return a + b/' calc.py;;
esac
"""
    client = ralph(agent, RALPH_SANDBOX="off")
    repo = make_git_repo(stack_env.workspace_root / "repo", {"calc.py": CALC, "test_calc.py": TESTS})
    check = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -B -m pytest -q -p no:cacheprovider"
    body = {"prompt": "Fix add", "check_command": check, "max_iterations": 3, "strategy": {"keep_best": True, "feedback": "shaped"}}
    task, iterations, events = finish(client, body)

    assert task["status"] == "completed" and task["iteration"] == 3, (task, iterations)
    assert task["strategy"]["keep_best"] is True and task["strategy"]["feedback"] == "shaped"
    assert [it["files_modified"] for it in iterations] == [["notes.txt"], ["calc.py"], ["calc.py"]]
    restored = [e["data"] for e in events if e["type"] == "checkpoint_restored"]
    c1, c2, c3 = (it["checkpoint_commit"] for it in iterations)
    assert restored == [{"iteration": 2, "to_iteration": 1, "commit": c1, "reason": "2 failing, 1 passing, worse than after iteration 1"}]
    finished = [e["data"] for e in events if e["type"] == "iteration_finished"]
    assert [(f["best_iteration"], f["best_checkpoint"]) for f in finished] == [(1, c1), (1, c1), (3, c3)]
    # iteration 3 started from iteration 1's files, not from the worse attempt's
    assert "calc.py holds:\n" + CALC in iterations[2]["output_excerpt"]
    assert git(repo, "rev-parse", f"aistack/{task['id']}~1") == c1 and c2 not in git(repo, "log", "--format=%H", f"aistack/{task['id']}")
    third = (log / "prompt-3.txt").read_text()
    assert (
        "Attempt 2 changed calc.py and made the check worse (2 failing, 1 passing, against 1 failing, 2 passing after attempt 1)" in third
    )
    # shaped: the first failure of the files as they are now (iteration 1's), not the pytest run's tail
    assert ">       assert add(1, 1) == 2\nE       assert 0 == 2" in third and "short test summary" not in third
    assert "test_sub" not in third


def test_a_worse_last_attempt_leaves_the_branch_at_the_best_checkpoint(ralph, stack_env):
    agent = '#!/bin/sh\nif [ "$AISTACK_ITERATION" = 1 ]; then echo notes > notes.txt; else echo "broken(" > calc.py; fi\necho ok\n'
    client = ralph(agent)
    repo = make_git_repo(stack_env.workspace_root / "repo", {"calc.py": CALC, "test_calc.py": TESTS})
    check = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -B -m pytest -q -p no:cacheprovider"
    task, iterations, _ = finish(
        client, {"prompt": "Fix add", "check_command": check, "max_iterations": 2, "strategy": {"keep_best": True}}
    )
    assert task["status"] == "exhausted" and [it["check_exit_code"] for it in iterations] == [1, 2]
    assert git(repo, "rev-parse", f"aistack/{task['id']}") == iterations[0]["checkpoint_commit"]
    assert git(repo, "show", f"aistack/{task['id']}:calc.py") == CALC.strip()


def test_restart_gives_each_retry_the_base_files_and_ends_at_the_best_attempt(ralph, stack_env, tmp_path):
    log = tmp_path / "requests"
    log.mkdir()
    # every attempt says what calc.py holds when it starts; 1 leaves 1 test failing (notes only),
    # 2 breaks sub too (2 failing), 3 breaks add in another way (still failing): the best is 1
    agent = f"""#!/bin/sh
cat > {log}/prompt-$AISTACK_ITERATION.txt
echo "calc.py holds:"; cat calc.py
case "$AISTACK_ITERATION" in
  1) echo "notes" > notes.txt;;
  2) sed -i 's/return a - b/return 0/g' calc.py;;
  3) sed -i '0,/return a - b/s//return b - a/' calc.py;;
esac
"""
    client = ralph(agent, RALPH_SANDBOX="off")
    repo = make_git_repo(stack_env.workspace_root / "repo", {"calc.py": CALC, "test_calc.py": TESTS})
    check = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -B -m pytest -q -p no:cacheprovider"
    body = {"prompt": "Fix add", "check_command": check, "max_iterations": 3, "strategy": {"restart": True}}
    task, iterations, events = finish(client, body)

    assert task["status"] == "exhausted" and task["strategy"]["restart"] is True, (task, iterations)
    assert [it["check_exit_code"] for it in iterations] == [1, 1, 1]
    assert [it["files_modified"] for it in iterations] == [["notes.txt"], ["calc.py"], ["calc.py"]]  # each against the base
    assert all("calc.py holds:\n" + CALC in it["output_excerpt"] for it in iterations[1:])  # 2 and 3 began from the base files
    restored = [(e["data"]["commit"], e["data"]["reason"]) for e in events if e["type"] == "checkpoint_restored"]
    c1 = iterations[0]["checkpoint_commit"]
    assert restored == [(task["base_commit"], "restart"), (task["base_commit"], "restart"), (c1, "the task ended: its best attempt")]
    assert git(repo, "rev-parse", f"aistack/{task['id']}") == c1 and git(repo, "show", f"aistack/{task['id']}:notes.txt") == "notes"
    assert "The files are back as they were before attempt 2" in (log / "prompt-3.txt").read_text()


def test_strategy_defaults_come_from_the_env_and_bad_values_are_a_422_naming_the_field(ralph, stack_env):
    client = ralph("#!/bin/sh\necho ok\n", RALPH_LOOP_ENABLED=False, RALPH_STRATEGY_FEEDBACK="shaped", RALPH_STRATEGY_KEEP_BEST=True)
    make_git_repo(stack_env.workspace_root / "repo")
    resp = client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": "repo", "strategy": {"keep_best": False}})
    assert resp.status_code == 202, resp.text
    shown = client.get(f"/tasks/{resp.json()['task_id']}").json()["strategy"]
    assert shown == {"keep_best": False, "feedback": "shaped", "diversity": False, "context": "carried", "candidates": 1, "restart": False}
    for strategy, field, words in [
        ({"feedback": "all"}, "strategy.feedback", "'tail' or 'shaped'"),
        ({"context": "none"}, "strategy.context", "'carried' or 'fresh'"),
        ({"candidates": 3}, "strategy.candidates", "1 or 2"),
        ({"keep_best": "maybe"}, "strategy.keep_best", "boolean"),
        ({"temperature": 1}, "strategy.temperature", "Extra inputs"),
    ]:
        resp = client.post("/tasks", json={"prompt": "p", "backend": "command", "workspace": "repo", "strategy": strategy})
        assert resp.status_code == 422 and resp.json()["field"] == field and words in resp.json()["detail"], (strategy, resp.text)


def test_two_candidates_run_at_once_in_trees_of_their_own_and_the_better_one_is_kept(ralph, stack_env):
    # Each attempt waits (up to 20 s) until both have started, in the task's home that both share:
    # it counts 2 only if they run at once. The second attempt (sampled otherwise: it has a seed)
    # fixes add; the first only adds notes.
    agent = """#!/bin/sh
me=${AISTACK_SEED:-first}
mkdir -p "$HOME/started" && touch "$HOME/started/$me"
i=0
while [ "$(ls "$HOME/started" | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
if [ "$me" = first ]; then echo notes > notes.txt; else sed -i '0,/return a - b/s//return a + b/' calc.py; fi
echo "attempt $me saw $(ls "$HOME/started" | wc -l) started"
"""
    client = ralph(agent)  # in the service's sandbox, as a task runs by default
    repo = make_git_repo(stack_env.workspace_root / "repo", {"calc.py": CALC, "test_calc.py": TESTS})
    check = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -B -m pytest -q -p no:cacheprovider"
    body = {"prompt": "Fix add", "check_command": check, "max_iterations": 1, "strategy": {"candidates": 2}}
    task, iterations, events = finish(client, body)

    assert task["status"] == "completed" and task["strategy"]["candidates"] == 2, (task, iterations)
    [it] = iterations
    assert it["files_modified"] == ["calc.py"] and it["output_excerpt"].strip() == "attempt 10001 saw 2 started"  # at once
    checks = ["1 failing, 2 passing", "the check passed"]
    assert [e["data"] for e in events if e["type"] == "candidates"] == [{"iteration": 1, "kept": 2, "checks": checks}]
    branch = f"aistack/{task['id']}"
    assert git(repo, "rev-parse", branch) == it["checkpoint_commit"] and "return a + b" in git(repo, "show", f"{branch}:calc.py")
    assert "notes.txt" not in git(repo, "ls-tree", "--name-only", branch)  # the first attempt's work is not on the branch
    assert ".2" not in git(repo, "worktree", "list")  # the second attempt's tree is gone
