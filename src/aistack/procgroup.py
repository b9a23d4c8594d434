"""Ending a child and everything it started: each child runs in its own session (process group),
and the group is signalled as a whole. Shared by the orchestrator's shell commands and the
wrapper's aider runs."""

from __future__ import annotations

import asyncio
import os
import signal
from asyncio.subprocess import SubprocessStreamProtocol

STREAM_LIMIT = 2**16  # asyncio's default line limit for the child's output streams


class _ExitProtocol(SubprocessStreamProtocol):
    """asyncio's own subprocess protocol, plus a future that is done the moment the child exits.
    (`Process.wait()` also waits for the output pipes to close, which a helper the child left
    running in the background would hold open.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=STREAM_LIMIT, loop=loop)
        self.exit: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exit.done():
            self.exit.set_result(None)


class GroupProcess(asyncio.subprocess.Process):
    """A child leading its own session (process group), so the group can be ended as a whole."""

    async def exited(self) -> None:
        """Until the process itself has exited: learnt from asyncio's child watcher, no polling."""
        await asyncio.shield(self._protocol.exit)


async def start_in_group(program: str, *args: str, **kwargs) -> GroupProcess:
    """`asyncio.create_subprocess_exec`, in a new session, with an exit that can be awaited alone."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitProtocol(loop), program, *args, start_new_session=True, **kwargs
    )
    return GroupProcess(transport, protocol, loop)


async def end_group(proc: GroupProcess, grace: float) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` seconds if the leader still lives."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.exited(), grace)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.exited()


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
