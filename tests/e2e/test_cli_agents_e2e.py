"""The npm CLI agents (continue, opencode, qwen-code) as backends, for real: each installed in the
stack's prefix by scripts/setup.sh, run by a real ralph-wiggum in the task's worktree and sandbox,
against llama-server serving the bundled coder model.

What this proves is the wiring: the agent starts headless with the configuration written into
the task's HOME, reaches the local endpoint without a login, gets the model's answer, and the loop
records it (with the tokens the agent reports) and judges it on evidence only. The bundled
1.5B model does not reliably finish the hello task through these agents: through continue and
opencode it answered every time with the tool call written out as a JSON block (```json
{"name": "Write", "arguments": {...}}```), so no file was written (see the README's Backends
section). One iteration is run, and its outcome is whatever the check says.
"""

from __future__ import annotations

import httpx
import pytest
from test_loop_end_to_end import CHECK, MODEL_LOAD_SECONDS, PROMPT, wait_terminal

from support import StackEnv, make_git_repo, missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]  # one model call takes minutes on a busy CPU


@pytest.fixture
def stack(stack_env: StackEnv, services):
    stack_env.set(LLAMA_CPP_MODEL="qwen2.5-coder-1.5b", LLAMA_CPP_PARALLEL=1, RALPH_TRANSIENT_RETRY_SECONDS=180)
    services("llama-cpp", stack_env, timeout=MODEL_LOAD_SECONDS)
    ralph = services("ralph-wiggum", stack_env)
    make_git_repo(stack_env.workspace_root / "demo")
    with httpx.Client(base_url=ralph.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("backend", ["continue", "opencode", "qwen-code"])
def test_cli_agent_runs_an_iteration_on_the_bundled_model(stack, backend):
    client = stack
    health = {b["name"]: b for b in client.get("/health").json()["backends"]}[backend]
    if not health["available"]:
        missing(f"{backend}: {health['detail']}")
    body = {"prompt": PROMPT, "backend": backend, "workspace": "demo", "check_command": CHECK, "max_iterations": 1}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    task = wait_terminal(client, resp.json()["task_id"], timeout=2000)

    [iteration] = client.get(f"/tasks/{task['id']}/iterations").json()
    # the agent ran to its end: no login, no network, no crash; it changed files (success) or, as the
    # bundled model does with these agents (its tool call written as text), nothing (no_progress)
    assert iteration["status"] == ("success" if iteration["files_modified"] else "no_progress"), iteration
    assert "hello" in iteration["output_excerpt"].lower(), iteration  # the model's answer came back through it
    assert iteration["tokens"]["prompt"] > 0 and iteration["tokens"]["completion"] > 0, iteration  # as the agent reported them
    assert iteration["check_exit_code"] is not None
    # judged on the check alone: completed only if hello.py works
    assert task["status"] == ("completed" if iteration["check_exit_code"] == 0 else "exhausted"), task
