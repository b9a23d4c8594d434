"""Faults between the services, on the whole stack: the real llama-server (SmolLM2-135M, quick to
load), the aider-wrapper running the real aider, the orchestrator. Between the wrapper and
llama-server sits a fault proxy, a real HTTP server on loopback that passes requests through,
holds them, or answers 503 as llama-server does while it loads its model (and caps each reply at
REPLY_TOKENS, so that a run takes seconds on two busy cores; what aider makes of a cut reply is
the iteration's own result).

Each fault is transient: the task must spend no iteration on it, leave nothing running, and go
on when it is over."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support import StackEnv, free_port, make_git_repo, processes_in, serving_llama, wait_until

pytestmark = pytest.mark.e2e

SMOL = {"LLAMA_CPP_MODEL": "smollm2-135m", "LLAMA_CPP_CONTEXT_SIZE": "4096", "LLAMA_CPP_PARALLEL": "1"}
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}  # llama-server's own words
COMPLETIONS = "/v1/chat/completions"
REPLY_TOKENS = 64
TERMINAL = {"completed", "exhausted", "failed", "stopped", "rejected"}


class FaultProxy:
    """Passes every request through to `upstream`, except that: completions wait while
    `passing` is clear; while `outage_until` lies ahead every request is answered 503; and after
    that the next `refuse_completions` completions are answered 503."""

    def __init__(self, upstream: str):
        self.upstream, self.port = upstream, free_port()
        self.passing = threading.Event()
        self.passing.set()
        self.outage_until = 0.0
        self.refuse_completions = 0
        self.seen: Counter[str] = Counter()  # path -> requests
        self.refused: Counter[str] = Counter()  # path -> 503s given
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        assert wait_until(lambda: self._server.started, 10)
        return self

    def __exit__(self, *_) -> None:
        self.passing.set()
        self._server.should_exit = True
        self._thread.join(10)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        self.seen[path] += 1
        if path == COMPLETIONS:
            while not self.passing.is_set():
                await asyncio.sleep(0.05)
        refused = time.monotonic() < self.outage_until
        if not refused and path == COMPLETIONS and self.refuse_completions > 0:
            self.refuse_completions -= 1
            refused = True
        if refused:
            self.refused[path] += 1
            return JSONResponse(LOADING, status_code=503)
        body = await request.body()
        if path == COMPLETIONS:  # short replies: a run takes seconds, not minutes, on two busy cores
            asked = json.loads(body)
            body = json.dumps({**asked, "max_tokens": min(asked.get("max_tokens") or REPLY_TOKENS, REPLY_TOKENS)}).encode()
        async with httpx.AsyncClient(base_url=self.upstream, timeout=300, trust_env=False) as client:
            upstream = await client.request(request.method, path, params=request.query_params, content=body,
                                            headers={"content-type": request.headers.get("content-type", "application/json")})  # fmt: skip
        return Response(upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Iterator[StackEnv]:
    yield from serving_llama(tmp_path_factory, SMOL)


@pytest.fixture
def stack(llama: StackEnv, stack_env: StackEnv, services):
    """ralph-wiggum and the aider-wrapper, the wrapper dialling llama-server through the proxy."""
    with FaultProxy(llama.url("llama-cpp")) as proxy:
        stack_env.set(**SMOL, LLAMA_CPP_PORT=proxy.port, RALPH_TRANSIENT_RETRY_SECONDS=180, AIDER_TIMEOUT_SECONDS=120)
        wrapper = services("aider-wrapper", stack_env)
        ralph = services("ralph-wiggum", stack_env)
        make_git_repo(stack_env.workspace_root / "repo")
        with httpx.Client(base_url=ralph.url, timeout=30) as client:
            yield client, proxy, wrapper


def submit(client: httpx.Client) -> str:
    body = {"prompt": "Create hello.py with a function hello() that returns 'hello'", "workspace": "repo", "max_iterations": 1}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["task_id"]


def wait_terminal(client: httpx.Client, task_id: str, timeout: float = 300) -> dict:
    assert wait_until(lambda: client.get(f"/tasks/{task_id}").json()["status"] in TERMINAL, timeout, interval=0.5)
    return client.get(f"/tasks/{task_id}").json()


def retries(client: httpx.Client, task_id: str) -> list[str]:
    return [e["data"]["error"] for e in client.get(f"/tasks/{task_id}/events.json").json() if e["type"] == "transient_retry"]


def test_the_wrapper_killed_mid_iteration_costs_no_iteration(stack, services, stack_env):
    client, proxy, wrapper = stack
    proxy.passing.clear()  # aider's request to the LLM waits: the iteration is in progress
    task_id = submit(client)
    worktree = stack_env.data_dir / "worktrees" / task_id
    assert wait_until(lambda: proxy.seen[COMPLETIONS] >= 1, 120), "aider never asked the LLM"
    assert processes_in(worktree)  # aider, in the task's worktree

    wrapper.kill9()
    assert wait_until(lambda: retries(client, task_id), 30)
    assert "unreachable" in retries(client, task_id)[0]
    assert wait_until(lambda: not processes_in(worktree), 10), "aider outlived its wrapper"
    task = client.get(f"/tasks/{task_id}").json()
    assert (task["status"], task["iteration"]) == ("running", 0)

    services("aider-wrapper", stack_env)  # it comes back
    proxy.passing.set()
    task = wait_terminal(client, task_id)
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert task["status"] in ("completed", "exhausted") and [it["number"] for it in iterations] == [1], task
    assert iterations[0]["transient_retries"] >= 1 and "aider-wrapper" not in str(iterations[0]["error"]), iterations[0]
    assert proxy.seen[COMPLETIONS] >= 2  # the iteration that counts asked the LLM again


def test_llama_server_answering_503_in_bursts_costs_no_iteration(stack):
    client, proxy, _ = stack
    proxy.outage_until = time.monotonic() + 3  # a burst of 503 to everything, as while a model loads
    proxy.refuse_completions = 3  # then to the first completions: more than the OpenAI client retries by itself
    task_id = submit(client)
    task = wait_terminal(client, task_id)
    iterations = client.get(f"/tasks/{task_id}/iterations").json()

    assert task["status"] in ("completed", "exhausted") and [it["number"] for it in iterations] == [1], task
    assert not any(word in str(iterations[0]["error"]) for word in ("503", "loading", "unavailable")), iterations[0]
    assert proxy.refused[COMPLETIONS] >= 1 and proxy.refused["/health"] >= 1, proxy.refused
    said = retries(client, task_id)
    assert iterations[0]["transient_retries"] == len(said) >= 2, said
    assert any("loading" in s for s in said) and any("unavailable or busy" in s for s in said), said
