"""Git plumbing for tasks: one worktree and branch per task, checkpoints, diffs.

The user's checkout, index and uncommitted files are never touched: every command runs either
in the task's own worktree or is a read-only query / ref update in the shared repository.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_IDENTITY = ("-c", "user.name=aistack", "-c", "user.email=aistack@localhost", "-c", "commit.gpgsign=false")


class GitError(RuntimeError):
    pass


def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, errors="replace",
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
    )
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def repository_problem(path: Path) -> str | None:
    """Why `path` cannot be a task workspace, or None if it can."""
    if not path.is_dir():
        return f"workspace {path} does not exist or is not a directory"
    try:
        top = git(path, "rev-parse", "--show-toplevel").strip()
    except GitError:
        return f"workspace {path} is not a git repository (run `git init` and commit once)"
    if Path(top).resolve() != path.resolve():
        return f"workspace {path} is inside the repository {top}; give its top-level directory"
    if git(path, "rev-parse", "--verify", "-q", "HEAD", check=False).strip() == "":
        return f"workspace {path} is a git repository without commits; commit once first"
    return None


def branch_name(task_id: str) -> str:
    return f"aistack/{task_id}"


def create(workspace: Path, worktree: Path, task_id: str, at: str | None = None) -> str:
    """Add the task's worktree on its branch, at `at` (default: the workspace's HEAD, for a new
    task); returns that commit. The branch is (re)set there, dropping unrecorded checkpoints."""
    base = at or git(workspace, "rev-parse", "HEAD").strip()
    worktree.parent.mkdir(parents=True, exist_ok=True)
    if worktree.exists():  # a previous attempt was interrupted between `add` and recording it
        remove(workspace, worktree)
    git(workspace, "worktree", "add", "-q", "-B", branch_name(task_id), str(worktree), base)
    return base


def reset_to(worktree: Path, commit: str) -> None:
    """Put the worktree back exactly at `commit` (drops what an interrupted iteration left)."""
    git(worktree, "reset", "-q", "--hard", commit)
    git(worktree, "clean", "-q", "-fd")


def restore(worktree: Path) -> None:
    """Undo what ran after the last checkpoint (e.g. files a check command wrote)."""
    if git(worktree, "status", "--porcelain", "--untracked-files=all").strip():
        reset_to(worktree, "HEAD")


@dataclass(frozen=True)
class Changes:
    files: tuple[str, ...]
    diff_stat: str | None


def stage_changes(worktree: Path) -> Changes:
    """Stage everything and report the files changed since the worktree's HEAD, as git sees
    them (untracked ones included), with a one-line summary like `git diff --stat`'s."""
    git(worktree, "add", "-A")
    out = git(worktree, "diff", "--cached", "--numstat", "-z", "--no-renames")
    files, added, deleted = [], 0, 0
    for record in out.split("\0"):
        if not record:
            continue
        plus, minus, name = record.split("\t", 2)
        files.append(name)
        added += int(plus) if plus.isdigit() else 0  # "-" for binary files
        deleted += int(minus) if minus.isdigit() else 0
    if not files:
        return Changes((), None)
    summary = f"{len(files)} file{'s' if len(files) != 1 else ''} changed, {added} insertion{'s' if added != 1 else ''}(+), "
    summary += f"{deleted} deletion{'s' if deleted != 1 else ''}(-)"
    return Changes(tuple(sorted(files)), summary)


def checkpoint(worktree: Path, message: str) -> str:
    """Commit what `stage_changes` staged on the task branch; returns the commit id."""
    git(worktree, "commit", "-q", "--no-verify", "-m", message)
    return git(worktree, "rev-parse", "HEAD").strip()


def remove(workspace: Path, worktree: Path) -> None:
    """Remove the worktree directory; the branch and its checkpoints stay in the repository."""
    git(workspace, "worktree", "remove", "--force", str(worktree), check=False)
    git(workspace, "worktree", "prune", check=False)


def diff(workspace: Path, base: str, commit: str) -> str:
    return git(workspace, "diff", "--no-color", base, commit)
