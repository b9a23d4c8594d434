"""Children that can always be ended, and whose end is known: the one module for process groups.

Each child runs in its own session (process group), and the group is signalled as a whole, so
nothing a command started outlives it. Async children (the orchestrator's shell commands, the
wrapper's aider runs, git) learn of their exit from asyncio's child watcher. Children that
belong to one process die with it: agents, checks and aider with their whole group (`Warden`),
the engine build and llama-server under its service by a parent-death signal; git, whose every
step should end whole, and the lifecycle's services, meant to outlive `aistack up`, do not. A
group can be named durably (`GroupIdentity`), so that a later process can end what a crashed one
left running."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import subprocess
import threading
from asyncio.subprocess import SubprocessStreamProtocol
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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


async def start_in_group(program: str, *args: str, dies_with_parent: bool = False, **kwargs: Any) -> GroupProcess:
    """`asyncio.create_subprocess_exec`, in a new session, with an exit that can be awaited alone.
    `dies_with_parent`: the whole group is killed when this process dies, however it dies (the
    warden's work, from the start until the leader exits)."""
    loop = asyncio.get_running_loop()
    starting = loop.create_task(loop.subprocess_exec(lambda: _ExitProtocol(loop), program, *args, start_new_session=True, **kwargs))
    try:
        transport, protocol = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Cancelled while its pipes were being connected, asyncio would kill the leader alone and
        # then wait for the pipes, which a helper the leader started holds open: the start is let
        # finish (a few loop turns), and then the whole group ends.
        starting.add_done_callback(_end_started)
        await asyncio.wait([starting])
        raise
    if dies_with_parent:
        pgid = transport.get_pid()
        WARDEN.watch(pgid)
        protocol.exit.add_done_callback(lambda _: WARDEN.forget(pgid))  # before the id can be reused
    return GroupProcess(transport, protocol, loop)


def _end_started(starting: asyncio.Task[tuple[asyncio.SubprocessTransport, Any]]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        transport, _ = starting.result()
        kill_group(transport.get_pid(), signal.SIGKILL)
        transport.close()


async def end_group(proc: GroupProcess, grace: float) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace` seconds if the leader still lives."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.exited()
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.exited()


class Warden:
    """A helper process that SIGKILLs the process groups it was told of when this process dies,
    however it dies (even `kill -9`): it reads their ids from a pipe that only this process holds
    open, and at its end kills those still listed. Unlike a parent-death signal it ends the whole
    group, not only the leader; and a child needs no `preexec_fn`, which makes every start a full
    fork of this process, run Python in the child, and fire when the forking *thread* ends
    (measured in the orchestrator: ~8 ms a child instead of ~2; bench_loop 1.9× became 2.7×)."""

    # POSIX sh (dash's kill takes no `--`); its own session, so a signal to this process's group
    # does not reach it. An id that is not a number above 1 is skipped: `kill -KILL -1` would
    # signal every process.
    SCRIPT = """
groups=' '
while read -r sign pgid; do
    case $pgid in ''|*[!0-9]*|0|1) continue ;; esac
    case $sign in
        +) groups="$groups$pgid " ;;
        -) case $groups in *" $pgid "*) groups="${groups%% $pgid *} ${groups#* $pgid }" ;; esac ;;
    esac
done
for pgid in $groups; do kill -KILL "-$pgid" 2>/dev/null; done
"""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # event loops in several threads may start children
        self._groups: set[int] = set()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def watch(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._send(f"+ {pgid}\n")

    def forget(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
            self._send(f"- {pgid}\n")

    def _send(self, line: str) -> None:
        """One write per line (shorter than PIPE_BUF, so never split). A warden that died is
        replaced, once, and told every group again."""
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
                line = "".join(f"+ {pgid}\n" for pgid in self._groups)
            if self._proc is None or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(line.encode())  # unbuffered: one write(2)
                return
            except OSError:  # EPIPE: it died meanwhile
                self._proc = None

    def _start(self) -> subprocess.Popen[bytes] | None:
        try:
            return subprocess.Popen(
                ["/bin/sh", "-c", self.SCRIPT], bufsize=0, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError:  # no /bin/sh: children cannot die with this process, but still run
            return None


WARDEN = Warden()  # this process's one warden, started with the first child that needs it


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


def proc_starttime(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/PID/stat field 22): pid and start time
    name one process, where a pid alone may be a later one's. None if it is gone or a zombie."""
    stat = _stat(pid)
    return stat[2] if stat is not None and stat[0] != "Z" else None


@dataclass(frozen=True)
class GroupIdentity:
    """A process group as a later process (after a crash) can recognise it: its id, when its
    leader started and in which boot. A group id is a pid, and pids are reused."""

    pgid: int
    leader_start: int  # clock ticks after boot
    boot_id: str


def identify_group(pgid: int) -> GroupIdentity | None:
    """The identity of the running group led by `pgid`; None if its leader is gone (or no /proc)."""
    start, boot = proc_starttime(pgid), boot_id()
    return GroupIdentity(pgid, start, boot) if start is not None and boot is not None else None


async def end_orphaned_group(group: GroupIdentity, timeout: float = 5.0) -> int:
    """SIGKILL what still runs of a group an earlier process started, and wait until none of it
    runs (zombies that only wait to be reaped do not count); how many of its processes ran. A
    group of another boot, or whose id now leads a stranger's group, is left alone. TimeoutError
    if something still runs after `timeout` (stuck in the kernel)."""
    found = members = await asyncio.to_thread(_members, group)  # a scan of /proc: off the event loop
    async with asyncio.timeout(timeout):
        while members:
            kill_group(group.pgid, signal.SIGKILL)  # the whole group at once, with what it forked meanwhile
            await asyncio.sleep(0.02)
            members = await asyncio.to_thread(_members, group)
    return len(found)


def _members(group: GroupIdentity) -> list[int]:
    """The live processes of `group`, provably the group that was recorded. The kernel does not
    hand out a pid while a group of that id has members, so a group whose leader has died (its
    parent-death signal) is still the one recorded; a leader of another start means the id was
    reused after every member had gone."""
    if boot_id() != group.boot_id:
        return []
    members = []
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        stat = _stat(pid)
        if stat is None or stat[1] != group.pgid:
            continue
        state, _, start = stat
        if pid == group.pgid and start != group.leader_start:
            return []
        if state != "Z" and start >= group.leader_start:
            members.append(pid)
    return members


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) from /proc/PID/stat; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


@functools.cache
def boot_id() -> str | None:
    """This boot's random id (Linux); start times count from the boot, so they need it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


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
