"""Changed files from git snapshots, on real repositories."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aistack.aider_wrapper import gitstate
from aistack.gitcli import GitError
from support import git, make_git_repo


def changed_by(repo: Path, action) -> list[str]:
    before = asyncio.run(gitstate.snapshot(repo))
    action()
    after = asyncio.run(gitstate.snapshot(repo))
    return gitstate.changed_paths(before, after)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_git_repo(tmp_path / "repo", {"a.py": "a = 1\n", "b.py": "b = 1\n", "dir/c.txt": "c\n"})
    (repo / "a.py").write_text("a = 2\n")  # dirty before the run
    (repo / "notes.txt").write_text("untracked before the run\n")
    return repo


def test_untouched_dirty_files_do_not_count(repo: Path) -> None:
    assert changed_by(repo, lambda: None) == []


def test_a_dirty_file_edited_again_counts(repo: Path) -> None:
    assert changed_by(repo, lambda: (repo / "a.py").write_text("a = 3\n")) == ["a.py"]


def test_new_edited_deleted_and_staged_files_count(repo: Path) -> None:
    def act() -> None:
        (repo / "b.py").write_text("b = 2\n")
        (repo / "dir" / "c.txt").unlink()
        (repo / "new dir").mkdir()
        (repo / "new dir" / "ünïcode file.py").write_text("x = 1\n")
        (repo / "notes.txt").write_text("changed\n")
        (repo / "staged.py").write_text("s = 1\n")
        git(repo, "add", "staged.py")

    assert changed_by(repo, act) == ["b.py", "dir/c.txt", "new dir/ünïcode file.py", "notes.txt", "staged.py"]


def test_a_dirty_file_restored_to_clean_counts(repo: Path) -> None:
    assert changed_by(repo, lambda: git(repo, "checkout", "--", "a.py")) == ["a.py"]


def test_ignored_files_do_not_count(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "r", {".gitignore": "build/\n"})
    assert changed_by(repo, lambda: ((repo / "build").mkdir(), (repo / "build" / "x.o").write_text("x"))) == []


def test_snapshot_does_not_touch_the_index(repo: Path) -> None:
    index = repo / ".git" / "index"
    stamp = index.stat().st_mtime_ns
    (repo / "b.py").touch()  # stat info changed: plain `git status` would refresh the index
    asyncio.run(gitstate.snapshot(repo))
    assert index.stat().st_mtime_ns == stamp


def test_toplevel_and_not_a_repository(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "r")
    (repo / "sub").mkdir()
    assert asyncio.run(gitstate.toplevel(repo / "sub")) == repo.resolve()
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match="not a git repository"):
        asyncio.run(gitstate.toplevel(plain))
