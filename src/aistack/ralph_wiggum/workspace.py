"""Where agents work: the `Workspace` protocol, and git worktrees as its one implementation today.

A task's workspace is prepared once (and again on resume), staged and checkpointed after every
iteration, checked, restored to its last checkpoint, and removed when the task ends. With git
worktrees, each task gets its own worktree and branch `aistack/<id>` in the user's repository;
the user's checkout, index and uncommitted files are never touched: every command runs in the
task's worktree, or is a read-only query or a ref update in the shared repository. Worktrees
are added and removed one at a time per repository, across processes (`_worktrees_held`).

A task may name a git remote instead (`TaskRecord.repository`): its worktree then grows from
this worker's bare mirror of the remote (AISTACK_DATA_DIR/repositories/<hash of the URL>.git),
and its branch is pushed there after every checkpoint that made a commit. A push never
overwrites what anyone else put on the branch, and one that fails keeps the commit here: the
next checkpoint pushes again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from aistack.files import directory_lock
from aistack.gitcli import IDENTITY, GitError, changes, confine_repository, failure, git, run_git
from aistack.gitremote import RemoteError, RemoteRefused, Remotes
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum.records import TaskRecord
from aistack.ralph_wiggum.shell import OnGroup, ProcResult, run_shell
from aistack.sandbox import Jail

log = logging.getLogger("aistack.ralph")


@dataclass(frozen=True)
class Tree:
    """A task's working directory, on its branch, grown from `base_commit`."""

    path: Path
    branch: str
    base_commit: str
    created: bool  # made just now (a new task), not resumed
    remote: str | None = None  # the git remote its branch is pushed to


@dataclass(frozen=True)
class Checkpoint:
    """What one iteration changed, as git sees it, and the commit that records it."""

    files: tuple[str, ...]  # changed since the last checkpoint (untracked ones included)
    diff_stat: str | None  # `2 files changed, 3 insertions(+), 1 deletion(-)`
    commit: str | None  # None: nothing changed, nothing committed
    push_error: str | None = None  # the branch could not be pushed to the task's remote (it stays here)


class Workspace(Protocol):
    async def problem(self, path: Path) -> str | None:
        """Why `path` cannot hold tasks, or None (asked when a task is submitted)."""
        ...

    async def resolve(self, repository: str, ref: str | None) -> str:
        """The commit a task on the git remote `repository` starts from (asked when it is
        submitted); `gitremote.RemoteRefused` says why there is none."""
        ...

    async def prepare(self, task: TaskRecord, last_checkpoint: str | None) -> Tree:
        """The task's tree: made on its first run; on a resume, put back at its last checkpoint
        (what an interrupted iteration left is dropped)."""
        ...

    async def checkpoint(self, tree: Tree, message: str) -> Checkpoint:
        """Commit everything changed since the last checkpoint (if anything did); on a remote,
        push the branch (`push_error` says why that failed)."""
        ...

    async def protect(self, tree: Tree, patterns: tuple[str, ...]) -> tuple[str, ...]:
        """Put the files that match `patterns` (globs) back as they are at the base commit:
        changed, deleted or added since. The files it put back."""
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
# A fetch into a mirror: only what is named, and no FETCH_HEAD, which concurrent fetches would both write.
_FETCH = ("fetch", "-q", "--no-tags", "--no-write-fetch-head")
# git's summary line names the new commit: `[aistack/abc 0d29…] message` (whole with core.abbrev=no).
_COMMITTED = re.compile(r"^\[[^\]\n]*? ([0-9a-f]{40}(?:[0-9a-f]{24})?)\] ")


class GitWorktrees:
    """One git worktree and branch per task, under `root` (AISTACK_DATA_DIR/worktrees), in
    repositories whose work tree and git directories lie inside `workspace_root`, or in mirrors
    (under `mirrors`) of the git remotes that `remotes` allows."""

    def __init__(self, root: Path, workspace_root: Path, remotes: Remotes | None = None, mirrors: Path | None = None):
        self.root = root
        self.workspace_root = workspace_root
        self.remotes = remotes or Remotes(None, (workspace_root,))
        self.mirrors = mirrors or root.parent / "repositories"
        self._valid: set[tuple[Path, int, int, int, int, int]] = set()  # workspaces that passed `problem`
        self._unpushed: set[str] = set()  # branches whose last push failed: the next checkpoint pushes again
        self._mirror_locks: dict[Path, asyncio.Lock] = {}

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

    async def resolve(self, repository: str, ref: str | None) -> str:
        return await self.remotes.resolve(repository, ref)

    async def prepare(self, task: TaskRecord, last_checkpoint: str | None) -> Tree:
        if task.repository is not None:
            return await self._prepare_remote(task, task.repository, last_checkpoint)
        workspace, path = Path(task.workspace), self.root / task.id
        if task.worktree is None or task.base_commit is None:  # first run
            base = (await git(workspace, "rev-parse", "HEAD")).strip()
            await self._add(workspace, [self.workspace_root], path, task.id, base)
            return Tree(path, branch_name(task.id), base, created=True)
        at = last_checkpoint or task.base_commit
        if path.is_dir():
            await self._reset_to(path, at)
        else:
            await self._add(workspace, [self.workspace_root], path, task.id, at)
        return Tree(path, task.branch or branch_name(task.id), task.base_commit, created=False)

    async def _prepare_remote(self, task: TaskRecord, url: str, last_checkpoint: str | None) -> Tree:
        """The tree of a task on a git remote, from this worker's mirror: the task's branch is
        fetched first (another worker may have pushed checkpoints this one never saw), then what
        the tree starts from, if the mirror lacks it. RemoteError: the remote did not serve them."""
        if task.base_commit is None:  # resolved when it was submitted
            raise GitError(f"task {task.id} names no commit of {url} to start from")
        try:
            self.remotes.check(url)  # a file:// path may lead elsewhere now (a link put in its place)
        except RemoteRefused as exc:
            raise PathNotAllowed(str(exc)) from None
        branch, path, at = branch_name(task.id), self.root / task.id, last_checkpoint or task.base_commit
        mirror = await self._mirror(url)
        async with self._mirror_locks.setdefault(mirror, asyncio.Lock()):  # one fetch at a time writes the mirror
            pushed = await self._fetch_branch(mirror, url, branch)
            if (await run_git(mirror, "cat-file", "-e", f"{at}^{{commit}}")).code != 0:
                try:
                    await self.remotes.git(mirror, *_FETCH, "--", url, at)
                except RemoteError as exc:
                    what = "its last checkpoint" if last_checkpoint else "its base commit"
                    raise RemoteError(f"task {task.id}: {what} {at} is neither in this worker's mirror nor on the remote ({exc})") from None
        if task.worktree is not None and path.is_dir():
            await self._reset_to(path, at)
        else:
            await self._add(mirror, [self.mirrors], path, task.id, at)
        if pushed == at:
            self._unpushed.discard(branch)
        else:  # the remote lacks the last checkpoint, or holds an interrupted iteration's: pushed at the next one
            self._unpushed.add(branch)
        return Tree(path, branch, task.base_commit, created=task.worktree is None, remote=url)

    async def _mirror(self, url: str) -> Path:
        """This worker's bare repository for the remote `url`, made on first use."""
        path = self._mirror_path(url)
        if not (path / "HEAD").is_file():
            path.mkdir(parents=True, exist_ok=True)
            await git(path, "init", "-q", "--bare")
            await git(path, "config", "aistack.remote", url)  # which remote it holds, for a person looking
        return path

    async def _fetch_branch(self, mirror: Path, url: str, branch: str) -> str | None:
        """Fetch the task's branch into `origin/<branch>`, which is then what this worker last saw
        there (what its next push may replace); its commit, or None if the remote has no such branch."""
        tracking = f"refs/remotes/origin/{branch}"
        try:
            await self.remotes.git(mirror, *_FETCH, "--", url, f"+refs/heads/{branch}:{tracking}")
        except RemoteError as exc:
            if "couldn't find remote ref" not in str(exc):
                raise
            await git(mirror, "update-ref", "-d", tracking)
            return None
        return (await git(mirror, "rev-parse", tracking)).strip()

    async def _push(self, repository: Path, url: str, branch: str) -> str | None:
        """Push the task's branch to its remote, replacing only what this worker last saw there (a
        branch that anyone else moved is refused, never overwritten); None, or why it failed."""
        ref, tracking = f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"
        seen = (await git(repository, "rev-parse", "--verify", "-q", tracking, check=False)).strip()  # empty: must not exist
        tip = (await git(repository, "rev-parse", ref)).strip()
        try:
            await self.remotes.git(repository, "push", "-q", f"--force-with-lease={ref}:{seen}", "--", url, f"{ref}:{ref}")
        except RemoteError as exc:
            self._unpushed.add(branch)
            return str(exc)
        await git(repository, "update-ref", tracking, tip)
        self._unpushed.discard(branch)
        return None

    async def checkpoint(self, tree: Tree, message: str) -> Checkpoint:
        saved = await self._commit(tree, message)
        if tree.remote is not None and (saved.commit is not None or tree.branch in self._unpushed):
            return replace(saved, push_error=await self._push(tree.path, tree.remote, tree.branch))
        return saved

    async def _commit(self, tree: Tree, message: str) -> Checkpoint:
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

    async def protect(self, tree: Tree, patterns: tuple[str, ...]) -> tuple[str, ...]:
        # What differs from the base (changed, deleted, or added and committed by the agent) comes
        # back from it, which also removes what the base lacks; new untracked files are removed.
        # Only the files found are named to `restore`/`clean`: a pattern that matches nothing is
        # an error there (`diff` and `ls-files` take it quietly).
        specs = [f":(glob){pattern}" for pattern in patterns]
        tracked = _names(await git(tree.path, "diff", "--name-only", "--no-renames", "-z", tree.base_commit, "--", *specs))
        new = _names(await git(tree.path, "ls-files", "--others", "--exclude-standard", "-z", "--", *specs))
        if tracked:
            await git(tree.path, "restore", f"--source={tree.base_commit}", "--staged", "--worktree", "--", *_literal(tracked))
        if new:
            await git(tree.path, "clean", "-q", "-f", "--", *_literal(new))
        return tuple(sorted({*tracked, *new}))

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
        if tree.remote is not None:  # the remote still has the undone one: the next checkpoint, or the end, pushes
            self._unpushed.add(tree.branch)

    async def add_candidate(self, tree: Tree) -> Tree:
        # detached: a checkpoint there moves no branch; the task's tree takes it over if it is kept
        path = _candidate_path(tree.path)
        async with _worktrees_held(tree.path):
            await _remove_candidate(tree)  # one left by a crash
            await git(tree.path, "worktree", "add", "-q", "--detach", str(path), "HEAD")
        return Tree(path, tree.branch, tree.base_commit, created=True)

    async def remove_candidate(self, tree: Tree) -> None:
        async with _worktrees_held(tree.path):
            await _remove_candidate(tree)

    async def remove(self, task: TaskRecord) -> None:
        # A task stopped while its first `worktree add` ran has a tree but no record of it yet;
        # a task on a remote has its tree here, whichever worker recorded one first.
        path = Path(task.worktree) if task.worktree and task.repository is None else self.root / task.id
        repository = self._repository(task)
        for tree in (path, _candidate_path(path)):  # a candidate's tree is left only by a crash
            if tree.exists():
                async with _worktrees_held(repository):
                    await git(repository, "worktree", "remove", "--force", str(tree), check=False)
                    await git(repository, "worktree", "prune", check=False)
        branch = branch_name(task.id)
        if task.repository is not None and branch in self._unpushed:  # the last push failed: a last try
            if error := await self._push(repository, task.repository, branch):
                log.warning("task %s: its branch stays unpushed in %s: %s", task.id, repository, error)

    async def diff(self, task: TaskRecord, base: str, commit: str) -> str:
        return await git(self._repository(task), "diff", "--no-color", base, commit)

    def _repository(self, task: TaskRecord) -> Path:
        """Where the task's branch is: its repository on this host, or this worker's mirror."""
        return Path(task.workspace) if task.repository is None else self._mirror_path(task.repository)

    def _mirror_path(self, url: str) -> Path:
        return self.mirrors / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.git"

    async def _add(self, repository: Path, roots: list[Path], path: Path, task_id: str, at: str) -> None:
        """Add the worktree on the task's branch at `at`; the branch is (re)set there, which drops
        checkpoints no iteration record names (an interrupted iteration's). Its repository is
        confined to `roots` again first: its `.git` may have been pointed elsewhere since the submission."""
        common = await confine_repository(repository, roots)
        path.parent.mkdir(parents=True, exist_ok=True)
        async with _worktrees_held(repository, common):
            if path.exists():  # a previous attempt was interrupted between `add` and recording it
                await git(repository, "worktree", "remove", "--force", str(path), check=False)
                await git(repository, "worktree", "prune", check=False)
            await git(repository, "worktree", "add", "-q", "-B", branch_name(task_id), str(path), at)

    @staticmethod
    async def _reset_to(path: Path, commit: str) -> None:
        await git(path, "reset", "-q", "--hard", commit)
        await git(path, "clean", "-q", "-fd")


@asynccontextmanager
async def _worktrees_held(cwd: Path, common: Path | None = None) -> AsyncIterator[None]:
    """The list of worktrees of the repository at `cwd` (its common git directory, if known) for
    one holder at a time, in any process on this machine: git's own `worktree add` reads every
    other worktree's files, and fails on one that a concurrent add is still writing ("failed to
    read .git/worktrees/<id>/commondir"). A repository git cannot locate is not held: the git
    command that follows says what is wrong."""
    if common is None:
        found = await run_git(cwd, "rev-parse", "--path-format=absolute", "--git-common-dir", locks=False, errors="surrogateescape")
        common = Path(found.out.removesuffix("\n")) if found.code == 0 else None
    async with directory_lock(common) if common is not None else nullcontext():
        yield


async def _remove_candidate(tree: Tree) -> None:
    """Remove the candidate's tree beside `tree`, if there is one (the caller holds the list)."""
    if _candidate_path(tree.path).exists():
        await git(tree.path, "worktree", "remove", "--force", str(_candidate_path(tree.path)), check=False)
    await git(tree.path, "worktree", "prune", check=False)


def _names(listing: str) -> list[str]:
    """The paths of a NUL-separated git listing (`-z`)."""
    return [name for name in listing.split("\0") if name]


def _literal(names: list[str]) -> list[str]:
    """Pathspecs that match exactly these files (a name may hold `*` or `[`)."""
    return [f":(literal){name}" for name in names]


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
