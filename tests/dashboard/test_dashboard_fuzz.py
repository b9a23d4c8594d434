"""Property-based fuzzing of the dashboard (see `fuzzing`), a real process in front of a real
orchestrator holding real tasks. The dashboard is a browser UI and publishes no OpenAPI document
(`openapi_url=None`); its routes are fuzzed from the document FastAPI makes of them all the same:
its one JSON route (`/health`), its pages, their fragments, the diff, and the form posts."""

from __future__ import annotations

import httpx
from schemathesis import Case
from schemathesis.specs.openapi.checks import status_code_conformance

from aistack.config import load_settings
from aistack.dashboard.app import create_app
from fuzzing import CHECKS, fuzz_operations, load
from support import make_git_repo

EXAMPLES = 120  # per operation and mode: about 1,200 requests in all (most routes take no input)


def test_no_input_makes_a_server_error_or_an_answer_unlike_the_document(stack_env, services):
    agent = stack_env.root / "agent.sh"
    agent.write_text("#!/bin/sh\necho ok\n")
    agent.chmod(0o755)
    make_git_repo(stack_env.workspace_root / "repo")
    stack_env.set(RALPH_COMMAND_BACKEND=agent, RALPH_LOOP_ENABLED=False)
    ralph = services("ralph-wiggum", stack_env)
    tasks = [
        httpx.post(ralph.url + "/tasks", json={"prompt": f"task {n}", "backend": "command", "workspace": "repo"}).json()["task_id"]
        for n in range(3)
    ]
    dashboard = services("dashboard", stack_env)
    document = create_app(load_settings(stack_env.env_file)).openapi()
    schema = load(document=document, base_url=dashboard.url, exclude=r"/events$")

    def real_task(case: Case) -> Case:  # a task the pages can show, not only "no such task"
        if case.path_parameters and "task_id" in case.path_parameters:
            case.path_parameters["task_id"] = tasks[len(case.path_parameters["task_id"]) % len(tasks)]
        return case

    # The statuses are not checked against the document: FastAPI's lists 200 (and 422) for a page,
    # and the dashboard answers redirects (303), refused form posts (403, CSRF) and error pages
    # (404) by design. Media types and JSON bodies are checked wherever it documents them.
    calls = fuzz_operations(schema, EXAMPLES, valid=real_task, checks=[c for c in CHECKS if c is not status_code_conformance])

    assert sum(calls.values()) >= 1_000 and len({label for label, _ in calls}) >= 20
    assert calls["GET /tasks/{task_id}", 200] > 0 and calls["GET /tasks/{task_id}/diff", 200] > 0  # real tasks were shown
    assert {status for (label, status) in calls if label.startswith("POST")} == {403}  # no form post passes without its token
    assert httpx.get(ralph.url + "/tasks", timeout=5).json()["total"] == len(tasks)


def test_an_orchestrators_refusal_is_the_clients_error_not_a_bad_gateway(stack_env, services):
    """Found by the fuzzer: a task fragment or diff the orchestrator refused (no such task, no
    such iteration) was a 502, as if the orchestrator had failed."""
    stack_env.set(RALPH_COMMAND_BACKEND="true", RALPH_LOOP_ENABLED=False)
    make_git_repo(stack_env.workspace_root / "repo")
    ralph = services("ralph-wiggum", stack_env)
    task_id = httpx.post(ralph.url + "/tasks", json={"prompt": "p", "backend": "command", "workspace": "repo"}).json()["task_id"]
    dashboard = services("dashboard", stack_env)
    for path, status in [("/fragments/tasks/0", 404), (f"/tasks/{task_id}/diff?iteration=3", 404),
                         (f"/tasks/{task_id}/diff?iteration=-1", 422), (f"/tasks/{task_id}/diff?iteration={2**63}", 422)]:  # fmt: skip
        assert httpx.get(dashboard.url + path, timeout=10).status_code == status, path
    assert httpx.get(dashboard.url + f"/tasks/{task_id}/diff", timeout=10).text == "(no changes)"
