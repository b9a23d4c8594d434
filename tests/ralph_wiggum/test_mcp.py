"""aistack as an MCP server, driven by the MCP SDK's own client over both transports against a real
`aistack serve ralph-wiggum` process (command backend, real git): `aistack mcp` on stdio, and
streamable HTTP at `/mcp` behind the API key."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from aistack.client import RalphClient
from aistack.ralph_wiggum.mcp_server import build_server
from support import AISTACK, StackEnv, child_env, make_git_repo

KEY = "mcp-test-key-0123456789"
AGENT = "sh -c 'echo hi >> hello.txt; echo said hi'"
FINAL = {"completed", "exhausted", "failed", "stopped", "rejected"}
TOOLS = {"submit_task", "get_task", "list_tasks", "stop_task", "approve_task", "task_diff", "task_events"}


def start_ralph(env: StackEnv, services, **settings):
    """ralph-wiggum with the command agent, a repository `repo` and an API key."""
    make_git_repo(env.workspace_root / "repo")
    env.set(RALPH_COMMAND_BACKEND=AGENT, RALPH_WIGGUM_API_KEY=KEY, **settings)
    return services("ralph-wiggum", env)


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    return start_ralph(stack_env, services)


@asynccontextmanager
async def connect(transport: str, env: StackEnv, mode: str = "auto"):
    """An SDK client on `aistack mcp` (stdio) or on ralph-wiggum's `/mcp` (HTTP, with the key).
    mode "legacy": the initialize handshake of the protocol's 2025 versions, as desktop agents speak it."""
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=[*AISTACK[1:], "mcp"], env=child_env(env))
        async with Client(params, mode=mode) as client:
            yield client
    else:
        async with httpx2.AsyncClient(headers={"X-API-Key": KEY}) as http:
            async with Client(streamable_http_client(env.url("ralph-wiggum") + "/mcp", http_client=http), mode=mode) as client:
                yield client


def text(result) -> str:
    return "".join(block.text for block in result.content)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_submit_follow_to_completion_and_read_the_diff(ralph, stack_env, transport):
    async def scenario():
        async with connect(transport, stack_env) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert set(listed) == TOOLS
            # the schema is the API's contract, field for field
            assert set(listed["submit_task"].input_schema["properties"]) == {
                "prompt", "backend", "max_iterations", "require_approval", "workspace", "repository", "ref",
                "check_command", "completion_promise", "context", "strategy", "protected_paths",
            }  # fmt: skip
            assert listed["list_tasks"].input_schema["properties"]["limit"]["maximum"] == 200

            submitted = await client.call_tool(
                "submit_task",
                {"prompt": "say hi", "backend": "command", "workspace": "repo", "check_command": "test $(wc -l < hello.txt) -ge 2"},
            )
            assert not submitted.is_error, text(submitted)
            task_id = submitted.structured_content["task_id"]
            assert submitted.structured_content["status"] == "queued"

            seen: list[dict] = []  # followed by events, each batch after the last id seen
            while not any(e["type"] == "status" and e["data"]["status"] in FINAL for e in seen):
                batch = await client.call_tool("task_events", {"task_id": task_id, "after": seen[-1]["id"] if seen else 0})
                assert not batch.is_error, text(batch)
                seen += batch.structured_content["items"]
                await asyncio.sleep(0.05)
            assert [e["id"] for e in seen] == sorted({e["id"] for e in seen})  # no event twice

            task = (await client.call_tool("get_task", {"task_id": task_id})).structured_content
            assert task["status"] == "completed" and task["iteration"] == 2
            assert task["evidence"]["rule"] == "check_command"

            diff = await client.call_tool("task_diff", {"task_id": task_id})
            assert "+hi" in diff.structured_content["diff"] and "hello.txt" in diff.structured_content["diff"]

            listed_tasks = await client.call_tool("list_tasks", {"status": "completed"})
            assert [t["id"] for t in listed_tasks.structured_content["items"]] == [task_id]

            # resources: the task, one iteration's output and its diff
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {
                "aistack://tasks/{task_id}",
                "aistack://tasks/{task_id}/iterations/{number}/output",
                "aistack://tasks/{task_id}/iterations/{number}/diff",
            }
            assert f"aistack://tasks/{task_id}" in {r.uri for r in (await client.list_resources()).resources}
            read = await client.read_resource(f"aistack://tasks/{task_id}")
            assert json.loads(read.contents[0].text)["status"] == "completed"
            output = await client.read_resource(f"aistack://tasks/{task_id}/iterations/2/output")
            assert output.contents[0].text.strip() == "said hi"
            second = (await client.read_resource(f"aistack://tasks/{task_id}/iterations/2/diff")).contents[0].text
            assert " hi\n+hi" in second  # the second iteration adds the second line only

    asyncio.run(scenario())


# Each: tool, arguments, and the HTTP request that the API answers with the same refusal.
BAD_INPUT = [
    ("submit_task", {"backend": "command"}, ("POST", "/tasks", {"json": {"backend": "command"}})),
    ("submit_task", {"prompt": "x", "max_iterations": "many"}, ("POST", "/tasks", {"json": {"prompt": "x", "max_iterations": "many"}})),
    ("submit_task", {"prompt": "x", "colour": "red"}, ("POST", "/tasks", {"json": {"prompt": "x", "colour": "red"}})),
    ("submit_task", {"prompt": "x", "backend": "goose"}, ("POST", "/tasks", {"json": {"prompt": "x", "backend": "goose"}})),
    ("submit_task", {"prompt": "x", "workspace": "../../etc"}, ("POST", "/tasks", {"json": {"prompt": "x", "workspace": "../../etc"}})),
    ("list_tasks", {"limit": 0}, ("GET", "/tasks", {"params": {"limit": 0}})),
    ("list_tasks", {"status": "finished"}, ("GET", "/tasks", {"params": {"status": "finished"}})),
    ("get_task", {"task_id": "nope"}, ("GET", "/tasks/nope", {})),
    ("task_diff", {"task_id": "nope", "iteration": -1}, ("GET", "/tasks/nope/diff", {"params": {"iteration": -1}})),
    ("task_events", {"task_id": "nope", "after": "x"}, ("GET", "/tasks/nope/events.json", {"params": {"after": "x"}})),
    ("approve_task", {"task_id": "nope"}, ("POST", "/tasks/nope/approve", {"json": {}})),
    ("approve_task", {"task_id": "nope", "approved": "perhaps"}, ("POST", "/tasks/nope/approve", {"json": {"approved": "perhaps"}})),
    ("stop_task", {"task_id": "nope"}, ("POST", "/tasks/nope/stop", {})),
    # a dot segment is an id like any other, not a way to another route (`/tasks/.` is `/tasks`)
    ("get_task", {"task_id": "."}, ("GET", "/tasks/%2E", {})),
    ("task_diff", {"task_id": "."}, ("GET", "/tasks/%2E/diff", {})),
    ("stop_task", {"task_id": ".."}, ("POST", "/tasks/%2E%2E/stop", {})),
]


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_bad_input_is_a_tool_error_with_the_apis_message(ralph, stack_env, transport):
    expected = []
    with httpx.Client(base_url=ralph.url, headers={"X-API-Key": KEY}) as http:
        for _, _, (method, path, kwargs) in BAD_INPUT:
            answer = http.request(method, path, **kwargs)
            assert answer.status_code in (404, 422), answer.text
            expected.append(answer.json()["detail"])

    async def scenario():
        async with connect(transport, stack_env, mode="legacy") as client:
            for (tool, arguments, _), detail in zip(BAD_INPUT, expected, strict=True):
                result = await client.call_tool(tool, arguments)
                assert result.is_error and text(result) == detail, (tool, arguments)
            # what has no HTTP form is refused in the same words
            missing = await client.call_tool("get_task", {})
            assert missing.is_error and text(missing) == "task_id: Field required"
            typo = await client.call_tool("task_diff", {"task_id": "nope", "iteraton": 1})
            assert typo.is_error and text(typo) == "iteraton: Extra inputs are not permitted (got 1)"
            with pytest.raises(MCPError, match="no task with id 'nope'"):
                await client.read_resource("aistack://tasks/nope")
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS  # the server still serves

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_an_argument_too_long_for_a_url_is_a_tool_error(ralph, stack_env, transport):
    """httpx refuses to build a URL over 64 KiB with an error that is no transport error: it escaped
    the tool as the SDK's bare "Internal server error"."""

    async def scenario():
        async with connect(transport, stack_env) as client:
            long = "x" * 70_000
            for tool, arguments, why in (
                ("list_tasks", {"status": long}, "URL component 'query' too long"),
                ("get_task", {"task_id": long}, "URL too long"),
            ):
                result = await client.call_tool(tool, arguments)
                assert result.is_error and result.structured_content["status"] == 414, (tool, text(result)[:200])
                assert text(result) == f"the request cannot be sent: {why}"

    asyncio.run(scenario())


def test_any_failure_of_a_tool_is_a_tool_error_with_a_500():
    """Whatever the client raises besides the API's refusals (here: the in-process transport raises
    what the app raised, as `ASGITransport` does by default) is a tool error, and a resource's
    error, in the API's words for a 500, not the SDK's bare "Internal server error"."""

    async def crash(scope, receive, send):
        raise RuntimeError("the app fell over")

    async def scenario():
        ralph = RalphClient("http://ralph-wiggum", transport=httpx.ASGITransport(app=crash))
        try:
            async with Client(build_server(ralph)) as client:
                result = await client.call_tool("list_tasks", {})
                assert result.is_error and text(result) == "internal error: RuntimeError"
                assert result.structured_content == {"status": 500, "detail": "internal error: RuntimeError", "field": None}
                with pytest.raises(MCPError, match="^internal error: RuntimeError$"):
                    await client.read_resource("aistack://tasks/t1")
        finally:
            await ralph.aclose()

    asyncio.run(scenario())


def test_mcp_endpoint_needs_the_api_key(ralph):
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    for key in (None, "wrong"):
        sent = headers | ({"X-API-Key": key} if key else {})
        refused = httpx.post(ralph.url + "/mcp", json=initialize, headers=sent)
        assert refused.status_code == 401 and "API key" in refused.json()["detail"]
    accepted = httpx.post(ralph.url + "/mcp", json=initialize, headers=headers | {"X-API-Key": KEY})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["result"]["serverInfo"]["name"] == "aistack"
    # on loopback, a page that rebinds its own name to 127.0.0.1 is refused even with the key
    rebound = httpx.post(ralph.url + "/mcp", json=initialize, headers=headers | {"X-API-Key": KEY, "Host": "attacker.example"})
    assert rebound.status_code == 421


def test_stdio_without_a_running_orchestrator_says_so_as_a_tool_error(stack_env):
    async def scenario():
        async with connect("stdio", stack_env) as client:
            result = await client.call_tool("list_tasks", {})
            assert result.is_error
            assert text(result) == f"orchestrator at {stack_env.url('ralph-wiggum')} is unreachable (ConnectError)"

    asyncio.run(scenario())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def test_no_arguments_make_a_tool_crash(stack_env, services):
    """Whatever the arguments, a tool answers a result or a tool error with a 4xx message of the API."""
    start_ralph(stack_env, services, RALPH_LOOP_ENABLED=False)  # the tasks it submits stay queued
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(connect("http", stack_env)) as client:
        submitted = portal.call(client.call_tool, "submit_task", {"prompt": "x", "backend": "command", "workspace": "repo"})
        task_id = submitted.structured_content["task_id"]
        answers = []
        for tool in portal.call(client.list_tools).tools:
            names = [*tool.input_schema["properties"], "stray"]
            values = {name: JSON | st.just(task_id) if name == "task_id" else JSON for name in names}
            arguments = st.sets(st.sampled_from(names)).flatmap(lambda chosen: st.fixed_dictionaries({n: values[n] for n in chosen}))  # noqa: B023

            @given(arguments=arguments)
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def fuzz(arguments):
                result = portal.call(client.call_tool, tool.name, arguments)  # noqa: B023
                answers.append(result.is_error)
                if result.is_error:
                    assert 400 <= result.structured_content["status"] < 500 and text(result), (tool.name, arguments, result)  # noqa: B023

            fuzz()
        assert len(answers) >= 7 * 20 and any(answers) and not all(answers)
