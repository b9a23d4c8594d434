"""Two real llama-servers (SmolLM2) behind one real wrapper (`LLAMA_CPP_URLS`), driven by the
orchestrator's aider backend: a task's runs of real aider stay on one server, and move to the
other when it is stopped mid-run, the lost run being a transient failure."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from wrapper_support import SMOL, check_health, point_at

from aistack.ralph_wiggum.backends.aider import AiderBackend
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult
from support import StackEnv, free_port, make_git_repo, new_stack_env, wait_until

pytestmark = pytest.mark.e2e

PROMPT = "Create hi.txt containing the word hi."
RUN_SECONDS = 30  # aider's first request is under way by then (SmolLM2 reads its ~1.5k-token prompt for longer)


def processing(llama: StackEnv) -> bool:
    try:
        return any(slot["is_processing"] for slot in httpx.get(llama.url("llama-cpp") + "/slots", timeout=2).json())
    except httpx.HTTPError:
        return False


def run(wrapper_url: str, worktree, iteration: int) -> IterationResult:
    async def once() -> IterationResult:
        backend = AiderBackend(wrapper_url)
        try:
            # where it goes is the question, not what aider makes of it: a short run is enough
            request = IterationRequest("task-route", iteration, PROMPT, worktree, timeout_seconds=RUN_SECONDS)
            return await backend.run(request)
        finally:
            await backend.close()

    return asyncio.run(once())


def test_a_tasks_runs_stay_on_one_server_and_move_when_it_stops(stack_env, services, tmp_path_factory) -> None:
    llamas = [new_stack_env(tmp_path_factory.mktemp(f"llama-{name}")).set(**SMOL) for name in "ab"]
    procs = {llama.url("llama-cpp"): services("llama-cpp", llama, timeout=300) for llama in llamas}
    by_url = {llama.url("llama-cpp"): llama for llama in llamas}
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: it gets no run, and does not stop the start
    env = point_at(stack_env, llamas[0]).set(LLAMA_CPP_URLS=",".join([dead, *by_url]), STARTUP_DEPENDENCY_CHECK=True)
    wrapper = services("aider-wrapper", env)
    worktree = make_git_repo(stack_env.data_dir / "worktrees" / "task-route")

    health = check_health(httpx.get(wrapper.url + "/health", timeout=5).json())
    assert [(e.url, e.healthy, e.slots, e.busy) for e in health.llm_endpoints] == [
        (dead, False, None, None),
        *[(url, True, 2, 0) for url in by_url],
    ]
    assert health.llama_cpp_url == dead and health.status == "healthy"  # one healthy server is enough

    def served(iteration: int, stop_midway: str | None = None) -> tuple[IterationResult, list[str]]:
        """Run one iteration (stopping that server once it works on it); which servers worked on it."""
        seen: set[str] = set()
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run, wrapper.url, worktree, iteration)
            while not running.done():
                seen |= {url for url, llama in by_url.items() if procs[url].proc.poll() is None and processing(llama)}
                if stop_midway in seen:
                    procs[stop_midway].stop()
                time.sleep(0.2)
        return running.result(), sorted(seen)

    first, [home] = served(1)  # one server read aider's prompt: the one the wrapper chose
    assert not first.transient, first
    second, where = served(2)
    assert not second.transient and where == [home], (second, where)  # the same server again: its cache

    lost, where = served(3, stop_midway=home)  # its server goes away while aider waits on it
    assert lost.transient and lost.error.startswith("the LLM is"), lost  # transient: the orchestrator spends no iteration
    assert where == [home]
    other = next(url for url in by_url if url != home)
    again, where = served(3)  # the orchestrator's retry of that iteration: on the other server at once
    assert not again.transient and where == [other], (again, where)
    fourth, where = served(4)
    assert not fourth.transient and where == [other]  # and the task stays there

    health = check_health(httpx.get(wrapper.url + "/health", timeout=5).json())
    state = {e.url: (e.healthy, e.detail) for e in health.llm_endpoints}
    assert state[other] == (True, None) and state[home][0] is False and "not reachable" in state[home][1]
    assert health.status == "healthy" and health.llm_reachable
    assert wait_until(lambda: "moved from" in wrapper.log(), 5), wrapper.log()[-3000:]
