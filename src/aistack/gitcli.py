"""One way to run git, for every service: a clean environment, a time limit, one-line errors.

git is the source of truth for what changed in a workspace; the services start it only through
here (the demo's one-off sample repository uses `git_environ` and `IDENTITY` too). Our own GIT_DIR
(or any GIT_* variable) never redirects it, it never prompts for credentials, and its messages are
in English so they can be read.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

from aistack.paths import PathNotAllowed, confine
from aistack.procgroup import end_group, start_in_group

GIT_TIMEOUT_SECONDS = 300.0
# Who checkpoint commits are by: a task's commits never depend on the user's git config.
IDENTITY = ("-c", "user.name=aistack", "-c", "user.email=aistack@localhost", "-c", "commit.gpgsign=false")


# What git says when a lock file (index.lock, a ref's lock) is already there.
_LOCK_TAKEN = re.compile(r"Unable to create '([^'\n]+\.lock)': File exists")


class GitError(RuntimeError):
    """git failed, or the directory is not a repository; the message is one line."""


def git_environ(locks: bool = True) -> dict[str, str]:
    """The environment git runs in. Without `locks` (an observer, such as the wrapper taking
    a snapshot) git takes no optional lock and never rewrites the index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    if not locks:
        env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


@dataclass(frozen=True)
class GitResult:
    code: int
    out: str
    err: str


async def run_git(cwd: Path, *args: str, locks: bool = True, timeout: float = GIT_TIMEOUT_SECONDS, errors: str = "replace") -> GitResult:
    """`git ARGS` in `cwd`, however it ends. GitError only if it overruns `timeout`. Cancelling
    the caller ends git too."""
    proc = await start_in_group(
        "git", *args, cwd=cwd, env=git_environ(locks),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        await end_group(proc, 1.0)
        raise GitError(f"git {args[0]} took longer than {timeout:.0f} s in {cwd}") from None
    except asyncio.CancelledError:
        await asyncio.shield(end_group(proc, 1.0))
        raise
    return GitResult(proc.returncode or 0, out.decode(errors=errors), err.decode(errors="replace"))


async def git(cwd: Path, *args: str, check: bool = True, locks: bool = True, timeout: float = GIT_TIMEOUT_SECONDS,
              errors: str = "replace") -> str:  # fmt: skip
    """`git ARGS` in `cwd`; its stdout. GitError if it fails (with `check`) or overruns `timeout`."""
    result = await run_git(cwd, *args, locks=locks, timeout=timeout, errors=errors)
    if check and result.code != 0:
        raise GitError(failure(cwd, args, result))
    return result.out


async def changes(cwd: Path, errors: str = "replace", timeout: float = GIT_TIMEOUT_SECONDS) -> list[tuple[str, str]]:
    """(status code, path) of every path git sees as not clean: modified, staged, deleted,
    untracked (each file in an untracked folder); a rename is a deletion and an addition.
    Takes no optional lock: looking must leave no trace."""
    args = ("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    out = await git(cwd, *args, locks=False, timeout=timeout, errors=errors)
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


async def confine_repository(work_tree: Path, roots: list[Path]) -> Path:
    """Refuse a work tree whose repository lies outside `roots`. A `.git` file (`gitdir: …`), or a
    `commondir` in the git directory, may point anywhere: branches, commits and worktrees are
    written there, so the git directory and the common one must be confined as the work tree is.
    Returns the common git directory (where branches and the list of worktrees are).
    PathNotAllowed says which is outside; GitError if `work_tree` is not a repository."""
    out = await git(work_tree, "rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", locks=False,
                    errors="surrogateescape")  # fmt: skip
    lines = out.removesuffix("\n").split("\n")
    if len(lines) != 2:  # a directory name holding a newline: where git writes cannot be told
        raise PathNotAllowed(f"the git directory of {work_tree} cannot be located")
    for what, where in zip(("git directory", "common git directory"), lines, strict=True):
        try:
            confine(where, roots)
        except PathNotAllowed:
            shown = " or ".join(str(root) for root in roots)
            raise PathNotAllowed(f"the {what} of {work_tree} (its .git) lies outside the allowed root ({shown})") from None
    return Path(lines[1])


def failure(cwd: Path, args: tuple[str, ...], result: GitResult) -> str:
    """One line: the command as a person would type it, where, and git's first line of complaint
    (for a lock git could not take, the lock and what to do, which git says on later lines)."""
    first = (result.err or result.out).strip().splitlines() or [f"exit {result.code}"]
    lock = _LOCK_TAKEN.search(result.err)
    complaint = (f"{lock.group(1)} exists: another git process is running there, or one was killed and left it behind "
                 "(remove the file if no git runs there)") if lock else first[0]  # fmt: skip
    return f"git {' '.join(_without_config(args))} failed in {cwd}: {complaint}"


def _without_config(args: tuple[str, ...]) -> list[str]:
    """The command as a person would type it: without the `-c name=value` pairs in front."""
    shown, rest = [], iter(args)
    for arg in rest:
        if arg == "-c":
            next(rest, None)
        else:
            shown.append(arg)
    return shown
