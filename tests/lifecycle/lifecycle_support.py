"""Helpers of the lifecycle suites."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support import AISTACK, StackEnv, child_env

# The smallest bundled model keeps llama-cpp's start to about a second.
SMALL_LLAMA = {"LLAMA_CPP_MODEL": "smollm2-135m", "LLAMA_CPP_CONTEXT_SIZE": "1024", "LLAMA_CPP_THREADS": "1"}


def aistack(env: StackEnv, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `aistack` command against `env`'s .env; output is captured as text."""
    return subprocess.run([*AISTACK, *args], env=child_env(env, {"COLUMNS": "200"}), capture_output=True, text=True, timeout=timeout)


def pid_files(env: StackEnv) -> list[Path]:
    return sorted((env.data_dir / "run").glob("*.pid.json"))


def table_rows(output: str) -> dict[str, str]:
    """The rows of a printed service table, by service name (the first word of the row)."""
    names = ("llama-cpp", "aider-wrapper", "ralph-wiggum", "dashboard")
    rows = [line.split() for line in output.splitlines()]
    return {words[0]: " ".join(words) for words in rows if len(words) > 1 and words[0] in names and words[1].startswith("http")}
