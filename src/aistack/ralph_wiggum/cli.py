"""`aistack task …`: the orchestrator's API from the command line."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from aistack.client import RalphClient, RalphError
from aistack.contracts import StrategyChoice, TaskCreate, TaskStatus, TaskView, first_error
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


def call_orchestrator(coro_fn):
    """Run one client call; any failure of it becomes a one-line message and exit 1."""
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
    except Exception as exc:  # a defect here, still one line: the client words every failure it knows of
        fail(f"{type(exc).__name__} talking to the orchestrator at {settings.url('ralph-wiggum')}: {exc}")


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


@task_app.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="What the agent should do.")],
    backend: Annotated[
        str,
        typer.Option(
            help="aider, command, langchain, mini-swe-agent, continue, opencode, qwen-code, goose or autogpt, if available (/health)."
        ),
    ] = "aider",
    max_iterations: Annotated[int | None, typer.Option("--max-iterations", help="Default: adaptive.")] = None,
    check: Annotated[str | None, typer.Option("--check", help="Shell command; exit 0 means done.")] = None,
    promise: Annotated[str | None, typer.Option("--promise", help="Done when the reply ends with <promise>TEXT</promise>.")] = None,
    workspace: Annotated[Path | None, typer.Option(help="Git repository inside WORKSPACE_ROOT.")] = None,
    repository: Annotated[str | None, typer.Option(help="A git remote instead (its URL, without credentials).")] = None,
    ref: Annotated[str | None, typer.Option(help="Branch or tag of --repository to start from (default: its HEAD).")] = None,
    require_approval: Annotated[bool, typer.Option("--require-approval", help="Approve every iteration.")] = False,
    file: Annotated[list[str] | None, typer.Option("--file", help="File aider may edit (repeatable).")] = None,
    protect: Annotated[
        list[str] | None, typer.Option("--protect", help="Path or glob the agent may not change, e.g. 'tests/**' (repeatable).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the task; exit 0 only if it completes.")] = False,
    keep_best: Annotated[
        bool | None, typer.Option("--keep-best/--no-keep-best", help="Undo an iteration that makes the check worse.")
    ] = None,
    feedback: Annotated[str | None, typer.Option(help="A failed check in the next prompt: tail or shaped (its first failure).")] = None,
    diversity: Annotated[bool | None, typer.Option("--diversity/--no-diversity", help="Retries sample hotter, each with a seed.")] = None,
    context: Annotated[str | None, typer.Option(help="carried (quote a reply that got nowhere) or fresh.")] = None,
    candidates: Annotated[int | None, typer.Option(help="2: two attempts per iteration at once; the better is kept.")] = None,
    restart: Annotated[
        bool | None, typer.Option("--restart/--no-restart", help="A retry after a failed check starts from the base files.")
    ] = None,
) -> None:
    """Submit a task. Strategy options left out take the .env's RALPH_STRATEGY_* defaults."""
    try:
        chosen = {"keep_best": keep_best, "feedback": feedback, "diversity": diversity, "context": context, "candidates": candidates,
                  "restart": restart}  # fmt: skip
        body = TaskCreate(
            prompt=prompt,
            backend=backend,
            max_iterations=max_iterations,
            require_approval=require_approval,
            workspace=str(workspace.expanduser().absolute()) if workspace else None,
            repository=repository,
            ref=ref,
            check_command=check,
            completion_promise=promise,
            context={"files": file} if file else {},
            strategy=StrategyChoice.model_validate(chosen),
            protected_paths=protect or [],
        )
    except ValidationError as exc:  # as the orchestrator would refuse it, without asking it
        field, msg = first_error(exc.errors())
        fail(f"{'strategy.' if exc.title == StrategyChoice.__name__ else ''}{field}: {msg}")
    accepted = call_orchestrator(lambda c: c.submit(body))
    console.print(f"✓ task [bold]{accepted.task_id}[/bold] {accepted.message}")
    if wait:
        raise typer.Exit(follow(accepted.task_id))


def follow(task_id: str, iteration: int | None = None) -> int:
    """Print the task's iterations and its agent's output as they happen (from its start), until
    it ends; returns 0 only for `completed`."""
    task = call_orchestrator(lambda client: _follow(client, task_id, iteration))
    _print_outcome(task)
    return 0 if task.status.value == "completed" else 1


async def _follow(client: RalphClient, task_id: str, only: int | None) -> TaskView:
    """The task's event stream, printed: an iteration's output as it streams, then its summary."""
    lines, checks, streamed = _OutputLines(), dict[int | None, int | None](), set[int | None]()
    async for event in client.follow(task_id):
        data, number = event.data, event.data.get("iteration")
        if only is not None and number not in (only, None):
            continue
        if event.type == "output":
            lines.write(data)
            streamed.add(number)
        elif event.type == "status" and not TaskStatus(data["status"]).terminal:  # the end: the outcome says it
            lines.end()
            console.print(Text.assemble(f"task {task_id} ", _status(data["status"])))
        elif event.type == "iteration_started":
            lines.end()
            console.print(f"  iteration {number} of {data.get('max_iterations')} started", style="dim", highlight=False)
        elif event.type == "check":
            checks[number] = data.get("exit_code")
        elif event.type == "approval_needed":
            lines.end()
            console.print(f"  waiting for approval of iteration {number}: aistack task approve|reject {task_id}", highlight=False)
        elif event.type == "iteration_finished":
            lines.end()
            if number not in streamed:  # a backend that streams nothing: what the iteration kept
                kept = [it.output_excerpt for it in await client.iterations(task_id) if it.number == number and it.output_excerpt]
                if kept:
                    console.out(*kept, highlight=False)
            check = f" check exit {checks[number]}" if number in checks else ""
            files = ", ".join(data.get("files_modified") or ()) or "no file changed"
            if undone := data.get("protected_undone"):
                files += f"; undone, protected: {', '.join(undone)}"
            seconds = data.get("duration_seconds") or 0
            console.print(f"  iteration {number}: {data.get('status')}{check} — {files} ({seconds:.1f} s)", highlight=False)
        console.file.flush()
    lines.end()
    return await client.task(task_id)


class _OutputLines:
    """The agent's output as it streams, each line after the local time its first character was
    read (the event's own `at`, not the time it arrived here)."""

    def __init__(self) -> None:
        self.open = False  # a line was begun and not yet ended

    def write(self, data: dict) -> None:
        at = datetime.fromisoformat(data["at"]).astimezone().strftime("%H:%M:%S")
        for piece in str(data.get("text", "")).splitlines(keepends=True):
            if not self.open:
                console.out(f"{at} │ ", style="dim", end="", highlight=False)
            console.out(piece, end="", highlight=False)
            self.open = not piece.endswith(("\n", "\r"))

    def end(self) -> None:
        if self.open:
            console.out("", highlight=False)
            self.open = False


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
    page = call_orchestrator(lambda c: c.tasks(status, limit, offset))
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
    task, iterations = call_orchestrator(lambda c: asyncio.gather(c.task(task_id), c.iterations(task_id)))
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
    console.print("strategy: " + ", ".join(f"{name}={value}" for name, value in task.strategy.model_dump().items()), highlight=False)
    if task.protected_paths:
        console.print("protected: " + ", ".join(task.protected_paths), highlight=False)
    table = Table()
    for col in ("#", "status", "check", "files", "seconds", "tokens", "commit"):
        table.add_column(col)
    for it in iterations:
        table.add_row(
            str(it.number),
            it.status or "",
            "" if it.check_exit_code is None else str(it.check_exit_code),
            ", ".join(it.files_modified) + (f" (undone: {', '.join(it.protected_undone)})" if it.protected_undone else ""),
            f"{it.duration_seconds or 0:.1f}",
            f"{it.tokens.prompt}+{it.tokens.completion}",
            (it.checkpoint_commit or "")[:10],
        )
    console.print(table)
    _print_outcome(task)


@task_app.command("stop")
def stop(task_id: str) -> None:
    """Stop a task (ends a running iteration at once)."""
    call_orchestrator(lambda c: c.stop(task_id))
    console.print(f"✓ stop requested for {task_id}")


@task_app.command("approve")
def approve(task_id: str) -> None:
    """Let a waiting task run its next iteration."""
    call_orchestrator(lambda c: c.decide(task_id, True))
    console.print(f"✓ approved the next iteration of {task_id}")


@task_app.command("reject")
def reject(task_id: str) -> None:
    """End a waiting task as rejected."""
    call_orchestrator(lambda c: c.decide(task_id, False))
    console.print(f"✓ rejected {task_id}")


@task_app.command("logs")
def logs(
    task_id: str,
    iteration: Annotated[int | None, typer.Option(help="Only this iteration.")] = None,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Print the output as the agent writes it, until the task ends.")] = False,
) -> None:
    """Each iteration's output and check result."""
    if follow_:
        follow(task_id, iteration)
        return
    iterations = call_orchestrator(lambda c: c.iterations(task_id))
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


# --- the store's schema ----------------------------------------------------------------------------

db_app = typer.Typer(help="The task store's schema (AISTACK_DATABASE_URL): see or upgrade its revision.", no_args_is_help=True)
commands.add_typer(db_app, name="db")


def _with_engine(work):
    """Run `work(engine)` on the configured database; an error is one line, the password masked."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    settings = settings_or_exit()
    if settings.aistack_database_url is None:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    try:
        return settings.database_shown, work(engine)
    except DBAPIError as exc:
        fail(f"database {settings.database_shown}: {str(exc.orig or exc).strip().splitlines()[0]}")
    finally:
        engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the schema to this version's newest revision (every service start does too)."""
    from aistack.ralph_wiggum import migrations

    shown, _ = _with_engine(migrations.upgrade)
    console.print(f"✓ {shown} is at revision {migrations.head()}", highlight=False)


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and this version's newest."""
    from aistack.ralph_wiggum import migrations

    shown, revision = _with_engine(migrations.current)
    state = "up to date" if revision == migrations.head() else f"behind: `aistack db upgrade` brings it to {migrations.head()}"
    console.print(f"{shown}: revision {revision or 'none (not under migrations yet)'}, {state}", highlight=False)
