"""Property-based API fuzzing of the orchestrator from its own OpenAPI document (see `fuzzing`):
whatever the input, a real server answers as its document says, never with a 5xx."""

from __future__ import annotations

import httpx

from aistack.config import load_settings
from aistack.ralph_wiggum.app import create_app
from fuzzing import documented_errors, fuzz_links, fuzz_operations, load
from support import make_git_repo

EXAMPLES = 60  # per operation and mode: with the links, about 1,200 requests in all
SCENARIOS = 40


def test_no_input_makes_a_server_error_or_an_answer_unlike_the_document(stack_env, services):
    agent = stack_env.root / "agent.sh"
    agent.write_text("#!/bin/sh\necho ok\n")
    agent.chmod(0o755)
    make_git_repo(stack_env.workspace_root)  # a submission that names no workspace is valid: some are accepted
    # The loop stays off: the fuzzer checks the API, not what an agent does with its tasks (a
    # check_command of random text would be run by a shell). A key is set, and sent: the routes
    # behind it are what is fuzzed.
    stack_env.set(RALPH_COMMAND_BACKEND=agent, RALPH_LOOP_ENABLED=False, RALPH_WIGGUM_API_KEY="fuzz-key")
    proc = services("ralph-wiggum", stack_env)
    key = {"X-API-Key": "fuzz-key"}
    # The event stream lasts as long as its task, which never ends with the loop off.
    schema = load(proc.url + "/openapi.json", base_url=proc.url, headers=key, exclude=r"/events$")

    single = fuzz_operations(schema, EXAMPLES)
    # the scenarios follow the links between a task's routes; the learning routes' links (a
    # proposal's id) would take their share of the scenarios, and no task leaves a proposal here
    linked = fuzz_links(load(proc.url + "/openapi.json", base_url=proc.url, headers=key, exclude=r"/events$|^/learn"), SCENARIOS)

    operations = {label for label, _ in single}
    assert "POST /tasks" in operations and "POST /tasks/{task_id}/approve" in operations and len(operations) >= 12
    assert sum(single.values()) + sum(linked.values()) >= 1_000
    assert single["POST /tasks", 202] > 0  # valid submissions were made, not only refusals
    # the links took real tasks' ids from POST /tasks to the routes of one task
    assert linked["GET /tasks/{task_id}", 200] > 0 and linked["POST /tasks/{task_id}/stop", 202] > 0
    assert httpx.get(proc.url + "/health", timeout=5).json()["status"] in ("healthy", "degraded")


def test_every_error_answer_is_documented_as_it_is_sent(stack_env):
    """Found by the fuzzer: the document promised FastAPI's 422 (a list of pydantic errors), which
    the service never sends; its 400, 401, 404 and 409 were not in it; /metrics said JSON."""
    document = create_app(load_settings(stack_env.env_file)).openapi()
    errors = documented_errors(document)
    assert {ref for statuses in errors.values() for ref in statuses.values()} == {"ErrorBody"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert {"400", "401", "422"} <= set(errors["POST /tasks"]) and "404" in errors["GET /tasks/{task_id}"]
    assert {"404", "409"} <= set(errors["POST /tasks/{task_id}/stop"]) & set(errors["POST /tasks/{task_id}/approve"])
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
