"""`aistack serve aider-wrapper` as a real process, with the real aider, and no LLM running:
health, request validation and confinement, aider missing, and the LLM being down."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from wrapper_support import check_health, check_result

from aistack.sandbox import bwrap_problem
from support import git, make_git_repo


@pytest.fixture
def wrapper(stack_env, services):
    return services("aider-wrapper", stack_env)


def test_health_reports_aider_and_an_unreachable_llm(stack_env, wrapper) -> None:
    health = check_health(httpx.get(wrapper.url + "/health", timeout=5).json())
    assert health.aider_available is True
    assert health.llm_reachable is False  # nothing listens on LLAMA_CPP_PORT
    assert health.status == "degraded"
    assert health.workspace == str(stack_env.workspace_root)
    assert health.llama_cpp_url == f"http://127.0.0.1:{stack_env.values['LLAMA_CPP_PORT']}"
    # aider runs sandboxed wherever bwrap works (the default RALPH_SANDBOX=auto), and always under the limits
    assert health.isolation.sandbox == ("none" if bwrap_problem() else "bwrap")
    assert health.isolation.limits == {"cpu_seconds": 3600, "memory_mb": 8192, "processes": 4096, "file_size_mb": 1024}


def test_llm_down_is_a_quick_transient_error(stack_env, wrapper) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    resp = httpx.post(wrapper.url + "/api/execute", json={"prompt": "Create a.py", "workspace": "repo"}, timeout=120)
    assert resp.status_code == 200
    result = check_result(resp.json())
    assert result.status == "error" and result.transient is True and result.completed is False
    # the wrapper's own probe said so, before aider ran (its speed: bench_aider_wrapper)
    assert "not reachable" in result.error and stack_env.values["LLAMA_CPP_PORT"] in result.error
    assert result.files_modified == []
    assert git(repo, "status", "--porcelain", "--ignored") == ""

    # The orchestrator's task worktrees live under the data dir: allowed too.
    worktree = make_git_repo(stack_env.data_dir / "worktrees" / "task-1")
    resp = httpx.post(wrapper.url + "/api/execute", json={"prompt": "Create a.py", "workspace": str(worktree)}, timeout=120)
    assert resp.status_code == 200 and check_result(resp.json()).transient is True


def test_bad_requests_get_4xx_naming_the_field(stack_env, wrapper, tmp_path: Path) -> None:
    root = stack_env.workspace_root
    repo = make_git_repo(root / "repo", {"a.py": "a = 1\n", "sub/b.py": "b = 1\n"})
    outside = make_git_repo(tmp_path / "outside")
    (root / "escape").symlink_to(outside)
    (repo / "link").symlink_to(outside / "README.md")
    git(repo, "add", "link")
    git(repo, "commit", "-q", "-m", "a link out of the workspace")
    (root / "plain").mkdir()
    (root / "file.txt").write_text("x")

    cases = [
        ({"workspace": "../outside"}, "workspace", "outside the allowed root"),
        ({"workspace": str(outside)}, "workspace", "outside the allowed root"),
        ({"workspace": "escape"}, "workspace", "outside the allowed root"),
        ({"workspace": "repo/../../outside"}, "workspace", "outside the allowed root"),
        ({"workspace": "missing"}, "workspace", "does not exist"),
        ({"workspace": "plain"}, "workspace", "not a git repository"),
        ({"workspace": "file.txt"}, "workspace", "not a directory"),
        ({"workspace": "repo/sub"}, "workspace", "top directory of its git repository"),
        ({"workspace": "repo", "files": ["a.py", "../x.py"]}, "files[1]", "outside"),
        ({"workspace": "repo", "files": ["/etc/passwd"]}, "files[0]", "outside"),
        ({"workspace": "repo", "files": ["link"]}, "files[0]", "outside"),
        ({"workspace": "repo", "files": ["sub"]}, "files[0]", "not a file"),
        ({"workspace": "repo", "read_only_files": ["nope.md"]}, "read_only_files[0]", "does not exist"),
        ({"workspace": "repo", "files": [".git/hooks/pre-commit"]}, "files[0]", "inside .git"),
        ({"workspace": "repo", "prompt": ""}, "prompt", ""),
        ({"workspace": "repo", "timeout_seconds": 0}, "timeout_seconds", ""),
        ({"prompt": "x"}, "workspace", ""),
    ]
    for overrides, field, words in cases:
        body = {"prompt": "Create x.py"} | overrides
        resp = httpx.post(wrapper.url + "/api/execute", json=body, timeout=30)
        assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
        answer = resp.json()
        assert answer["field"] == field, (body, answer)
        assert words in answer["detail"], (body, answer)
    assert git(repo, "status", "--porcelain", "--ignored") == ""

    resp = httpx.post(wrapper.url + "/api/execute", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["field"] == "body"


def test_cancel_of_an_unknown_run_is_404(wrapper) -> None:
    resp = httpx.post(wrapper.url + "/api/runs/nope/cancel", timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {"detail": "no run 'nope' is in progress", "field": "run_id"}


def test_aider_missing_is_reported_not_hidden(stack_env, services) -> None:
    stack_env.set(AIDER_BIN="/nonexistent/aider")
    wrapper = services("aider-wrapper", stack_env)
    health = check_health(httpx.get(wrapper.url + "/health", timeout=5).json())
    assert health.aider_available is False and health.status == "degraded"
    make_git_repo(stack_env.workspace_root / "repo")
    resp = httpx.post(wrapper.url + "/api/execute", json={"prompt": "x", "workspace": "repo"}, timeout=30)
    assert resp.status_code == 503
    assert "aider is not available" in resp.json()["detail"] and "/nonexistent/aider" in resp.json()["detail"]
