"""Process plumbing shared by the build and the supervisor: children that die with us, file locks, CPUs."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
def output_of(cmd: list[str]) -> Iterator[subprocess.Popen]:
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
        proc.stdout.close()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (processes building the same file wait for each other)."""
    with path.with_name(path.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
