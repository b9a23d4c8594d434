"""`aistack task …`: the orchestrator's API from the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aistack.client import RalphClient, RalphError
from aistack.contracts import TaskCreate, TaskView, first_error
from aistack.terminal import console, fail, settings_or_exit

commands = typer.Typer()
task_app = typer.Typer(help="Submit and follow tasks on the orchestrator.", no_args_is_help=True)
commands.add_typer(task_app, name="task")

STATUS_STYLE = {
    "completed": "green",
    "exhausted": "yellow",
    "failed": "red",
    "stopped": "magenta",
    "rejected": "magenta",
    "awaiting_approval": "cyan",
    "running": "blue",
    "queued": "dim",
}


def _call(coro_fn):
    """Run one client call; an API error becomes a one-line message and exit 1."""
    settings = settings_or_exit()
    key = settings.api_key

    async def go():
        client = RalphClient(settings.url("ralph-wiggum"), key)
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except RalphError as exc:
        fail(exc.detail + (f" ({exc.field})" if exc.field else ""))


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


@task_app.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="What the agent should do.")],
    backend: Annotated[str, typer.Option(help="aider, langchain, mini-swe-agent, or command (RALPH_COMMAND_BACKEND).")] = "aider",
    max_iterations: Annotated[int | None, typer.Option("--max-iterations", help="Default: adaptive.")] = None,
    check: Annotated[str | None, typer.Option("--check", help="Shell command; exit 0 means done.")] = None,
    promise: Annotated[str | None, typer.Option("--promise", help="Done when the reply ends with <promise>TEXT</promise>.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Git repository inside WORKSPACE_ROOT.")] = None,
    require_approval: Annotated[bool, typer.Option("--require-approval", help="Approve every iteration.")] = False,
    file: Annotated[list[str] | None, typer.Option("--file", help="File aider may edit (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the task; exit 0 only if it completes.")] = False,
) -> None:
    """Submit a task."""
    try:
        body = TaskCreate(
            prompt=prompt,
            backend=backend,
            max_iterations=max_iterations,
            require_approval=require_approval,
            workspace=str(workspace.expanduser().absolute()) if workspace else None,
            check_command=check,
            completion_promise=promise,
            context={"files": file} if file else {},
        )
    except ValidationError as exc:  # as the orchestrator would refuse it, without asking it
        field, msg = first_error(exc.errors())
        fail(f"{field}: {msg}")
    accepted = _call(lambda c: c.submit(body))
    console.print(f"✓ task [bold]{accepted.task_id}[/bold] {accepted.message}")
    if wait:
        raise typer.Exit(follow(accepted.task_id))


def follow(task_id: str, poll_seconds: float = 0.5) -> int:
    """Show live progress until the task ends; returns 0 only for `completed`."""
    task = _call(lambda client: _follow(client, task_id, poll_seconds))
    _print_outcome(task)
    return 0 if task.status.value == "completed" else 1


async def _follow(client: RalphClient, task_id: str, poll_seconds: float) -> TaskView:
    """Poll the task with one client; fetch iterations only when a new one has finished."""
    shown = 0
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            task = await client.task(task_id)
            if task.iteration > shown:
                for it in await client.iterations(task_id):
                    if it.number > shown:
                        check = "" if it.check_exit_code is None and not task.check_command else f" check exit {it.check_exit_code}"
                        files = ", ".join(it.files_modified) or "no file changed"
                        live.console.print(f"  iteration {it.number}: {it.status}{check} — {files} ({it.duration_seconds:.1f} s)")
                shown = task.iteration
            live.update(Text.assemble(f"task {task_id} ", _status(task.status), f"  iteration {task.iteration}/{task.max_iterations}"))
            if task.status.terminal:
                return task
            await asyncio.sleep(poll_seconds)


def _print_outcome(task: TaskView) -> None:
    console.print(Text.assemble("result: ", _status(task.status.value), f" after {task.iteration} iteration(s)"))
    if task.evidence:
        console.print(f"evidence: {task.evidence.rule} — {task.evidence.detail}")
    if task.error:
        console.print(f"[red]error:[/red] {task.error}", highlight=False)
    if task.branch:
        console.print(f"branch: {task.branch} in {task.workspace}")


@task_app.command("list")
def list_tasks(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List tasks, newest first."""
    page = _call(lambda c: c.tasks(status, limit, offset))
    table = Table(title=f"tasks {offset + 1}–{offset + len(page.items)} of {page.total}")
    for col in ("id", "status", "iteration", "backend", "created", "prompt"):
        table.add_column(col)
    for t in page.items:
        table.add_row(
            t.id,
            _status(t.status.value),
            f"{t.iteration}/{t.max_iterations}",
            t.backend,
            t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            t.prompt[:60],
        )
    console.print(table)


@task_app.command("show")
def show(task_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False) -> None:
    """A task with its iterations."""
    task, iterations = _call(lambda c: asyncio.gather(c.task(task_id), c.iterations(task_id)))
    if as_json:
        shown = {"task": task.model_dump(mode="json"), "iterations": [i.model_dump(mode="json") for i in iterations]}
        console.print_json(json.dumps(shown))
        return
    console.print(
        Text.assemble(
            f"task {task.id}  ", _status(task.status.value), f"  iteration {task.iteration}/{task.max_iterations} ({task.limit_source})"
        )
    )
    console.print(f"prompt: {task.prompt}", highlight=False)
    table = Table()
    for col in ("#", "status", "check", "files", "seconds", "tokens", "commit"):
        table.add_column(col)
    for it in iterations:
        table.add_row(
            str(it.number),
            it.status or "",
            "" if it.check_exit_code is None else str(it.check_exit_code),
            ", ".join(it.files_modified),
            f"{it.duration_seconds or 0:.1f}",
            f"{it.tokens.prompt}+{it.tokens.completion}",
            (it.checkpoint_commit or "")[:10],
        )
    console.print(table)
    _print_outcome(task)


@task_app.command("stop")
def stop(task_id: str) -> None:
    """Stop a task (ends a running iteration at once)."""
    _call(lambda c: c.stop(task_id))
    console.print(f"✓ stop requested for {task_id}")


@task_app.command("approve")
def approve(task_id: str) -> None:
    """Let a waiting task run its next iteration."""
    _call(lambda c: c.decide(task_id, True))
    console.print(f"✓ approved the next iteration of {task_id}")


@task_app.command("reject")
def reject(task_id: str) -> None:
    """End a waiting task as rejected."""
    _call(lambda c: c.decide(task_id, False))
    console.print(f"✓ rejected {task_id}")


@task_app.command("logs")
def logs(task_id: str, iteration: Annotated[int | None, typer.Option(help="Only this iteration.")] = None) -> None:
    """Each iteration's output and check result."""
    iterations = _call(lambda c: c.iterations(task_id))
    for it in iterations:
        if iteration is not None and it.number != iteration:
            continue
        console.rule(f"iteration {it.number} — {it.status}")
        console.print(it.output_excerpt or "(no output)", highlight=False, markup=False)
        if it.error:
            console.print(f"error: {it.error}", highlight=False, markup=False)
        if it.check_exit_code is not None or it.check_output:
            console.print(f"check exit {it.check_exit_code}:", highlight=False)
            console.print(it.check_output or "", highlight=False, markup=False)


@commands.command("mcp")
def mcp() -> None:
    """Serve the task API as an MCP server on stdin/stdout, for an agent's MCP configuration.

    It talks to the running ralph-wiggum with the .env's URL and API key; stdout carries only MCP.
    """
    settings = settings_or_exit()
    from aistack.ralph_wiggum.mcp_server import serve_stdio  # the MCP SDK loads only for this command

    asyncio.run(serve_stdio(settings.url("ralph-wiggum"), settings.api_key))
