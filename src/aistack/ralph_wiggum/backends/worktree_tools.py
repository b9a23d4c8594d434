"""What an in-process agent may do in a task's worktree: read, write, list and search its files,
and run the task's check. Every path is confined to the worktree (symlinks resolved, writes
too), and its git metadata is off limits: a written hook or config would run in the
orchestrator's own git commands. Each tool answers with text for the model, refusals included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aistack.files import atomic_write
from aistack.gitcli import changes, run_git
from aistack.paths import PathNotAllowed, confine
from aistack.ralph_wiggum.shell import ProcResult

READ_LIMIT = 12_000  # characters of a file the model is shown (its context is a few thousand tokens)
LINES_LIMIT = 200  # lines of a listing or a search
CHECK_OUTPUT_LIMIT = 4_000  # characters of the check's output (its end)

RunCheck = Callable[[], Awaitable[ProcResult]]


class WorktreeTools:
    def __init__(self, worktree: Path, run_check: RunCheck | None = None):
        self.root = worktree.resolve()
        self._run_check = run_check

    def _path(self, path: str) -> Path:
        real = confine(path or ".", [self.root])
        if real.relative_to(self.root).parts[:1] == (".git",):
            raise PathNotAllowed(f"{path} is git's metadata, which no tool may touch")
        return real

    def _shown(self, real: Path) -> str:
        return str(real.relative_to(self.root)) if real != self.root else "."

    async def read_file(self, path: str) -> str:
        try:
            text = self._path(path).read_text(errors="replace")
        except (PathNotAllowed, OSError) as exc:
            return f"error: {_reason(path, exc)}"
        if len(text) > READ_LIMIT:
            return f"{text[:READ_LIMIT]}\n[... {len(text) - READ_LIMIT} more characters not shown]"
        return text

    async def write_file(self, path: str, content: str) -> str:
        try:
            real = self._path(path)
            if real == self.root or real.is_dir():
                return f"error: {path} is a directory"
            atomic_write(real, content, mode=0o644)
        except (PathNotAllowed, OSError) as exc:
            return f"error: {_reason(path, exc)}"
        return f"wrote {len(content)} characters to {self._shown(real)}"

    async def list_files(self, path: str = ".") -> str:
        """The files git would see there: tracked and new ones, ignored ones left out."""
        try:
            real = self._path(path)
        except PathNotAllowed as exc:
            return f"error: {exc}"
        result = await run_git(self.root, "ls-files", "--cached", "--others", "--exclude-standard", "--", str(real))
        return _lines("\n".join(sorted(result.out.splitlines())), "no files") if result.code == 0 else f"error: {result.err.strip()}"

    async def search(self, pattern: str, path: str = ".") -> str:
        """Lines matching an extended regular expression, as `file:line:text`."""
        try:
            real = self._path(path)
        except PathNotAllowed as exc:
            return f"error: {exc}"
        args = ("grep", "-n", "-I", "-E", "--untracked", "--exclude-standard", "-e", pattern, "--", str(real))
        result = await run_git(self.root, *args)
        if result.code not in (0, 1):
            return f"error: {result.err.strip()}"
        return _lines(result.out, f"no line matches {pattern!r}")

    async def run_check(self) -> str:
        """Run the task's check; what it leaves behind (caches) is removed, so that it is not taken
        for the agent's work."""
        if self._run_check is None:
            return "error: this task has no check command"
        before = {path for code, path in await changes(self.root) if code == "??"}
        result = await self._run_check()
        for code, path in await changes(self.root):
            if code == "??" and path not in before:
                (self.root / path).unlink(missing_ok=True)
        ended = "timed out" if result.timed_out else f"exited with {result.exit_code}"
        output = result.output[-CHECK_OUTPUT_LIMIT:]
        return f"the check {ended}{' (it passed)' if result.exit_code == 0 else ''}\n{output}".strip()


def _reason(path: str, exc: Exception) -> str:
    return f"{path}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)


def _lines(text: str, empty: str) -> str:
    lines = text.splitlines()
    if not lines:
        return empty
    more = f"\n[... {len(lines) - LINES_LIMIT} more lines]" if len(lines) > LINES_LIMIT else ""
    return "\n".join(lines[:LINES_LIMIT]) + more
