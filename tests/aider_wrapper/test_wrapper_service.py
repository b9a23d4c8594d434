"""`aistack serve aider-wrapper` as a real process, with the real aider, and no LLM running:
health, request validation and confinement, aider missing, and the LLM being down."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from wrapper_support import check_health, check_result

from aistack.sandbox import bwrap_problem
from support import git, make_git_repo

JSON = {"content-type": "application/json"}


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
    [llm] = health.llm_endpoints  # LLAMA_CPP_URLS unset: llama-cpp alone
    assert llm.url == health.llama_cpp_url and llm.healthy is False and "not reachable" in llm.detail
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
    (root / "sneaky").mkdir()  # a work tree inside the root whose repository is outside
    (root / "sneaky" / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    git(outside, "worktree", "add", "-q", str(root / "linked"))
    refs = git(outside, "for-each-ref")

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
        ({"workspace": "sneaky"}, "workspace", "git directory of"),
        ({"workspace": "linked"}, "workspace", "outside the allowed root"),
        ({"workspace": "~\x00"}, "workspace", "NUL"),
        ({"workspace": "\ud800"}, "workspace", "Unicode"),
        ({"workspace": "x" * 300}, "workspace", "at most 255"),
        ({"workspace": "/".join(["x" * 200] * 25)}, "workspace", "at most 4096"),
        ({"workspace": "repo", "files": ["a" * 256]}, "files[0]", "at most 255"),
        ({"workspace": "repo", "read_only_files": ["a.py\x00"]}, "read_only_files.0", "NUL"),
        ({"workspace": "repo", "context": {"k": "v" * 70_000}}, "context", "at most 65536"),
        ({"workspace": "repo", "context": {"test_command": ["pytest"]}}, "context.test_command", "shell command"),
        ({"workspace": "repo", "context": {"test_command": ""}}, "context.test_command", "1 to 10000 characters"),
        ({"workspace": "repo", "context": {"test_command": "x" * 10_001}}, "context.test_command", "1 to 10000 characters"),
    ]
    for overrides, field, words in cases:
        body = {"prompt": "Create x.py"} | overrides
        # json.dumps escapes what is not Unicode (\ud800), as a client in any language may send it
        resp = httpx.post(wrapper.url + "/api/execute", content=json.dumps(body), headers=JSON, timeout=30)
        assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
        answer = resp.json()
        assert answer["field"] == field, (body, answer)
        assert words.lower() in answer["detail"].lower(), (body, answer)
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    # Where a symlink leads is told to the server's log, never to the client.
    for body in ({"workspace": "escape"}, {"workspace": "repo", "files": ["link"]}):
        detail = httpx.post(wrapper.url + "/api/execute", json={"prompt": "x"} | body, timeout=30).json()["detail"]
        assert "outside the allowed root" in detail and str(outside) not in detail, detail
    assert str(outside / "README.md") in wrapper.log()
    assert git(outside, "for-each-ref") == refs

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


def test_api_key_guards_everything_but_health_and_healths_details(stack_env, services) -> None:
    key = "wrapper-key-5e"
    wrapper = services("aider-wrapper", stack_env.set(RALPH_WIGGUM_API_KEY=key))
    make_git_repo(stack_env.workspace_root / "repo")
    bare = httpx.get(wrapper.url + "/health", timeout=5)
    assert bare.status_code == 200 and bare.json() == {"status": "degraded"}  # no LLM; no workspace root, no URL
    assert check_health(httpx.get(wrapper.url + "/health", headers={"X-API-Key": key}, timeout=5).json()).workspace == str(
        stack_env.workspace_root
    )
    calls = [
        ("POST", "/api/execute", {"prompt": "x", "workspace": "repo"}),
        ("POST", "/api/runs/r1/cancel", None),
        ("GET", "/openapi.json", None),
    ]
    for method, path, body in calls:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Bearer {key}x"}):
            assert httpx.request(method, wrapper.url + path, json=body, headers=headers, timeout=30).status_code == 401, (path, headers)
    assert httpx.post(wrapper.url + "/api/runs/r1/cancel", headers={"X-API-Key": key}, timeout=5).status_code == 404
    assert httpx.get(wrapper.url + "/openapi.json", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    assert key not in wrapper.log()
