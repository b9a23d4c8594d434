"""The agents that talk to the LLM themselves, for real: llama-server with the bundled coder model
and the orchestrator as separate processes, the langchain agent inside the orchestrator and
mini-swe-agent as its own process in the task's worktree. Each is to complete the hello task with
evidence (its check passes), in a few iterations at most: the loop exists for that. The bundled
1.5B model manages it with the langchain agent, not (yet) with mini-swe-agent."""

from __future__ import annotations

import httpx
import pytest
from test_loop_end_to_end import wait_terminal

from aistack.config import Settings
from aistack.ralph_wiggum.backends.mini_swe_agent import find_mini
from support import ServiceProcess, git, make_git_repo, missing, new_stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

PROMPT = "Create hello.py with a function hello() that returns 'hello'"
CHECK = "python3 -c \"import hello; assert hello.hello() == 'hello'\""
MODEL_LOAD_SECONDS = 300
TASK_SECONDS = 3000  # a few iterations of a 1.5B model on two shared cores


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """llama-cpp and ralph-wiggum, started once for both backends (the model takes a while to load)."""
    env = new_stack_env(tmp_path_factory.mktemp("agents"))
    env.set(LLAMA_CPP_MODEL="qwen2.5-coder-1.5b", RALPH_TRANSIENT_RETRY_SECONDS=180, RALPH_MAX_CONCURRENT_TASKS=1,
            RALPH_MINI_SWE_AGENT_STEP_LIMIT=2)  # fmt: skip
    started = [ServiceProcess("llama-cpp", env).wait_healthy(MODEL_LOAD_SECONDS)]
    started.append(ServiceProcess("ralph-wiggum", env).wait_healthy())
    client = httpx.Client(base_url=env.url("ralph-wiggum"), timeout=30)
    yield env, client
    client.close()
    for proc in reversed(started):
        proc.stop()


def completes_hello_task(stack, backend: str, workspace: str) -> tuple[dict, list[dict]]:
    env, client = stack
    repo = make_git_repo(env.workspace_root / workspace)
    body = {"prompt": PROMPT, "workspace": workspace, "check_command": CHECK, "max_iterations": 4, "backend": backend}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    task = wait_terminal(client, task_id, timeout=TASK_SECONDS)
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert task["status"] == "completed", (task, [(it["status"], it["error"], it["output_excerpt"]) for it in iterations])
    assert task["backend"] == backend
    assert task["evidence"]["rule"] == "check_command" and task["evidence"]["check_exit_code"] == 0
    assert any("hello.py" in it["files_modified"] for it in iterations)  # from git, as for every backend
    assert "def hello" in git(repo, "show", f"aistack/{task_id}:hello.py")
    assert git(repo, "status", "--porcelain") == "" and not (repo / "hello.py").exists()  # the user's checkout is untouched
    assert all(it["tokens"]["prompt"] > 0 and it["tokens"]["completion"] > 0 for it in iterations if it["status"] == "success")
    return task, iterations


def test_langchain_agent_completes_the_hello_task_with_evidence(stack):
    task, iterations = completes_hello_task(stack, "langchain", "lc")
    assert any("→ write_file(path='hello.py'" in it["output_excerpt"] for it in iterations)  # it used its tools
    assert not any(".pyc" in path for it in iterations for path in it["files_modified"])  # its check left no caches


def test_mini_swe_agent_runs_an_iteration_on_the_bundled_model(stack):
    """The 1.5B model does not drive mini-swe-agent to the end: its replies carry no bash tool call
    (docs/benchmarks.md#agent-backends), and four iterations of trying would take an hour of CPU.
    Proven here is the backend's contract through the real loop: one iteration of the real program
    against the real model, in the task's worktree, its tokens read back from its trajectory."""
    env, client = stack
    if find_mini(Settings(_env_file=env.env_file)) is None:
        missing("mini-swe-agent is not installed (scripts/setup.sh installs it into .venv/mini-swe-agent)")
    make_git_repo(env.workspace_root / "mini")
    body = {"prompt": PROMPT, "workspace": "mini", "check_command": CHECK, "max_iterations": 1, "backend": "mini-swe-agent"}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    task = wait_terminal(client, task_id, timeout=TASK_SECONDS)
    (it,) = client.get(f"/tasks/{task_id}/iterations").json()
    assert task["status"] in ("completed", "exhausted"), (task, it["error"], it["output_excerpt"])
    assert it["tokens"]["prompt"] > 0 and it["tokens"]["completion"] > 0, it  # the model answered, as its trajectory says
    assert (task["status"] == "completed") == (it["check_exit_code"] == 0)  # decided by the check, not by the agent
