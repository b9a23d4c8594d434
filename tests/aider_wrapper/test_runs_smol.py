"""Real runs of aider through a real wrapper against a real llama-server with SmolLM2: the
context-window error, one run per workspace, the parallel limit, cancel, timeout, disconnect."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from wrapper_support import check_result, llm_busy, point_at

from support import git, make_git_repo, processes_in, wait_until

pytestmark = pytest.mark.e2e

LONG = "Write essay.md: a very long, detailed essay on the history of computing, at least 3000 words."


@pytest.fixture
def wrapper(stack_env, services, smol_llama):
    return services("aider-wrapper", point_at(stack_env, smol_llama))


def start(pool: ThreadPoolExecutor, url: str, body: dict, read_timeout: float = 300):
    return pool.submit(httpx.post, url + "/api/execute", json=body, timeout=httpx.Timeout(30, read=read_timeout))


def test_a_prompt_beyond_the_context_window_is_a_permanent_error(stack_env, wrapper, tmp_path: Path) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    rng = random.Random(1)
    (repo / "big.txt").write_text("\n".join(" ".join(f"word{rng.randint(0, 9999)}" for _ in range(12)) for _ in range(1500)))
    git(repo, "add", "big.txt")
    git(repo, "commit", "-q", "-m", "big")
    body = {"prompt": "Summarise big.txt in summary.md", "workspace": str(repo), "read_only_files": ["big.txt"]}
    result = check_result(httpx.post(wrapper.url + "/api/execute", json=body, timeout=300).json())
    assert result.status == "error" and result.transient is False
    assert "context" in result.error and "exceeds the available context size" in result.error
    assert result.completed is True and result.exit_code == 0  # aider itself exits 0 on this
    assert result.files_modified == []
    assert git(repo, "status", "--porcelain", "--ignored") == ""


def test_one_run_per_workspace_and_cancel_ends_the_group(stack_env, wrapper, smol_llama) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    other = make_git_repo(stack_env.workspace_root / "other")
    with ThreadPoolExecutor(2) as pool:
        running = start(pool, wrapper.url, {"prompt": LONG, "workspace": "repo", "run_id": "task-1-1"})
        assert wait_until(lambda: processes_in(repo), 60), wrapper.log()[-2000:]
        assert wait_until(lambda: llm_busy(smol_llama), 60)  # aider is in its request to the LLM

        second = httpx.post(wrapper.url + "/api/execute", json={"prompt": "x", "workspace": "repo"}, timeout=30)
        assert second.status_code == 409 and second.json()["field"] == "workspace"
        same_id = httpx.post(wrapper.url + "/api/execute", json={"prompt": "x", "workspace": "other", "run_id": "task-1-1"}, timeout=30)
        assert same_id.status_code == 409 and same_id.json()["field"] == "run_id"

        cancel = httpx.post(wrapper.url + "/api/runs/task-1-1/cancel", timeout=30)  # its speed: bench_aider_wrapper
        assert cancel.status_code == 200 and cancel.json()["ended"] is True
        assert processes_in(repo) == []
        result = check_result(running.result().json())
    assert result.status == "error" and result.error == "cancelled" and result.completed is False
    assert result.exit_code is None and result.transient is False
    assert processes_in(other) == []


def test_timeout_ends_the_whole_group(stack_env, wrapper) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    body = {"prompt": LONG, "workspace": "repo", "timeout_seconds": 3}
    result = check_result(httpx.post(wrapper.url + "/api/execute", json=body, timeout=60).json())
    assert result.status == "error" and result.error == "aider timed out after 3 s"
    assert result.completed is False and result.exit_code is None and result.transient is False
    assert 3 <= result.duration_seconds < 60  # not before its timeout; ended, not run to the end
    assert processes_in(repo) == []


def test_a_client_that_goes_away_cancels_its_run(stack_env, wrapper) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    with ThreadPoolExecutor(1) as pool:
        gone = start(pool, wrapper.url, {"prompt": LONG, "workspace": "repo", "run_id": "r-gone"}, read_timeout=4)
        assert wait_until(lambda: processes_in(repo), 60)
        with pytest.raises(httpx.ReadTimeout):
            gone.result()
    assert wait_until(lambda: not processes_in(repo), 5)
    assert wait_until(lambda: httpx.post(wrapper.url + "/api/runs/r-gone/cancel", timeout=5).status_code == 404, 5)


def test_runs_beyond_the_parallel_limit_wait_their_turn(stack_env, services, smol_llama) -> None:
    wrapper = services("aider-wrapper", point_at(stack_env, smol_llama).set(AIDER_MAX_PARALLEL=1))
    first = make_git_repo(stack_env.workspace_root / "first")
    second = make_git_repo(stack_env.workspace_root / "second")
    with ThreadPoolExecutor(2) as pool:
        a = start(pool, wrapper.url, {"prompt": LONG, "workspace": "first", "run_id": "a"})
        assert wait_until(lambda: processes_in(first), 60)
        b = start(pool, wrapper.url, {"prompt": LONG, "workspace": "second", "run_id": "b"})
        assert not wait_until(lambda: processes_in(second), 3)  # queued: it does not start while `a` runs
        assert httpx.post(wrapper.url + "/api/runs/a/cancel", timeout=10).json()["ended"] is True
        assert wait_until(lambda: processes_in(second), 60)  # its turn now
        assert httpx.post(wrapper.url + "/api/runs/b/cancel", timeout=10).json()["ended"] is True
        results = [check_result(f.result().json()) for f in (a, b)]
    assert [r.error for r in results] == ["cancelled", "cancelled"]


def test_llm_going_away_mid_run_is_a_transient_error_at_once(stack_env, services, tmp_path_factory) -> None:
    from wrapper_support import SMOL

    from support import new_stack_env

    llama_env = new_stack_env(tmp_path_factory.mktemp("own-llama")).set(**SMOL)
    llama = services("llama-cpp", llama_env, timeout=300)  # its own: this test stops it
    wrapper = services("aider-wrapper", point_at(stack_env, llama_env))
    repo = make_git_repo(stack_env.workspace_root / "repo")
    with ThreadPoolExecutor(1) as pool:
        running = start(pool, wrapper.url, {"prompt": LONG, "workspace": "repo"})
        assert wait_until(lambda: processes_in(repo), 60)
        assert wait_until(lambda: llm_busy(llama_env), 60)  # aider is in its request to the LLM
        llama.stop()
        stopped = time.monotonic()
        result = check_result(running.result().json())
    assert time.monotonic() - stopped < 45  # ended by the wrapper, not after aider's minute of retries
    assert result.status == "error" and result.transient is True, result
    assert result.error.startswith("the LLM is"), result.error
    assert processes_in(repo) == []
