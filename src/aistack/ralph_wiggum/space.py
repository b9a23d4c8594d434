"""A full disk under the data dir, recognised wherever it surfaces: SQLite's SQLITE_FULL, an
OSError ENOSPC or EDQUOT, git's "No space left on device". It is the machine's fault, not the
task's: the API refuses writes with 507 (reads go on) and a task that meets it waits for space,
still `running`, instead of failing (`scheduler.py`)."""

from __future__ import annotations

import errno
import os
import sqlite3

from aistack.gitcli import GitError

_SQLITE_FULL = 13  # the primary result code; SQLite has no extended codes for it
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def reason(exc: BaseException) -> str | None:
    """What says the disk is full, if `exc` or an error it was raised from does; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return os.strerror(current.errno)
        if isinstance(current, sqlite3.Error) and current.sqlite_errorcode == _SQLITE_FULL:
            return f"the database: {current}"
        if isinstance(current, GitError) and os.strerror(errno.ENOSPC) in str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return None
