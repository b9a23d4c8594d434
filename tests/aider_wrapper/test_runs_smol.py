"""Real runs of aider through a real wrapper against a real llama-server with SmolLM2: the
context-window error, one run per workspace, the parallel limit, cancel, timeout, disconnect."""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from wrapper_support import SMOL, check_result, llm_busy, point_at

from aistack.contracts import Sampling
from aistack.ralph_wiggum.backends import IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.aider import AiderBackend
from support import children, git, make_git_repo, processes_in, wait_until

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


def test_a_client_that_stops_reading_the_ndjson_answer_cancels_its_run(stack_env, wrapper) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    body = {"prompt": LONG, "workspace": "repo", "run_id": "r-gone"}
    with httpx.stream("POST", wrapper.url + "/api/execute", json=body, headers={"Accept": "application/x-ndjson"}, timeout=60) as answer:
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        lines = answer.iter_lines()
        first = json.loads(next(lines))
        assert first["output"] and first["at"] and first["result"] is None
        assert wait_until(lambda: processes_in(repo), 60)
    assert wait_until(lambda: not processes_in(repo), 10)
    assert wait_until(lambda: httpx.post(wrapper.url + "/api/runs/r-gone/cancel", timeout=5).status_code == 404, 5)


def test_aider_dies_with_the_wrapper(stack_env, wrapper, smol_llama) -> None:
    repo = make_git_repo(stack_env.workspace_root / "repo")
    with ThreadPoolExecutor(1) as pool:
        running = start(pool, wrapper.url, {"prompt": LONG, "workspace": "repo"})
        assert wait_until(lambda: processes_in(repo), 60)
        assert wait_until(lambda: llm_busy(smol_llama), 60)  # aider waits for its reply, silent: no broken pipe ends it
        wrapper.kill9()  # its own process group only: aider leads a session of its own
        with pytest.raises(httpx.HTTPError):
            running.result()
    assert wait_until(lambda: not processes_in(repo), 10), "aider outlived the wrapper"


def test_the_orchestrator_abandons_an_interrupted_iterations_run(stack_env, wrapper) -> None:
    """After a restart the orchestrator ends the run of the iteration it died in, by its run id,
    before it puts the tree back (here its first run's client is still connected)."""
    repo = make_git_repo(stack_env.workspace_root / "repo")
    backend = AiderBackend(wrapper.url)
    with ThreadPoolExecutor(1) as pool:
        running = start(pool, wrapper.url, {"prompt": LONG, "workspace": "repo", "run_id": "task1-3"})
        assert wait_until(lambda: processes_in(repo), 60)

        async def abandon() -> bool:
            try:
                return await backend.abandon("task1", 3)
            finally:
                await backend.close()

        assert asyncio.run(abandon()) is True
        assert processes_in(repo) == []
        assert check_result(running.result().json()).error == "cancelled"


def test_aiders_output_reaches_the_orchestrator_while_it_runs(stack_env, wrapper) -> None:
    """The orchestrator's backend asks for the NDJSON answer: aider's output reaches its
    `on_output` with the wrapper's read times while the run still holds its workspace; the
    result that ends the answer holds the same output."""
    make_git_repo(stack_env.workspace_root / "repo")
    heard: list[tuple[str, datetime | None]] = []

    async def iterate() -> tuple[IterationResult, int]:
        backend = AiderBackend(wrapper.url)
        request = IterationRequest("task1", 1, LONG, stack_env.workspace_root / "repo", 120,
                                   on_output=lambda text, at=None: heard.append((text, at)))  # fmt: skip
        running = asyncio.create_task(backend.run(request))
        async with httpx.AsyncClient(base_url=wrapper.url, timeout=30) as client:
            while not heard:
                await asyncio.sleep(0.05)
            busy = await client.post("/api/execute", json={"prompt": "x", "workspace": "repo"})  # the run is still on
            await client.post("/api/runs/task1-1/cancel")
        result = await running
        await backend.close()
        return result, busy.status_code

    result, busy = asyncio.run(iterate())
    assert busy == 409
    assert result.status == "error" and result.error == "cancelled"
    assert result.output and "".join(text for text, _ in heard) == result.output
    times = [at for _, at in heard]
    assert all(at is not None for at in times) and times == sorted(times)  # type: ignore[type-var]


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


def test_llama_server_off_loopback_requires_the_key_and_the_wrapper_sends_it(stack_env, services, tmp_path_factory) -> None:
    """llama-server bound to 0.0.0.0 (reached on 127.0.0.1) with the stack's key: /health stays
    open for probes, everything else needs the key, which appears in no process's argv; aider,
    run by a wrapper holding the key, gets its answers from the model."""
    from wrapper_support import SMOL

    from support import new_stack_env

    key = "llama-key-off-loopback-71"
    llama_env = new_stack_env(tmp_path_factory.mktemp("keyed-llama")).set(**SMOL, AISTACK_BIND_ADDRESS="0.0.0.0", RALPH_WIGGUM_API_KEY=key)
    llama = services("llama-cpp", llama_env, timeout=300)
    url = llama_env.url("llama-cpp")
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": key[:-1]}):
        assert httpx.get(url + "/v1/models", headers=headers, timeout=5).status_code == 401
        assert httpx.get(url + "/metrics", headers=headers, timeout=5).status_code == 401
    assert httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    server = next(pid for pid in children(llama.proc.pid) if Path(f"/proc/{pid}/exe").resolve().name == "llama-server")
    assert key not in Path(f"/proc/{server}/cmdline").read_text() and key not in Path(f"/proc/{server}/environ").read_text()

    wrapper = services("aider-wrapper", point_at(stack_env, llama_env).set(RALPH_WIGGUM_API_KEY=key))
    make_git_repo(stack_env.workspace_root / "repo")
    body = {"prompt": "Create hi.txt containing the word hi.", "workspace": "repo", "timeout_seconds": 240}
    answer = httpx.post(wrapper.url + "/api/execute", json=body, headers={"X-API-Key": key}, timeout=300)
    result = check_result(answer.json())
    assert result.tokens.prompt > 0 and result.tokens.completion > 0, result  # the model answered aider
    assert not (result.error or "").startswith("the LLM refused the API key"), result.error
    assert key not in wrapper.log() and key not in llama.log()


def test_a_runs_own_temperature_and_seed_reach_llama_server(stack_env, wrapper, smol_llama) -> None:
    """A retry with diversity, as the orchestrator's aider backend sends it: the temperature and
    seed it chose are what llama-server samples aider's request with (its /slots show the request
    being processed); abandoning the iteration then ends the run."""
    repo = make_git_repo(stack_env.workspace_root / "repo")
    backend = AiderBackend(wrapper.url)
    request = IterationRequest(task_id="hot", iteration=2, prompt=LONG, worktree=repo, timeout_seconds=300,
                               sampling=Sampling(temperature=0.7, seed=3), candidate=2)  # fmt: skip

    async def scenario() -> list:
        running = asyncio.create_task(backend.run(request))
        assert await asyncio.to_thread(wait_until, lambda: llm_busy(smol_llama), 60), wrapper.log()[-2000:]
        slots = (await asyncio.to_thread(httpx.get, smol_llama.url("llama-cpp") + "/slots", timeout=5)).json()
        await backend.abandon("hot", 2)  # the second candidate's run has an id of its own
        result = await running
        await backend.close()
        assert result.error == "cancelled"
        return slots

    slots = asyncio.run(scenario())
    assert [(round(s["params"]["temperature"], 3), s["params"]["seed"]) for s in slots if s.get("is_processing")] == [(0.7, 3)]


def test_a_reply_cut_at_the_output_limit_still_counts_its_tokens(stack_env, wrapper) -> None:
    """aider logs no usage for a request that hit the limit, only its estimate: the run reports
    that, not nothing (the longest runs would otherwise look the cheapest)."""
    make_git_repo(stack_env.workspace_root / "repo")
    body = {"prompt": LONG, "workspace": "repo"}
    result = check_result(httpx.post(wrapper.url + "/api/execute", json=body, timeout=600).json())
    assert result.status == "error" and "token limit" in result.error and result.transient is False, result.output[-2000:]
    out_limit = int(SMOL["LLAMA_CPP_CONTEXT_SIZE"]) // 4  # the wrapper's output cap at this context
    assert result.tokens.completion >= out_limit // 2, result.output[-2000:]  # aider's estimate, in its own tokenizer
    assert result.tokens.prompt > 500  # aider's system prompt and the request
