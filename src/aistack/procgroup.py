"""Ending a child and everything it started: each child runs in its own session (process group),
and the group is signalled as a whole. Shared by the orchestrator's shell commands and the
wrapper's aider runs."""

from __future__ import annotations

import asyncio
import os
import signal


async def exited(proc: asyncio.subprocess.Process) -> None:
    """Until the process itself has exited. (`proc.wait()` also waits for its output pipe to
    close, which a helper it left running in the background would hold open.)"""
    while proc.returncode is None:
        await asyncio.sleep(0.05)


async def end_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` seconds if the leader still lives."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(exited(proc), grace)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await exited(proc)


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe_exit(code: int) -> str:
    """How a process ended, as a verb phrase: `was killed by SIGSEGV (signal 11)` rather than
    `-11`, or `exited with status 3`. (A supervisor's own 128+N status is left as a status: only
    the process that died names the signal.)"""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name} (signal {-code})"
    except ValueError:
        return f"was killed by signal {-code}"
