"""The real thing: aider with the stack's 1.5B coder model makes a working file in a fresh repo."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from wrapper_support import check_health, check_result, point_at

from aistack.sandbox import bwrap_problem
from support import git, make_git_repo

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("where", ["repository", "task worktree"])
def test_aider_creates_a_working_file_and_leaves_nothing_else(stack_env, services, coder_llama, where: str) -> None:
    wrapper = services("aider-wrapper", point_at(stack_env, coder_llama))
    health = check_health(httpx.get(wrapper.url + "/health", timeout=5).json())
    assert health.status == "healthy" and health.isolation.sandbox == (
        "none" if bwrap_problem() else "bwrap"
    )  # aider writes in the sandbox
    repo = checkout = make_git_repo(stack_env.workspace_root / "hello")
    if where == "task worktree":  # how the orchestrator runs a task: a git worktree under the data dir
        repo = stack_env.data_dir / "worktrees" / "task-1"
        repo.parent.mkdir(parents=True)
        git(checkout, "worktree", "add", "-q", "-b", "task-1", str(repo))
    (repo / "notes.txt").write_text("dirty before the run, left alone\n")

    body = {"prompt": "Create hello.py with a function hello() that returns 'hello'", "workspace": str(repo), "iteration": 1}
    result = check_result(httpx.post(wrapper.url + "/api/execute", json=body, timeout=600).json())

    assert result.status == "success", result.error
    assert result.completed is True and result.exit_code == 0 and result.transient is False
    assert result.files_modified == ["hello.py"]
    assert result.tokens.prompt > 0 and result.tokens.completion > 0
    check = subprocess.run([sys.executable, "-B", "-c", "import hello; print(hello.hello())"], cwd=repo, capture_output=True, text=True)
    assert check.stdout.strip() == "hello", check.stderr
    # Only the model's edit: no .aider* files, .gitignore untouched, history kept outside.
    status = git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all").splitlines()
    assert sorted(line[3:] for line in status) == ["hello.py", "notes.txt"]
    assert not list(repo.rglob(".aider*"))
    assert not (repo / ".gitignore").exists()
    if checkout != repo:
        assert git(checkout, "status", "--porcelain", "--ignored") == ""  # the user's checkout untouched
    runs = list((stack_env.data_dir / "aider" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "chat.history.md").is_file()
