"""The langchain agent itself: langchain's tool-calling agent (a langgraph graph) over the local
LLM's OpenAI API, with the worktree tools. Imported only when a langchain iteration runs: its
libraries take a second or more to import, which no other part of the service should pay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_core.utils.json import parse_json_markdown
from langchain_openai import ChatOpenAI
from langgraph.errors import GraphRecursionError
from langsmith import tracing_context

from aistack.ralph_wiggum.backends.worktree_tools import WorktreeTools

TEMPERATURE = 0.2  # low: a small model's tool calls break down as sampling grows bolder
SYSTEM_PROMPT = """You are a coding agent working in a project directory. Do the task by calling the tools:
list_files and read_file to look at the project, search to find text, write_file to create or replace a file
(give its whole new content), run_check to run the task's check. Paths are relative to the project directory.
{check}When the task is done, answer with one short sentence and no tool call."""
CHECK_NOTE = "The task is done when the check `{command}` exits 0: call run_check after your changes, and fix what it reports.\n"
# the model's transient failures: the server is down, loading (503), busy, or answered late
TRANSIENT = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)
FROM_TEXT = "tool_call_from_text"  # marks a reply whose tool call was read from its text


@dataclass
class Transcript:
    messages: list[AnyMessage] = field(default_factory=list)
    error: str | None = None
    transient: bool = False


def chat_model(base_url: str, model: str, api_key: str, http: httpx.AsyncClient, timeout: float) -> ChatOpenAI:
    """The local LLM. No retries of its own: the runner retries a transient failure, with backoff.
    A reply may take as long as the iteration (the client's default is 10 minutes)."""
    return ChatOpenAI(base_url=base_url, model=model, api_key=api_key, temperature=TEMPERATURE, max_retries=0, http_async_client=http,
                      timeout=httpx.Timeout(10.0, read=timeout))  # fmt: skip


def tools(worktree: WorktreeTools, check: bool) -> list[StructuredTool]:
    made = [
        StructuredTool.from_function(coroutine=worktree.read_file, name="read_file", description="Read a file."),
        StructuredTool.from_function(
            coroutine=worktree.write_file, name="write_file", description="Create or replace a file with the given content."
        ),
        StructuredTool.from_function(
            coroutine=worktree.list_files, name="list_files", description="List the files under a directory (default: all)."
        ),
        StructuredTool.from_function(
            coroutine=worktree.search, name="search", description="Find lines matching a regular expression in the files under a path."
        ),
    ]
    if check:
        made.append(StructuredTool.from_function(coroutine=worktree.run_check, name="run_check", description="Run the task's check."))
    return made


class ToolCallsInText(AgentMiddleware):
    """A small model often writes its one tool call as JSON in the reply's text (in a ```json
    block, or in the <tool_call> tags the server did not parse) instead of as a tool call. Such
    a reply is taken as that tool call when it names one of the tools."""

    async def awrap_model_call(self, request: ModelRequest, handler: Any) -> Any:
        response: ModelResponse = await handler(request)
        names = {getattr(tool, "name", None) for tool in request.tools}
        result = [_as_tool_call(message, names) if isinstance(message, AIMessage) else message for message in response.result]
        return ModelResponse(result=result, structured_response=response.structured_response)


def _as_tool_call(message: AIMessage, names: set[Any]) -> AIMessage:
    if message.tool_calls or not isinstance(message.content, str):
        return message
    text = message.content.replace("<tool_call>", "").replace("</tool_call>", "").strip()
    try:
        call = parse_json_markdown(text)
    except ValueError:
        return message
    if not isinstance(call, dict) or call.get("name") not in names:
        return message
    args = call.get("arguments", call.get("parameters", {}))
    if not isinstance(args, dict):
        return message
    tool_call = {"name": call["name"], "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
    return message.model_copy(update={"tool_calls": [tool_call], "content": "", "additional_kwargs": {FROM_TEXT: True}})


async def opening(prompt: str, worktree: WorktreeTools, files: Sequence[str]) -> str:
    """The task, then the files it names (`context.files`) as they are now: the agent starts from
    the code it must change, as aider's chat does. A small model that must first think of reading
    a file tends to act on a guess instead (on HumanEval, it called the function it was asked to
    write as if it were a tool)."""
    shown = [f"{path}:\n```\n{await worktree.read_file(path)}\n```" for path in files]
    return "\n\n".join([prompt, *shown])


async def drive(
    transcript: Transcript, model: ChatOpenAI, worktree: WorktreeTools, prompt: str, check_command: str | None, max_steps: int
) -> None:
    """Run the agent to its end (a reply without a tool call) or to `max_steps` model calls. What
    it said and did is kept in `transcript` as it goes, so that tokens and the transcript survive
    an error, a timeout or a cancellation."""
    check = CHECK_NOTE.format(command=check_command) if check_command else ""
    agent = create_agent(
        model, tools(worktree, bool(check_command)), system_prompt=SYSTEM_PROMPT.format(check=check), middleware=[ToolCallsInText()]
    )
    # each model call and each round of tool calls is one step of the graph
    config: Any = {"recursion_limit": 2 * max_steps + 1}
    try:
        with tracing_context(enabled=False):  # nothing leaves this machine, whatever LANGSMITH_* the service inherited
            async for state in agent.astream({"messages": [HumanMessage(prompt)]}, config, stream_mode="values"):
                transcript.messages = state["messages"]
    except GraphRecursionError:
        transcript.error = f"the agent was still working after {max_steps} model calls (RALPH_LANGCHAIN_MAX_STEPS)"
    except TRANSIENT as exc:
        transcript.error, transcript.transient = f"LLM unreachable or busy: {type(exc).__name__}: {exc}", True
    except openai.APIError as exc:
        transcript.error = f"the LLM refused the request: {type(exc).__name__}: {exc}"


def tokens(messages: list[AnyMessage]) -> tuple[int, int]:
    """(prompt, completion) tokens of every model reply, as the server counted them."""
    usage = [m.usage_metadata for m in messages if isinstance(m, AIMessage) and m.usage_metadata]
    return sum(u["input_tokens"] for u in usage), sum(u["output_tokens"] for u in usage)


def text(messages: list[AnyMessage]) -> str:
    """The transcript as the iteration's output: what the model said, each tool call and its answer."""
    lines: list[str] = []
    for message in messages[1:]:  # the first is the prompt
        if isinstance(message, AIMessage):
            if isinstance(message.content, str) and message.content.strip():
                lines.append(message.content.strip())
            how = " (read from the reply's text)" if message.additional_kwargs.get(FROM_TEXT) else ""
            lines += [f"→ {call['name']}({_args(call['args'])}){how}" for call in message.tool_calls]
        elif isinstance(message, ToolMessage):
            lines.append(f"← {message.name}: {_clip(str(message.content), 600)}")
    return "\n".join(lines)


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_clip(repr(value), 200)}" for key, value in args.items())


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit] + "…"
