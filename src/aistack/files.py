"""Files written whole or not at all: a unique temporary file beside the target, then one rename.

A reader (or a crash) never sees half a file, and two writers never share a temporary name.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
