"""Property-based API fuzzing of the orchestrator from its own OpenAPI document: whatever the
input, a real server answers 2xx/4xx with a JSON message, never a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from support import make_git_repo


def test_no_input_makes_a_server_error(stack_env, services):
    agent = stack_env.root / "agent.sh"
    agent.write_text("#!/bin/sh\necho ok\n")
    agent.chmod(0o755)
    make_git_repo(stack_env.workspace_root / "repo")
    # the loop stays off: the fuzzer checks the API, not what the agent does with its tasks
    stack_env.set(RALPH_COMMAND_BACKEND=agent, RALPH_LOOP_ENABLED=False)
    proc = services("ralph-wiggum", stack_env)
    schema = schemathesis.openapi.from_url(proc.url + "/openapi.json").exclude(path_regex=r"/events$")

    checked, calls = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(base_url=proc.url, timeout=10)
            calls.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:300]}"
            if response.status_code >= 400:
                detail = response.json().get("detail")
                assert isinstance(detail, str) and detail, response.text

        fuzz()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /tasks" in checked and "POST /tasks/{task_id}/approve" in checked and len(checked) >= 10
    assert len(calls) >= 10 * len(checked)  # the fuzzer really exercised every operation
