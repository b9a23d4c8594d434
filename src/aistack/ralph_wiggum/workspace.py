"""Where agents work: the `Workspace` protocol, and git worktrees as its one implementation today.

A task's workspace is prepared once (and again on resume), staged and checkpointed after every
iteration, checked, restored to its last checkpoint, and removed when the task ends. With git
worktrees, each task gets its own worktree and branch `aistack/<id>` in the user's repository;
the user's checkout, index and uncommitted files are never touched: every command runs in the
task's worktree, or is a read-only query or a ref update in the shared repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aistack.gitcli import IDENTITY, GitError, changes, confine_repository, failure, git, run_git
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum.records import TaskRecord
from aistack.ralph_wiggum.shell import OnGroup, ProcResult, run_shell
from aistack.sandbox import Jail


@dataclass(frozen=True)
class Tree:
    """A task's working directory, on its branch, grown from `base_commit`."""

    path: Path
    branch: str
    base_commit: str
    created: bool  # made just now (a new task), not resumed


@dataclass(frozen=True)
class Checkpoint:
    """What one iteration changed, as git sees it, and the commit that records it."""

    files: tuple[str, ...]  # changed since the last checkpoint (untracked ones included)
    diff_stat: str | None  # `2 files changed, 3 insertions(+), 1 deletion(-)`
    commit: str | None  # None: nothing changed, nothing committed


class Workspace(Protocol):
    async def problem(self, path: Path) -> str | None:
        """Why `path` cannot hold tasks, or None (asked when a task is submitted)."""
        ...

    async def prepare(self, task: TaskRecord, last_checkpoint: str | None) -> Tree:
        """The task's tree: made on its first run; on a resume, put back at its last checkpoint
        (what an interrupted iteration left is dropped)."""
        ...

    async def checkpoint(self, tree: Tree, message: str) -> Checkpoint:
        """Commit everything changed since the last checkpoint (if anything did)."""
        ...

    async def check(
        self, tree: Tree, command: str, env: dict[str, str], timeout: float, jail: Jail | None = None, on_group: OnGroup | None = None
    ) -> ProcResult:
        """Run the task's check command there (in `jail`; `on_group` is told its process group);
        what it writes is undone afterwards."""
        ...

    async def restore(self, tree: Tree, commit: str) -> None:
        """Put the tree, and its branch, back at an earlier checkpoint (keep_best undoing a worse attempt)."""
        ...

    async def add_candidate(self, tree: Tree) -> Tree:
        """A second tree at the same commit, for a parallel attempt (strategy.candidates 2)."""
        ...

    async def remove_candidate(self, tree: Tree) -> None:
        """Remove the tree `add_candidate` made beside `tree`; a checkpoint made there stays in the repository."""
        ...

    async def remove(self, task: TaskRecord) -> None:
        """Remove the task's tree; its branch and checkpoints stay."""
        ...

    async def diff(self, task: TaskRecord, base: str, commit: str) -> str:
        """Unified diff between two of the task's commits."""
        ...


# What git commit says (LC_ALL=C) when status showed something it does not take.
_NOTHING_TO_COMMIT = ("nothing to commit", "nothing added to commit", "no changes added to commit")
# git's summary line names the new commit: `[aistack/abc 0d29…] message` (whole with core.abbrev=no).
_COMMITTED = re.compile(r"^\[[^\]\n]*? ([0-9a-f]{40}(?:[0-9a-f]{24})?)\] ")


class GitWorktrees:
    """One git worktree and branch per task, under `root` (AISTACK_DATA_DIR/worktrees), in
    repositories whose work tree and git directories lie inside `workspace_root`."""

    def __init__(self, root: Path, workspace_root: Path):
        self.root = root
        self.workspace_root = workspace_root
        self._valid: set[tuple[Path, int, int, int, int, int]] = set()  # workspaces that passed `problem`

    async def problem(self, path: Path) -> str | None:
        """Why `path` cannot hold tasks. A repository that passed once is known by the identity of
        its directory and of its `.git` (device, inode, and when `.git` last changed): a second
        submission to it costs two `stat`s instead of three git processes, and a repository made
        anew there, or a `.git` file pointed elsewhere, is checked again."""
        try:
            here, dot_git = path.stat(), (path / ".git").stat()
            identity = (path, here.st_dev, here.st_ino, dot_git.st_dev, dot_git.st_ino, dot_git.st_mtime_ns)
        except OSError:
            identity = None
        if identity is not None and identity in self._valid:
            return None
        if problem := await self._problem(path):
            return problem
        if identity is not None:
            self._valid.add(identity)
        return None

    async def _problem(self, path: Path) -> str | None:
        if not path.is_dir():
            return f"workspace {path} does not exist or is not a directory"
        try:
            top = (await git(path, "rev-parse", "--show-toplevel")).strip()
        except GitError:
            return f"workspace {path} is not a git repository (run `git init` and commit once)"
        if Path(top).resolve() != path.resolve():
            return f"workspace {path} is inside the repository {top}; give its top-level directory"
        try:
            await confine_repository(path, [self.workspace_root])
        except PathNotAllowed as exc:
            return f"workspace {path}: {exc}"
        if not (await git(path, "rev-parse", "--verify", "-q", "HEAD", check=False)).strip():
            return f"workspace {path} is a git repository without commits; commit once first"
        return None

    async def prepare(self, task: TaskRecord, last_checkpoint: str | None) -> Tree:
        workspace, path = Path(task.workspace), self.root / task.id
        if task.worktree is None or task.base_commit is None:  # first run
            base = (await git(workspace, "rev-parse", "HEAD")).strip()
            await self._add(workspace, path, task.id, base)
            return Tree(path, branch_name(task.id), base, created=True)
        at = last_checkpoint or task.base_commit
        if path.is_dir():
            await self._reset_to(path, at)
        else:
            await self._add(workspace, path, task.id, at)
        return Tree(path, task.branch or branch_name(task.id), task.base_commit, created=False)

    async def checkpoint(self, tree: Tree, message: str) -> Checkpoint:
        # git status names the changes; when all of them are to tracked files, `commit --all`
        # stages them itself, so a usual iteration costs two git processes.
        entries = await changes(tree.path)
        if not entries:
            return Checkpoint((), None, None)
        untracked = any(code == "??" for code, _ in entries)
        if untracked:
            await git(tree.path, "add", "-A")
        args = (*IDENTITY, "-c", "core.abbrev=no", "commit", "--no-verify", *(() if untracked else ("--all",)), "-m", message)
        result = await run_git(tree.path, *args)
        if result.code != 0:
            if any(words in result.out for words in _NOTHING_TO_COMMIT):
                return Checkpoint((), None, None)  # status saw what commit does not take (a submodule's own changes)
            raise GitError(failure(tree.path, args, result))
        # The id is read from the commit's own summary line: a `rev-parse` fewer per iteration.
        match = _COMMITTED.match(result.out)
        commit = match.group(1) if match else (await git(tree.path, "rev-parse", "HEAD")).strip()
        return Checkpoint(tuple(sorted(path for _, path in entries)), _diff_stat(result.out), commit)

    async def check(
        self, tree: Tree, command: str, env: dict[str, str], timeout: float, jail: Jail | None = None, on_group: OnGroup | None = None
    ) -> ProcResult:
        result = await run_shell(command, tree.path, env=env, timeout=timeout, jail=jail, on_group=on_group)
        # what the check wrote (caches, build output) must not count as the agent's next change
        if (await git(tree.path, "status", "--porcelain", "--untracked-files=normal", locks=False)).strip():
            await self._reset_to(tree.path, "HEAD")
        return result

    async def restore(self, tree: Tree, commit: str) -> None:
        # The undone checkpoint stays reachable from the branch's reflog, so its diff still shows.
        await self._reset_to(tree.path, commit)

    async def add_candidate(self, tree: Tree) -> Tree:
        # detached: a checkpoint there moves no branch; the task's tree takes it over if it is kept
        await self.remove_candidate(tree)  # one left by a crash
        path = _candidate_path(tree.path)
        await git(tree.path, "worktree", "add", "-q", "--detach", str(path), "HEAD")
        return Tree(path, tree.branch, tree.base_commit, created=True)

    async def remove_candidate(self, tree: Tree) -> None:
        if _candidate_path(tree.path).exists():
            await git(tree.path, "worktree", "remove", "--force", str(_candidate_path(tree.path)), check=False)
        await git(tree.path, "worktree", "prune", check=False)

    async def remove(self, task: TaskRecord) -> None:
        # A task stopped while its first `worktree add` ran has a tree but no record of it yet.
        path = Path(task.worktree) if task.worktree else self.root / task.id
        workspace = Path(task.workspace)
        for tree in (path, _candidate_path(path)):  # a candidate's tree is left only by a crash
            if tree.exists():
                await git(workspace, "worktree", "remove", "--force", str(tree), check=False)
                await git(workspace, "worktree", "prune", check=False)

    async def diff(self, task: TaskRecord, base: str, commit: str) -> str:
        return await git(Path(task.workspace), "diff", "--no-color", base, commit)

    async def _add(self, workspace: Path, path: Path, task_id: str, at: str) -> None:
        """Add the worktree on the task's branch at `at`; the branch is (re)set there, which drops
        checkpoints no iteration record names (an interrupted iteration's). Its repository is
        confined again first: its `.git` may have been pointed elsewhere since the submission."""
        await confine_repository(workspace, [self.workspace_root])
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a previous attempt was interrupted between `add` and recording it
            await git(workspace, "worktree", "remove", "--force", str(path), check=False)
            await git(workspace, "worktree", "prune", check=False)
        await git(workspace, "worktree", "add", "-q", "-B", branch_name(task_id), str(path), at)

    @staticmethod
    async def _reset_to(path: Path, commit: str) -> None:
        await git(path, "reset", "-q", "--hard", commit)
        await git(path, "clean", "-q", "-fd")


def _candidate_path(tree: Path) -> Path:
    return tree.with_name(tree.name + ".2")


def branch_name(task_id: str) -> str:
    return f"aistack/{task_id}"


_SUMMARY = re.compile(r"^ (\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?$", re.MULTILINE)


def _diff_stat(commit_output: str) -> str | None:
    """`N files changed, X insertions(+), Y deletions(-)`, always with all three, from git
    commit's summary (which leaves out the parts that are zero)."""
    match = _SUMMARY.search(commit_output)
    if match is None:
        return None
    files, added, deleted = (int(group or 0) for group in match.groups())
    return (f"{files} file{'s' if files != 1 else ''} changed, {added} insertion{'s' if added != 1 else ''}(+), "
            f"{deleted} deletion{'s' if deleted != 1 else ''}(-)")  # fmt: skip
