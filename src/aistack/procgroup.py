"""Children that can always be ended, and whose end is known: the one module for process groups.

Each child runs in its own session (process group), and the group is signalled as a whole, so
nothing a command started outlives it. Async children (the orchestrator's shell commands, the
wrapper's aider runs, git) learn of their exit from asyncio's child watcher. Sync ones that
belong to one command (the engine build, llama-server under its service) die with their parent
where the OS allows; the lifecycle's services, meant to outlive `aistack up`, do not."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
from asyncio.subprocess import SubprocessStreamProtocol
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
STREAM_LIMIT = 2**16  # asyncio's default line limit for the child's output streams


class _ExitProtocol(SubprocessStreamProtocol):
    """asyncio's own subprocess protocol, plus a future that is done the moment the child exits.
    (In CPython 3.11, `Process.wait()` also waits for the output pipes to close, which a helper
    the child left running in the background would hold open.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=STREAM_LIMIT, loop=loop)
        self.exit: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exit.done():
            self.exit.set_result(None)


class GroupProcess(asyncio.subprocess.Process):
    """A child leading its own session (process group), so the group can be ended as a whole."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _ExitProtocol, loop: asyncio.AbstractEventLoop):
        super().__init__(transport, protocol, loop)
        self._exit = protocol.exit

    async def exited(self) -> None:
        """Until the process itself has exited: learnt from asyncio's child watcher, no polling."""
        await asyncio.shield(self._exit)


async def start_in_group(program: str, *args: str, tied: bool = False, **kwargs: Any) -> GroupProcess:
    """`asyncio.create_subprocess_exec`, in a new session, with an exit that can be awaited alone.
    `tied`: the child is killed when this process dies, however it dies (`die_with_parent`)."""
    if tied:
        kwargs["preexec_fn"] = die_with_parent()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(lambda: _ExitProtocol(loop), program, *args, start_new_session=True, **kwargs)
    return GroupProcess(transport, protocol, loop)


async def end_group(proc: GroupProcess, grace: float) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` seconds if the leader still lives."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.exited()
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.exited()


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_exists(pgid: int) -> bool:
    """Some process of the group still runs (a zombie leader counts until it is reaped)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel send `sig` to the child when this process dies,
    however it dies (even `kill -9`), so no orphan keeps a port or a CPU busy. None off Linux."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: never load libraries after fork
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@contextmanager
def output_of(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A child whose merged output is read line by line as text. If reading stops early (an
    error, Ctrl-C, SIGTERM during set-up) the child is killed before its files are cleaned up."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        preexec_fn=die_with_parent(),
    )  # fmt: skip
    try:
        yield proc
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


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
