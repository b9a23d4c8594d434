"""The `aistack` command: thin wrappers that parse arguments and call into the packages.

`--env-file F` works anywhere on the line (`aistack task list --env-file F` too): `main` moves it
into `AISTACK_ENV_FILE`, so every service this command starts reads the same file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aistack import __version__, demo
from aistack.config import ENV_FILE_VARIABLE, ConfigError, effective_items, env_template, resolve_env_file
from aistack.files import atomic_write
from aistack.lifecycle import cli as lifecycle_cli
from aistack.lifecycle import systemd
from aistack.llama_cpp import cli as llama_cli
from aistack.ralph_wiggum import cli as ralph_cli
from aistack.ralph_wiggum import learn_cli
from aistack.terminal import console, fail, settings_or_exit

app = typer.Typer(help="aistack: hand a coding task to a local AI and get back verified work.", no_args_is_help=True)
config_app = typer.Typer(help="Show or create the stack's .env.", no_args_is_help=True)
serve_app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(serve_app, name="serve")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    env_file: Annotated[  # noqa: ARG001 - `main` takes it out of the line first; declared for --help
        Path | None, typer.Option("--env-file", help="The .env to use (else $AISTACK_ENV_FILE, else ~/.config/aistack/.env).")
    ] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(2)


# --- config --------------------------------------------------------------------------------------


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked)."""
    cfg = settings_or_exit()
    table = Table(title=f"aistack config — {resolve_env_file()}")
    for col in ("variable", "value", "meaning"):
        table.add_column(col)
    for name, value, description in effective_items(cfg):
        table.add_row(name, value, description)
    console.print(table)


@config_app.command("init")
def config_init(force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False) -> None:
    """Write a commented .env with every setting and its default."""
    path = resolve_env_file()
    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite it")
    atomic_write(path, env_template())  # owner-only: the user may add the API key
    console.print(f"✓ wrote {path}")


# --- services ------------------------------------------------------------------------------------


@serve_app.command("ralph-wiggum")
def serve_ralph(
    role: Annotated[
        str, typer.Option("--role", help="all: the task API and the loop; api: the API only; worker: the loop only (RALPH_WORKER_ID).")
    ] = "all",
) -> None:
    """The orchestrator: task API and the loop."""
    from aistack.ralph_wiggum.app import ROLES, run

    if role not in ROLES:
        fail(f"--role {role!r}: allowed: {', '.join(ROLES)}", code=2)
    _run_service(lambda settings: run(settings, role))


@serve_app.command("aider-wrapper")
def serve_wrapper() -> None:
    """Runs aider in a workspace for one iteration."""
    from aistack.aider_wrapper.app import run

    _run_service(run)


@serve_app.command("llama-cpp")
def serve_llama() -> None:
    """llama.cpp's llama-server with the configured model."""
    from aistack.llama_cpp.server import run

    _run_service(run)


@serve_app.command("dashboard")
def serve_dashboard() -> None:
    """The web dashboard."""
    from aistack.dashboard.app import run

    _run_service(run)


def _run_service(run) -> None:
    cfg = settings_or_exit()
    try:
        code = run(cfg)
    except ConfigError as exc:
        fail(str(exc), code=2)
    raise typer.Exit(code or 0)


def _mount(sub: typer.Typer) -> None:
    """Merge a package's commands into the top level (they keep their names)."""
    app.registered_commands.extend(sub.registered_commands)
    app.registered_groups.extend(sub.registered_groups)


for _sub in (ralph_cli.commands, learn_cli.commands, llama_cli.commands, lifecycle_cli.commands, systemd.commands, demo.commands):
    _mount(_sub)


def main() -> None:
    """Entry point: lift `--env-file F` from anywhere on the line, then run the app."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--env-file" and i + 1 < len(argv):
            os.environ[ENV_FILE_VARIABLE] = str(Path(argv[i + 1]).expanduser().absolute())
            del argv[i : i + 2]
            break
        if arg.startswith("--env-file="):
            os.environ[ENV_FILE_VARIABLE] = str(Path(arg.split("=", 1)[1]).expanduser().absolute())
            del argv[i]
            break
    app(args=argv, prog_name="aistack")
