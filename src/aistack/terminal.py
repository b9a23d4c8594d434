"""What every `aistack` command shares: the consoles, a one-line failure, the validated settings."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from aistack.config import ConfigError, Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `✗ message` on stderr and exit with `code` (2 = configuration, 1 = anything else)."""
    err_console.print(f"[red]✗[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    """The validated configuration, or exit 2 with the one-line reason."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(str(exc), code=2)
