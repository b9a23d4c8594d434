"""The whole stack for real: llama-server with the bundled coder model, the aider-wrapper running
the real aider, and the orchestrator's loop — all as separate processes talking HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from support import StackEnv, git, make_git_repo

pytestmark = pytest.mark.e2e

PROMPT = "Create hello.py with a function hello() that returns 'hello'"
CHECK = "python3 -c \"import hello; assert hello.hello() == 'hello'\""
MODEL_LOAD_SECONDS = 300


@pytest.fixture
def stack(stack_env: StackEnv, services):
    stack_env.set(
        LLAMA_CPP_MODEL="qwen2.5-coder-1.5b",
        RALPH_TRANSIENT_RETRY_SECONDS=180,
        AIDER_TIMEOUT_SECONDS=300,
    )
    started = {
        "llama-cpp": services("llama-cpp", stack_env, timeout=MODEL_LOAD_SECONDS),
        "aider-wrapper": services("aider-wrapper", stack_env),
        "ralph-wiggum": services("ralph-wiggum", stack_env),
    }
    make_git_repo(stack_env.workspace_root / "demo")
    client = httpx.Client(base_url=stack_env.url("ralph-wiggum"), timeout=30)
    yield stack_env, started, client, services
    client.close()


def wait_terminal(client: httpx.Client, task_id: str, timeout: float = 900, on_wait=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/tasks/{task_id}").json()
        if task["status"] in ("completed", "exhausted", "failed", "stopped", "rejected"):
            return task
        if on_wait:
            on_wait(task)
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s: {task}")


def test_local_model_completes_a_small_task_with_evidence(stack):
    env, _, client, _ = stack
    resp = client.post("/tasks", json={"prompt": PROMPT, "workspace": "demo", "check_command": CHECK, "max_iterations": 4})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    task = wait_terminal(client, task_id)

    assert task["status"] == "completed", task
    assert task["backend"] == "aider"
    assert task["evidence"]["rule"] == "check_command" and task["evidence"]["check_exit_code"] == 0
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    last = iterations[-1]
    assert "hello.py" in last["files_modified"] or any("hello.py" in it["files_modified"] for it in iterations)
    assert any(it["checkpoint_commit"] for it in iterations)
    assert task["tokens"]["prompt"] > 0 and task["tokens"]["completion"] > 0
    assert all(it["tokens"]["prompt"] > 0 for it in iterations)
    events = client.get(f"/tasks/{task_id}/events.json").json()
    for it in iterations:  # aider's output streamed while it ran, as the wrapper read it
        streamed = "".join(e["data"]["text"] for e in events if e["type"] == "output" and e["data"]["iteration"] == it["number"])
        assert streamed and streamed.endswith(it["output_excerpt"]), it["number"]
    repo = env.workspace_root / "demo"
    source = git(repo, "show", f"aistack/{task_id}:hello.py")
    assert "def hello" in source
    assert not (repo / "hello.py").exists()  # the user's checkout is untouched
    assert git(repo, "status", "--porcelain") == ""


def test_llm_outage_mid_task_adds_no_iterations(stack):
    env, started, client, services = stack
    resp = client.post(
        "/tasks",
        json={"prompt": PROMPT, "workspace": "demo", "check_command": CHECK, "max_iterations": 4, "require_approval": True},
    )
    task_id = resp.json()["task_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/tasks/{task_id}").json()["status"] != "awaiting_approval":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    started["llama-cpp"].stop()  # the LLM goes away just before the first iteration runs
    assert client.post(f"/tasks/{task_id}/approve", json={"approved": True}).status_code == 200
    deadline = time.monotonic() + 120
    while not any(e["type"] == "transient_retry" for e in client.get(f"/tasks/{task_id}/events.json").json()):
        assert time.monotonic() < deadline, "the outage was never noticed"
        time.sleep(0.5)
    assert client.get(f"/tasks/{task_id}").json()["iteration"] == 0
    services("llama-cpp", env, timeout=MODEL_LOAD_SECONDS)  # it comes back

    def approve_next(task):
        if task["status"] == "awaiting_approval":
            client.post(f"/tasks/{task_id}/approve", json={"approved": True})

    task = wait_terminal(client, task_id, on_wait=approve_next)
    assert task["status"] == "completed", task
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert [it["number"] for it in iterations] == list(range(1, task["iteration"] + 1))
    assert iterations[0]["transient_retries"] >= 1
    assert all(it["status"] != "error" for it in iterations)  # no iteration was spent on the outage
