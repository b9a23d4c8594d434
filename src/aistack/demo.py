"""`aistack demo`: the main job end to end — start the stack, give the local model a small task
in a sample repository, follow it live, and show the verified result."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer
from rich.syntax import Syntax

from aistack.config import Settings
from aistack.contracts import TaskCreate
from aistack.gitcli import IDENTITY, git_environ
from aistack.lifecycle.cli import up
from aistack.ralph_wiggum.cli import call_orchestrator, follow
from aistack.terminal import console, settings_or_exit

commands = typer.Typer()

DEMO_PROMPT = "Create hello.py with a function hello() that returns 'hello'"
DEMO_CHECK = "python3 -c \"import hello; assert hello.hello() == 'hello'\""


def sample_repository(root: Path, name: str = "aistack-demo") -> Path:
    """A small git repository inside WORKSPACE_ROOT (created once, never modified afterwards:
    every task works on its own branch)."""
    repo = root / name
    if (repo / ".git").is_dir():
        return repo
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "README.md").write_text("# aistack demo\n\nA sample workspace for the aistack demo task.\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], [*IDENTITY, "commit", "-q", "-m", "Sample workspace"]):
        subprocess.run(["git", *args], cwd=repo, env=git_environ(), check=True, capture_output=True)
    return repo


@commands.command()
def demo(
    backend: Annotated[str, typer.Option(help="aider (the local model) or command.")] = "aider",
    prompt: Annotated[str, typer.Option(help="The task.")] = DEMO_PROMPT,
    check: Annotated[str, typer.Option(help="How to know it is done.")] = DEMO_CHECK,
    max_iterations: Annotated[int, typer.Option("--max-iterations")] = 5,
) -> None:
    """Start the stack and run a small real task on the bundled model, live."""

    settings: Settings = settings_or_exit()
    repo = sample_repository(settings.workspace_root)
    console.rule("1. the stack")
    up(services=None, timeout=None)
    console.rule("2. the task")
    console.print(f"workspace: {repo}\nprompt:    {prompt}\ncheck:     {check}", highlight=False)
    body = TaskCreate(prompt=prompt, backend=backend, workspace=str(repo), check_command=check, max_iterations=max_iterations)
    accepted = call_orchestrator(lambda client: client.submit(body))
    console.print(f"task {accepted.task_id}: {accepted.message}")
    code = follow(accepted.task_id)
    console.rule("3. the result")
    branch = f"aistack/{accepted.task_id}"
    diff = call_orchestrator(lambda client: client.diff(accepted.task_id))  # the task's whole diff, as git has it
    console.print(Syntax(diff or "(no changes)", "diff", theme="ansi_dark", word_wrap=True))
    console.print(
        f"The work is on branch [bold]{branch}[/bold] of {repo}: `git -C {repo} merge {branch}` to take it.\n"
        f"The stack keeps running (dashboard: {settings.url('dashboard')}); `aistack down` stops it."
    )
    raise typer.Exit(code)
