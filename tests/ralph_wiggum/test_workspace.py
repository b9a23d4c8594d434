"""Git worktrees as the loop's workspace, against real git (no service process needed)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aistack.contracts import TaskStatus
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum.records import TaskRecord
from aistack.ralph_wiggum.workspace import GitWorktrees
from support import git, make_git_repo


def task_in(repo: Path, **fields) -> TaskRecord:
    now = datetime.now(UTC)
    values = {"id": "t1", "prompt": "p", "backend": "command", "workspace": str(repo), "status": TaskStatus.queued,
              "max_iterations": 5, "limit_source": "request", "created_at": now, "updated_at": now, **fields}  # fmt: skip
    return TaskRecord(**values)


def test_checkpoints_name_what_changed_and_commit_it(tmp_path):
    repo = make_git_repo(tmp_path / "repo", {"a.txt": "one\n"})
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)

    async def scenario():
        tree = await trees.prepare(task_in(repo), None)
        nothing = await trees.checkpoint(tree, "none")
        (tree.path / "a.txt").write_text("one\ntwo\n")  # a tracked file only: `commit --all`
        tracked = await trees.checkpoint(tree, "tracked")
        (tree.path / "b.txt").write_text("new\n")  # an untracked one: `add` first
        (tree.path / "a.txt").unlink()
        both = await trees.checkpoint(tree, "both")
        return tree, nothing, tracked, both

    tree, nothing, tracked, both = asyncio.run(scenario())
    assert nothing.commit is None and nothing.files == ()
    assert tracked.files == ("a.txt",) and tracked.diff_stat == "1 file changed, 1 insertion(+), 0 deletions(-)"
    assert both.files == ("a.txt", "b.txt") and both.diff_stat == "2 files changed, 1 insertion(+), 2 deletions(-)"
    assert git(tree.path, "rev-parse", "HEAD") == both.commit
    assert git(tree.path, "log", "--format=%s").splitlines()[:2] == ["both", "tracked"]
    assert git(repo, "status", "--porcelain") == "" and (repo / "a.txt").read_text() == "one\n"  # the user's checkout


def test_protected_files_come_back_as_the_base_has_them_whatever_the_agent_did(tmp_path):
    base = {"app.py": "def f():\n    raise NotImplementedError\n", "tests/test_app.py": "assert f() == 1\n", "tests/data.txt": "d\n",
            "conftest.py": "# base\n", "docs/a*b.md": "x\n"}  # fmt: skip
    repo = make_git_repo(tmp_path / "repo", base)
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)

    async def scenario():
        tree = await trees.prepare(task_in(repo), None)
        nothing = await trees.protect(tree, ("tests/**", "conftest.py", "nothing/*"))
        # an earlier iteration's checkpoint that changed a test (the agent committed it itself)
        (tree.path / "tests" / "test_app.py").write_text("assert True\n")
        git(tree.path, "commit", "-qam", "the agent's own commit")
        (tree.path / "app.py").write_text("def f():\n    return 1\n")  # the work: kept
        (tree.path / "tests" / "data.txt").unlink()  # deleted
        (tree.path / "tests" / "conftest.py").write_text("collect_ignore = ['test_app.py']\n")  # new, untracked
        (tree.path / "conftest.py").write_text("# changed\n")
        (tree.path / "docs" / "a*b.md").write_text("a name that is a glob\n")  # not protected
        undone = await trees.protect(tree, ("tests/**", "conftest.py", "nothing/*"))
        saved = await trees.checkpoint(tree, "iteration")
        return tree, nothing, undone, saved

    tree, nothing, undone, saved = asyncio.run(scenario())
    assert nothing == ()
    assert undone == ("conftest.py", "tests/conftest.py", "tests/data.txt", "tests/test_app.py")
    for name in ("tests/test_app.py", "tests/data.txt", "conftest.py"):
        assert (tree.path / name).read_text() == base[name]
    assert not (tree.path / "tests" / "conftest.py").exists()
    assert (tree.path / "app.py").read_text() == "def f():\n    return 1\n"
    assert git(tree.path, "diff", "--name-only", git(tree.path, "rev-parse", "HEAD~2"), "HEAD").split() == ["app.py", "docs/a*b.md"]
    assert set(saved.files) == {"app.py", "docs/a*b.md", "tests/test_app.py"}  # the agent's commit of the test, undone


def test_a_submodules_own_changes_are_no_checkpoint_and_no_error(tmp_path):
    inner = make_git_repo(tmp_path / "inner", {"x.txt": "x\n"})
    repo = make_git_repo(tmp_path / "repo")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "sub")
    git(repo, "commit", "-q", "-m", "sub")
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)

    async def scenario():
        tree = await trees.prepare(task_in(repo), None)
        git(tree.path, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
        (tree.path / "sub" / "x.txt").write_text("changed inside the submodule\n")
        return await trees.checkpoint(tree, "sub")

    saved = asyncio.run(scenario())
    assert saved.commit is None and saved.files == ()


def test_the_check_leaves_nothing_behind(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)

    async def scenario():
        tree = await trees.prepare(task_in(repo), None)
        result = await trees.check(tree, "echo built > artefact.txt; mkdir -p cache && touch cache/x; exit 3", {}, 30)
        return tree, result

    tree, result = asyncio.run(scenario())
    assert result.exit_code == 3
    assert git(tree.path, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_tree_is_removed_even_before_its_task_recorded_it(tmp_path):
    """A stop during a task's first `worktree add`: the record has no worktree yet, the disk has one."""
    repo = make_git_repo(tmp_path / "repo")
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)

    async def scenario():
        tree = await trees.prepare(task_in(repo), None)
        await trees.remove(task_in(repo))  # worktree=None, as in the store at that moment
        return tree

    tree = asyncio.run(scenario())
    assert not tree.path.exists() and str(tree.path) not in git(repo, "worktree", "list")
    assert git(repo, "rev-parse", "--verify", "-q", "aistack/t1")  # the branch stays


def test_a_valid_workspace_is_learnt_once_and_a_new_repository_is_checked_again(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    trees = GitWorktrees(tmp_path / "worktrees", tmp_path)
    asked: list[tuple[str, ...]] = []
    real = trees._problem  # noqa: SLF001

    async def counting(path):
        asked.append((str(path),))
        return await real(path)

    trees._problem = counting  # noqa: SLF001
    assert asyncio.run(trees.problem(repo)) is None and asyncio.run(trees.problem(repo)) is None
    assert len(asked) == 1
    import shutil

    shutil.rmtree(repo / ".git")
    assert "is not a git repository" in asyncio.run(trees.problem(repo))
    assert len(asked) == 2


def test_a_repository_whose_git_directories_leave_the_root_is_refused(tmp_path):
    """Both of git's directories are confined: the one a `.git` file names, and the common one
    (branches, objects, worktrees) that a `commondir` there names."""
    root = tmp_path / "root"
    outside = make_git_repo(tmp_path / "outside")
    make_git_repo(root / "inside")
    git(outside, "worktree", "add", "-q", str(root / "common"))
    git_dir = root / "gitdirs" / "common"  # its git directory moved into the root: only the common one is outside
    git_dir.parent.mkdir()
    shutil.move(outside / ".git" / "worktrees" / "common", git_dir)
    (git_dir / "commondir").write_text(f"{outside / '.git'}\n")
    (root / "common" / ".git").write_text(f"gitdir: {git_dir}\n")
    (root / "linked").mkdir()
    (root / "linked" / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    trees = GitWorktrees(tmp_path / "worktrees", root)

    async def problems():
        return {name: await trees.problem(root / name) for name in ("inside", "common", "linked")}

    found = asyncio.run(problems())
    assert found["inside"] is None
    assert "the common git directory of" in found["common"] and "outside the allowed root" in found["common"]
    assert "the git directory of" in found["linked"] and "outside the allowed root" in found["linked"]
    refs = git(outside, "for-each-ref")
    with pytest.raises(PathNotAllowed):  # checked again where the branch would be written
        asyncio.run(trees.prepare(task_in(root / "common"), None))
    assert git(outside, "for-each-ref") == refs


def test_trees_made_and_removed_at_once_in_one_repository_all_succeed(tmp_path):
    # git's own `worktree add` reads every other worktree's files, and fails when one is half
    # written by a concurrent add ("failed to read .git/worktrees/<id>/commondir"); two
    # GitWorktrees stand for two processes (workers) on one machine.
    repo = make_git_repo(tmp_path / "repo", {"a.txt": "one\n"})
    workers = [GitWorktrees(tmp_path / "worktrees", tmp_path) for _ in range(2)]

    async def one(n: int) -> None:
        task, trees = task_in(repo, id=f"t{n}"), workers[n % 2]
        tree = await trees.prepare(task, None)
        (tree.path / "a.txt").write_text(f"{n}\n")
        await trees.checkpoint(tree, f"iteration of t{n}")
        if n % 3 == 0:  # some end (their trees removed) while others are being made
            await trees.remove(replace(task, worktree=str(tree.path)))

    async def rounds():
        for first in range(0, 120, 6):
            await asyncio.gather(*(one(n) for n in range(first, first + 6)))

    asyncio.run(rounds())
    listed = [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]
    assert len(listed) == 1 + 80  # the checkout and every tree whose task did not end
    assert all(git(repo, "log", "-1", "--format=%s", f"aistack/t{n}") == f"iteration of t{n}" for n in range(120))
