"""Read and update the stack's `.env` the way a person would edit it.

An update keeps every comment, blank line and unknown variable where it was, changes only the
lines of the variables it sets, validates the whole result with `Settings` before anything is
written, and replaces the file atomically (temp file + rename) after copying the old one to
`.env.bak`. A rejected update leaves the file byte-for-byte as it was.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError

from aistack.config import Settings, allowed
from aistack.files import atomic_write

# `KEY=...` or `export KEY=...`, and the commented-out form the template writes (`# KEY=...`).
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_COMMENTED = re.compile(r"^\s*#\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
# Values made of these characters need no quotes in a .env file.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:@,+\-=~%]*$")

_write_lock = threading.Lock()


class EnvFileError(ValueError):
    """An update was refused; `field` names the offending setting (lower-case) when known."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def parse(text: str) -> dict[str, str]:
    """The variables a `.env` text sets, parsed exactly as `Settings` parses the file.
    Keys are upper-cased (settings are case-insensitive)."""
    values = dotenv_values(stream=io.StringIO(text))
    return {key.upper(): ("" if value is None else value) for key, value in values.items()}


def read(path: Path) -> dict[str, str]:
    """The variables set in the file at `path` (a missing file sets nothing)."""
    return parse(path.read_text(encoding="utf-8")) if path.is_file() else {}


def refuse_control_characters(key: str, value: str) -> None:
    """The one rule for a value written to the file: no control character (C0, DEL, C1: `\n`,
    `\r`, `\x0b`, `\x85`…) and no line or paragraph separator (U+2028, U+2029). Any of them
    could end the line for some reader and smuggle in a variable of its own."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise EnvFileError(
                f"invalid setting {key.upper()}: line breaks and control characters are not allowed (found U+{ord(char):04X})", key.lower()
            )


def quote(value: str) -> str:
    """`value` written so that the .env parser reads back exactly `value`, except that `${NAME}`
    stays a reference the reader expands (as it would in a hand-written file). The value has
    passed `refuse_control_characters`."""
    if _PLAIN_VALUE.match(value):
        return value
    if "'" not in value and "\\" not in value:
        return f"'{value}'"  # inside single quotes only \\ and \' are escapes
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(text: str, updates: Mapping[str, str | None]) -> str:
    """`text` with each variable of `updates` set (a str) or removed (None).

    A variable already assigned is changed on its own line(s); one only present as a commented
    template line (`# KEY=default`) is written just below that line; any other is appended.
    """
    wanted = {key.upper(): value for key, value in updates.items()}
    for name, written in wanted.items():
        if written is not None:
            refuse_control_characters(name, written)
    # Lines end at \n only: str.splitlines() would also break inside a value at \x0b, \x1c, \x85,
    # U+2028... and write its tail back as a line of its own.
    lines = [line + "\n" for line in text.removesuffix("\n").split("\n")] if text else []
    out: list[str] = []
    done: set[str] = set()
    for line in lines:
        match = _ASSIGNMENT.match(line)
        key = match.group(1).upper() if match else None
        if key in wanted:
            value = wanted[key]
            if value is not None and key not in done:
                out.append(f"{key}={quote(value)}\n")
            done.add(key)  # later duplicates of the same variable are dropped: one line wins
            continue
        out.append(line)
    # Variables not assigned anywhere: next to their commented template line, else at the end.
    pending = {k: v for k, v in wanted.items() if k not in done and v is not None}
    if pending:
        placed: list[str] = []
        for line in out:
            placed.append(line)
            match = _COMMENTED.match(line)
            key = match.group(1).upper() if match else None
            if key in pending:
                placed.append(f"{key}={quote(pending.pop(key))}\n")
        out = placed
        out.extend(f"{key}={quote(value)}\n" for key, value in pending.items())
    return "".join(out)


def validate(text: str) -> Settings:
    """The `Settings` the file text gives, or `EnvFileError` naming the first bad variable.
    Only the stack's own variables are checked; unknown ones are kept but ignored, as at start-up."""
    values: dict[str, Any] = {key.lower(): value for key, value in parse(text).items() if key.lower() in Settings.model_fields}
    try:
        # Values passed in win over real environment variables, so this validates the file itself.
        return Settings(_env_file=None, **values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else None
        got = err.get("input")
        shown = "" if name in ("ralph_wiggum_api_key",) else f"={got!r}"
        message = f"invalid setting {name.upper() if name else '?'}{shown}: {allowed(name) if name else err['msg']}"
        raise EnvFileError(message, name) from None


def update(path: Path, updates: Mapping[str, str | None]) -> Settings:
    """Apply `updates` to the file at `path` (created if missing) and return the new `Settings`.

    Raises `EnvFileError` and leaves the file untouched when any value is invalid.
    """
    for key in updates:
        if key.lower() not in Settings.model_fields:
            raise EnvFileError(f"unknown setting {key.upper()}", key.lower())
    with _write_lock:
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        new = render(old or "", updates)
        settings = validate(new)
        if new != old:
            _atomic_write(path, new, keep_backup=old is not None)
        return settings


def _atomic_write(path: Path, text: str, keep_backup: bool) -> None:
    # The file may hold the API key: keep the old mode, or owner-only for a new file.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    if keep_backup:
        shutil.copy2(path, backup_path(path))
    atomic_write(path, text, mode=mode, fsync=True)


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")
