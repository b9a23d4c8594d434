"""Shell commands that can always be ended: own process group, timeout, cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

MAX_OUTPUT = 1_000_000  # bytes kept of a command's output (the end is kept)
GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class ProcResult:
    exit_code: int | None
    output: str
    timed_out: bool


async def run_shell(command: str, cwd: Path, *, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float) -> ProcResult:
    """Run `command` with `sh -c` in its own session. On timeout or cancellation the whole
    process group (the command and everything it started) is ended: SIGTERM, then SIGKILL."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        if stdin is not None:
            try:
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()
        while chunk := await proc.stdout.read(65536):
            chunks.append(chunk)
            size += len(chunk)
            while size > MAX_OUTPUT and len(chunks) > 1:
                size -= len(chunks.pop(0))
        await proc.wait()

    timed_out = False
    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        timed_out = True
        await _end_group(proc)
    except asyncio.CancelledError:
        await asyncio.shield(_end_group(proc))
        raise
    output = b"".join(chunks).decode(errors="replace")
    return ProcResult(proc.returncode if not timed_out else None, output, timed_out)


async def _end_group(proc: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), wait)
            # the leader is gone; make sure nothing else in its group lingers
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        except TimeoutError:
            continue
