"""Files written whole or not at all: a unique temporary file beside the target, then one rename;
and the locks that processes building or changing the same thing take.

A reader (or a crash) never sees half a file, and two writers never share a temporary name.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path, mode: int = 0o600, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into; it replaces `path` when the block ends
    without an error, and is removed otherwise. `mode` is the new file's permission bits (owner
    only unless asked: some of these files hold secrets); `fsync` makes the content durable
    before the rename, for files whose loss after a power cut matters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        tmp.chmod(mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600, fsync: bool = False) -> None:
    """Replace `path` with `data` (text is written as UTF-8)."""
    with atomic_file(path, mode, fsync) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (processes building the same file wait for each other)."""
    with path.with_name(path.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@asynccontextmanager
async def directory_lock(path: Path, poll_seconds: float = 0.01) -> AsyncIterator[None]:
    """Hold an exclusive lock on the directory `path` itself (nothing is written there), against
    other processes and other holders in this one alike. Waiting polls, so the event loop runs on
    and a cancelled wait leaves nothing held."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(poll_seconds)
        yield
    finally:
        os.close(fd)  # which also releases the lock
