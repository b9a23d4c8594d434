"""Shell commands that can always be ended: own process group, timeout, cancellation, the
death of this process (the warden ends the whole group: procgroup.Warden; if the warden dies with
it, the next process ends what is left, having learnt of the group through `on_group`)."""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aistack.procgroup import end_group, kill_group, start_in_group
from aistack.ralph_wiggum.output import OnOutput
from aistack.sandbox import Jail

MAX_OUTPUT = 1_000_000  # bytes kept of a command's output (the end is kept)
GRACE_SECONDS = 1.0
DRAIN_SECONDS = 5.0


# As GNU make does: a command with none of the shell's syntax, whose first word is a program on
# PATH and not a word the shell gives a meaning of its own, runs without a shell. It behaves the
# same (run_shell sets $PWD and reports a signal as 128+N, as sh does) and saves starting one
# (~1 ms, a tenth of a plain iteration's work).
_SHELL_SYNTAX = re.compile(r"""[#;"'*?\[\]&|<>(){}$`\\~\n]""")
_NOT_A_BLANK = re.compile(r"[^\S \t]|[\x00-\x08\x0b-\x1f\x7f]")  # whitespace sh does not split on; control characters
_SHELL_WORDS = frozenset(
    ". : ! { } [ [[ alias bg break case cd command continue do done elif else esac eval exec exit export fc fg fi for "
    "function getopts hash if in jobs local read readonly return select set shift source then times trap type "
    "ulimit umask unalias unset until wait while"
    # builtins whose program on PATH behaves differently (`echo -e`, `pwd -L`, `kill %1`, `time`)
    " echo printf pwd kill test time".split()
)


def shell_argv(command: str, cwd: Path, env: dict[str, str] | None) -> list[str]:
    """The argv that runs `command`: its own words when no shell is needed, else `sh -c`."""
    words = [word for word in re.split(r"[ \t]+", command) if word]
    if not words or _SHELL_SYNTAX.search(command) or _NOT_A_BLANK.search(command) or "=" in words[0] or words[0] in _SHELL_WORDS:
        return ["/bin/sh", "-c", command]
    first = words[0]
    found = str(cwd / first) if "/" in first else shutil.which(first, path=(env if env is not None else os.environ).get("PATH"))
    return words if found and _execs(Path(found)) else ["/bin/sh", "-c", command]  # the shell says "not found" its own way


def _execs(program: Path) -> bool:
    """Whether exec itself runs `program`: an executable file with a #! line or an ELF header (a
    script without #! only a shell runs)."""
    try:
        with program.open("rb") as file:
            head = file.read(4)
    except OSError:  # none, a directory, unreadable
        return False
    return os.access(program, os.X_OK) and (head[:2] == b"#!" or head == b"\x7fELF")


# Told the id of a command's process group as soon as it runs, so that after a crash a later
# process can end what is left of it (the runner records it in the store).
OnGroup = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class ProcResult:
    exit_code: int | None
    output: str
    timed_out: bool


async def run_shell(
    command: str, cwd: Path, *, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float,
    jail: Jail | None = None, on_group: OnGroup | None = None, on_output: OnOutput | None = None,
) -> ProcResult:  # fmt: skip
    """Run `command` (with `sh -c` when it needs a shell) in its own session, in `jail` when
    given (`on_group` is told its process group, `on_output` its output as it is read). It is done when it exits — not when its output
    pipe closes, which a helper left in the background would hold open — and then nothing it
    started may outlive it. On timeout or cancellation the whole group is ended: SIGTERM, then SIGKILL."""
    options: dict[str, Any] = {
        "stdin": asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.STDOUT,
    }
    shelled = ["/bin/sh", "-c", command]
    argv = shell_argv(command, cwd, env)
    if jail and jail.confines:
        argv, shelled = jail.argv(argv), jail.argv(shelled)
    direct_env = {**(env if env is not None else os.environ), "PWD": str(cwd)}  # as sh would set it
    try:
        proc = await start_in_group(*argv, cwd=cwd, env=env if argv == shelled else direct_env, dies_with_parent=True, **options)
    except OSError:  # changed since shell_argv looked at it: the shell says why its own way
        if argv == shelled:
            raise
        proc = await start_in_group(*shelled, cwd=cwd, env=env, dies_with_parent=True, **options)
    chunks: list[bytes] = []
    io = [asyncio.create_task(_read(proc.stdout, chunks, on_output))] if proc.stdout else []
    if stdin is not None and proc.stdin is not None:
        io.append(asyncio.create_task(_write(proc.stdin, stdin.encode())))
    timed_out = False
    try:
        if on_group is not None:
            await on_group(proc.pid)
        # asyncio.timeout, not wait_for: in Python 3.11 wait_for could lose a cancel (a stop) to the exit
        async with asyncio.timeout(timeout):
            await proc.exited()
    except TimeoutError:
        timed_out = True
        await end_group(proc, GRACE_SECONDS)
    except asyncio.CancelledError:
        await asyncio.shield(end_group(proc, GRACE_SECONDS))
        raise
    finally:
        kill_group(proc.pid, signal.SIGKILL)  # helpers it left running must not outlive it
        _, pending = await asyncio.wait(io, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
    output = b"".join(chunks).decode(errors="replace")
    code = proc.returncode
    if code is not None and code < 0:  # killed by signal N: report it as sh does, 128+N
        code = 128 - code
    return ProcResult(None if timed_out else code, output, timed_out)


async def _read(stream: asyncio.StreamReader, chunks: list[bytes], on_output: OnOutput | None) -> None:
    size = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two reads
    while chunk := await stream.read(65536):
        if on_output is not None:
            on_output(decoder.decode(chunk))
        chunks.append(chunk)
        size += len(chunk)
        while size > MAX_OUTPUT and len(chunks) > 1:
            size -= len(chunks.pop(0))
    if on_output is not None:
        on_output(decoder.decode(b"", final=True))


async def _write(stream: asyncio.StreamWriter, data: bytes) -> None:
    """Feed stdin beside the reader, so a command that writes before it reads cannot deadlock us."""
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stream.close()
