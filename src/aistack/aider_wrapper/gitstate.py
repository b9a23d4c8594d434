"""Which files a run changed, from git: the work tree's status and content hashes before and after.

A path counts as changed when its status or its content differs between the two snapshots, so a
file that was already dirty and is edited again counts, and a dirty file left alone does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from aistack import gitcli

GIT_TIMEOUT_SECONDS = 60

# A path's state: (two-letter porcelain status, content digest). Clean paths are absent.
Snapshot = dict[str, tuple[str, str]]


async def git(cwd: Path, *args: str) -> str:
    # No optional locks: the orchestrator may be using git in the same repository, and a wrapper
    # that only looks must leave no trace. Paths keep their bytes (surrogateescape).
    return await gitcli.git(cwd, *args, locks=False, timeout=GIT_TIMEOUT_SECONDS, errors="surrogateescape")


async def toplevel(path: Path) -> Path:
    """The top directory of the git work tree `path` lies in (GitError if none)."""
    out = await git(path, "rev-parse", "--show-toplevel")
    return Path(out.strip()).resolve()


async def snapshot(repo: Path) -> Snapshot:
    """Every path git reports as not clean (modified, staged, deleted, untracked), with a hash
    of what is on disk now."""
    statuses = {path: code for code, path in await gitcli.changes(repo, "surrogateescape", GIT_TIMEOUT_SECONDS)}
    digests = await asyncio.to_thread(_digests, repo, list(statuses))
    return {path: (code, digests[path]) for path, code in statuses.items()}


def changed_paths(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths whose state differs between the snapshots, sorted (names that are not UTF-8 are
    shown with replacement characters)."""
    changed = (path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
    return sorted(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for path in changed)


def _digests(repo: Path, paths: list[str]) -> dict[str, str]:
    return {path: _digest(repo / path) for path in paths}


def _digest(path: Path) -> str:
    """sha256 of a file's bytes; a symlink by its target; anything else by its kind."""
    try:
        if path.is_symlink():
            return "link:" + os.readlink(path)
        if not path.is_file():
            return "missing" if not path.exists() else "other"
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError as exc:
        return f"unreadable:{exc.errno}"
