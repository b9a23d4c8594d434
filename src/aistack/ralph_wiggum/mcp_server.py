"""The task API as an MCP server, so an agent the user already has can hand work to aistack.

One code path serves both transports: every tool and every resource is a request to the task
API's own route through `RalphClient`. A bad argument therefore meets the route's validation and
comes back with the API's message, word for word, as a tool error; nothing is checked or worded
twice. Only the client's transport differs:

- stdio (`aistack mcp`): a process that a desktop agent launches; it reaches the running
  ralph-wiggum over HTTP with the .env's URL and API key, as `aistack task` does.
- streamable HTTP (`/mcp` on ralph-wiggum, behind the same API key): the client hands the same
  requests to ralph-wiggum's own app in process (`httpx.ASGITransport`): no loopback hop, and
  still the same routes, error handlers and key check.

A tool's input schema is built from its route's declared path and query parameters and its body
model (the contracts), so it cannot drift from what the API accepts.
"""

from __future__ import annotations

import json
import logging
import types as pytypes
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

import httpx
import mcp_types as mt
from fastapi.routing import APIRoute
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate
from pydantic import BaseModel, ConfigDict, create_model
from starlette.types import ASGIApp, Receive, Scope, Send

from aistack import __version__
from aistack.client import RalphClient, RalphError, path_segment
from aistack.ralph_wiggum.api import router
from aistack.web import is_loopback

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "aistack runs a coding task in a git worktree, re-running a local agent until the task's check passes. "
    "submit_task queues one (give check_command: a shell command that exits 0 when the work is done); "
    "follow it with get_task or task_events until its status is final, then read task_diff."
)


@dataclass(frozen=True)
class ApiTool:
    """An MCP tool that is one route of the task API."""

    name: str
    method: str
    path: str
    description: str


TOOLS = (
    ApiTool(
        "submit_task",
        "POST",
        "/tasks",
        "Queue a coding task. The agent (backend) works in a fresh git worktree of `workspace`, iteration after "
        "iteration, until check_command exits 0, the completion promise is printed or the iteration limit is "
        "reached. Answers the task id.",
    ),
    ApiTool("get_task", "GET", "/tasks/{task_id}", "A task: status, iteration, evidence of completion, error, tokens."),
    ApiTool("list_tasks", "GET", "/tasks", "Tasks, newest first, optionally only those in one status."),
    ApiTool("stop_task", "POST", "/tasks/{task_id}/stop", "Stop a task; a running iteration is ended at once."),
    ApiTool(
        "approve_task",
        "POST",
        "/tasks/{task_id}/approve",
        "Answer a task that is awaiting_approval: approved=true runs its next iteration, false ends it as rejected.",
    ),
    ApiTool("task_diff", "GET", "/tasks/{task_id}/diff", "Unified diff of the whole task so far, or of one iteration's checkpoint."),
    ApiTool(
        "task_events",
        "GET",
        "/tasks/{task_id}/events.json",
        "The task's events (status changes, iterations, checks) after event id `after`: pass the last id seen to get only new ones.",
    ),
)


class RouteTool:
    """An `ApiTool` bound to its route: the input schema, and how arguments become a request."""

    def __init__(self, tool: ApiTool):
        route = next(r for r in router.routes if isinstance(r, APIRoute) and r.path == tool.path and tool.method in (r.methods or ()))
        given = route.dependant
        bodies = [_model_of(b.field_info.annotation) for b in given.body_params]
        body_fields = {name: f for body in bodies for name, f in body.model_fields.items()}
        fields: dict[str, Any] = {p.name: (p.field_info.annotation, p.field_info) for p in given.path_params + given.query_params}
        fields |= {name: (f.annotation, f) for name, f in body_fields.items()}  # `approved` goes in the body, not the query
        model = create_model(tool.name, __config__=ConfigDict(extra="forbid"), **fields)
        schema = {k: v for k, v in model.model_json_schema().items() if k != "title"}
        self.tool, self.takes_body = tool, bool(bodies)
        self.path_names = [p.name for p in given.path_params]
        self.query_names = [p.name for p in given.query_params if p.name not in body_fields]
        read_only = tool.method == "GET"
        self.spec = mt.Tool(
            name=tool.name,
            description=tool.description,
            input_schema=schema,
            annotations=mt.ToolAnnotations(read_only_hint=read_only, destructive_hint=tool.name == "stop_task", open_world_hint=False),
        )

    async def call(self, client: RalphClient, arguments: dict[str, Any]) -> Any:
        """The route's JSON answer; a RalphError carries the API's refusal (or this one's, for a
        path argument that no URL could carry)."""
        values = {}
        for name in self.path_names:
            value = arguments.get(name)
            if not isinstance(value, str):
                raise RalphError(422, f"{name}: Field required" if value is None else f"{name}: Input should be a valid string", name)
            values[name] = path_segment(value)
        query = {n: _query_value(arguments[n]) for n in self.query_names if arguments.get(n) is not None}
        rest = {k: v for k, v in arguments.items() if k not in self.path_names and k not in self.query_names}
        if rest and not self.takes_body:  # the API would ignore an unknown query parameter; an agent should learn of its typo
            name = sorted(rest)[0]
            raise RalphError(422, f"{name}: Extra inputs are not permitted (got {rest[name]!r})", name)
        body = rest if self.takes_body else None
        return await client.call(self.tool.method, self.tool.path.format(**values), params=query, json=body)


def _model_of(annotation: Any) -> type[BaseModel]:
    """The model of a body parameter, `Model | None` included."""
    if get_origin(annotation) in (Union, pytypes.UnionType):
        return next(a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel))
    return annotation


def _query_value(value: Any) -> str:
    """A JSON argument as the query string carries it: true, 3, or the text itself."""
    return value if isinstance(value, str) else json.dumps(value)


# --- resources ---------------------------------------------------------------------------------------

Reader = Callable[[RalphClient, dict[str, Any]], Awaitable[str]]  # the values the URI template matched


async def _read_task(client: RalphClient, at: dict[str, Any]) -> str:
    return json.dumps(await client.call("GET", f"/tasks/{path_segment(at['task_id'])}"), indent=1)


async def _read_output(client: RalphClient, at: dict[str, Any]) -> str:
    iterations = await client.call("GET", f"/tasks/{path_segment(at['task_id'])}/iterations")
    found = next((it for it in iterations if str(it["number"]) == at["number"]), None)
    if found is None:
        raise RalphError(404, f"task {at['task_id']} has no iteration {at['number']}", "iteration")
    return found["output_excerpt"]


async def _read_diff(client: RalphClient, at: dict[str, Any]) -> str:
    answer = await client.call("GET", f"/tasks/{path_segment(at['task_id'])}/diff", params={"iteration": at["number"]})
    return answer["diff"]


RESOURCES: tuple[tuple[mt.ResourceTemplate, Reader], ...] = (
    (
        mt.ResourceTemplate(
            name="iteration-output",
            uri_template="aistack://tasks/{task_id}/iterations/{number}/output",
            description="What the agent printed in one iteration (its excerpt, as the API keeps it).",
            mime_type="text/plain",
        ),
        _read_output,
    ),
    (
        mt.ResourceTemplate(
            name="iteration-diff",
            uri_template="aistack://tasks/{task_id}/iterations/{number}/diff",
            description="Unified diff of one iteration's checkpoint commit.",
            mime_type="text/x-diff",
        ),
        _read_diff,
    ),
    (
        mt.ResourceTemplate(
            name="task",
            uri_template="aistack://tasks/{task_id}",
            description="A task as GET /tasks/{id} answers it.",
            mime_type="application/json",
        ),
        _read_task,
    ),
)


# --- the server --------------------------------------------------------------------------------------


def build_server(client: RalphClient) -> Server:
    """The MCP server whose every tool and resource is a request made with `client`."""
    tools = {t.name: RouteTool(t) for t in TOOLS}
    templates = [(UriTemplate.parse(t.uri_template), t, read) for t, read in RESOURCES]

    async def list_tools(_ctx: Any, _params: Any) -> mt.ListToolsResult:
        return mt.ListToolsResult(tools=[t.spec for t in tools.values()])

    async def call_tool(_ctx: Any, params: mt.CallToolRequestParams) -> mt.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            raise MCPError(mt.INVALID_PARAMS, f"unknown tool {params.name!r}; tools: {', '.join(tools)}")
        try:
            answer = await tool.call(client, params.arguments or {})
        except Exception as exc:  # any failure is the tool's error, never the SDK's bare "Internal server error"
            refusal = _refusal(exc, params.name)
            error = {"status": refusal.status, "detail": refusal.detail, "field": refusal.field}
            return mt.CallToolResult(content=[mt.TextContent(type="text", text=refusal.detail)], structured_content=error, is_error=True)
        structured = answer if isinstance(answer, dict) else {"items": answer}
        return mt.CallToolResult(content=[mt.TextContent(type="text", text=json.dumps(answer, indent=1))], structured_content=structured)

    async def list_resources(_ctx: Any, _params: Any) -> mt.ListResourcesResult:
        """The newest tasks, so a client can offer them without knowing an id."""
        page = await _resource_answer(client.call("GET", "/tasks", params={"limit": 20}))
        return mt.ListResourcesResult(
            resources=[
                mt.Resource(
                    uri=f"aistack://tasks/{t['id']}",
                    name=f"task {t['id']}",
                    description=f"{t['status']}: {t['prompt'][:100]}",
                    mime_type="application/json",
                )
                for t in page["items"]
            ]
        )

    async def list_templates(_ctx: Any, _params: Any) -> mt.ListResourceTemplatesResult:
        return mt.ListResourceTemplatesResult(resource_templates=[t for _, t, _ in templates])

    async def read_resource(_ctx: Any, params: mt.ReadResourceRequestParams) -> mt.ReadResourceResult:
        for template, spec, read in templates:
            if (values := template.match(params.uri)) is not None:
                text = await _resource_answer(read(client, values))
                return mt.ReadResourceResult(contents=[mt.TextResourceContents(uri=params.uri, text=text, mime_type=spec.mime_type)])
        raise MCPError(mt.INVALID_PARAMS, f"no aistack resource at {params.uri!r}", {"uri": params.uri})

    return Server(
        "aistack",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


async def _resource_answer(answer: Awaitable[Any]) -> Any:
    """A resource has no error result: the API's refusal becomes the request's error, same message."""
    try:
        return await answer
    except Exception as exc:
        refusal = _refusal(exc, "resource")
        code = mt.INVALID_PARAMS if 400 <= refusal.status < 500 else mt.INTERNAL_ERROR
        raise MCPError(code, refusal.detail, {"status": refusal.status, "field": refusal.field}) from None


def _refusal(exc: Exception, what: str) -> RalphError:
    """The API's refusal as it is; anything else (a defect, or a failure of the in-process
    transport) a 500 in the API's own words for one, its traceback in the log."""
    if isinstance(exc, RalphError):
        return exc
    log.error("%s failed", what, exc_info=exc)
    return RalphError(500, f"internal error: {type(exc).__name__}")


# --- transports --------------------------------------------------------------------------------------


async def serve_stdio(base_url: str, api_key: str | None) -> None:
    """`aistack mcp`: serve on stdin/stdout until the client closes them."""
    client = RalphClient(base_url, api_key, timeout=30.0)
    try:
        server = build_server(client)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await client.aclose()


class HttpEndpoint:
    """`/mcp` on ralph-wiggum: streamable HTTP, stateless (every tool call stands alone), with
    plain JSON answers. `serving(app)` runs inside the app's lifespan: the tools' client reaches
    that same app in process."""

    def __init__(self, api_key: str | None, bind_address: str):
        self.api_key = api_key
        # the SDK's own default: a loopback-only server checks Host and Origin (DNS rebinding);
        # beyond loopback the API key is required and guards it
        self.security = (
            TransportSecuritySettings(
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
            if is_loopback(bind_address)
            else None
        )
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def serving(self, app: ASGIApp) -> AsyncIterator[None]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # an API 500 stays an answer
        client = RalphClient("http://ralph-wiggum", self.api_key, transport=transport)
        manager = StreamableHTTPSessionManager(build_server(client), json_response=True, stateless=True, security_settings=self.security)
        try:
            async with manager.run():
                self._manager = manager
                yield
        finally:
            self._manager = None
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._manager is None:
            raise RuntimeError("the MCP endpoint is not serving: HttpEndpoint.serving() runs in the app's lifespan")
        await self._manager.handle_request(scope, receive, send)
