"""`aider` backend: an HTTP client of the aider-wrapper service (`POST /api/execute`)."""

from __future__ import annotations

import asyncio
import logging

import httpx

from aistack.contracts import NDJSON, BackendHealth, ExecuteProgress, ExecuteRequest, ExecuteResult, WrapperHealth
from aistack.health import acheck
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult

log = logging.getLogger("aistack.ralph")
HEALTH_POLL_SECONDS = 5.0
CANCEL_WAIT_SECONDS = 10.0  # the wrapper waits up to 5 s for the run's end before it answers
ABANDON_SECONDS = 60.0  # how long an abandoned run is asked to end before the tree is put back anyway


class AiderBackend:
    name = "aider"

    def __init__(self, base_url: str, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(10.0, read=None), trust_env=False)
        self._reachable: bool | None = None
        self._available = True
        self._detail: str | None = "not checked yet"
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        """Poll the wrapper's health in the background, so `health()` never waits on it."""
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await self.refresh_health()
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    async def refresh_health(self) -> None:
        result = await acheck(self._client, self.base_url + "/health")
        if not result.reachable:
            self._reachable, self._detail = False, result.detail
            return
        try:
            body = WrapperHealth.model_validate(result.body)
        except ValueError:
            self._reachable, self._available, self._detail = result.ready, True, f"/health: {result.detail}"
            return
        self._available = body.aider_available
        self._reachable = result.state == "healthy"  # a degraded wrapper has no LLM: it cannot work
        problems = [
            p
            for p, bad in (
                ("aider is not installed", not body.aider_available),
                (f"LLM unreachable at {_llm_urls(body)}", not body.llm_reachable),
            )
            if bad
        ]
        self._detail = "; ".join(problems) or None

    def health(self) -> BackendHealth:
        return BackendHealth(name=self.name, available=self._available, reachable=self._reachable, url=self.base_url, detail=self._detail)

    async def run(self, request: IterationRequest) -> IterationResult:
        run_id = _run_id(request.task_id, request.iteration, request.candidate)
        body = ExecuteRequest(
            prompt=request.prompt,
            workspace=str(request.worktree),
            files=list(request.context.get("files", [])),
            read_only_files=list(request.context.get("read_only_files", [])),
            timeout_seconds=max(1, int(request.timeout_seconds)),
            iteration=request.iteration,
            context=request.context,
            run_id=run_id,
            task_id=request.task_id,  # every iteration to the same LLM server: its prompt cache
            sampling=request.sampling,
        )
        where = f"aider-wrapper at {self.base_url}"
        try:
            answer = await self._execute(body, request)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(run_id))
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.RemoteProtocolError) as exc:
            self._reachable = False
            return IterationResult("error", "", f"{where} unreachable: {type(exc).__name__}", transient=True)
        except httpx.HTTPError as exc:
            return IterationResult("error", "", f"{where} failed: {exc}", transient=True)
        if answer is None:
            return IterationResult("error", "", f"{where} ended its answer before the run's result", transient=True)
        if isinstance(answer, httpx.Response):
            if answer.status_code in (409, 429, 502, 503, 504):
                return IterationResult("error", "", f"{where} answered {answer.status_code}: {_detail(answer)}", transient=True)
            return IterationResult("error", "", f"{where} refused the run ({answer.status_code}): {_detail(answer)}")
        result = answer
        # result.files_modified is the wrapper's own view; the runner asks git in the worktree,
        # which it must stage to checkpoint anyway and which also sees what aider's hooks wrote.
        return IterationResult(
            status=result.status,
            output=result.output,
            error=result.error,
            exit_code=result.exit_code,
            transient=result.transient,
            tokens=result.tokens,
        )

    async def _execute(self, body: ExecuteRequest, request: IterationRequest) -> ExecuteResult | httpx.Response | None:
        """The run's result, with aider's output passed to `request.on_output` as the wrapper reads
        it (its NDJSON answer); the response when the wrapper refused the run; None when the answer
        broke off before the result."""
        timeout = httpx.Timeout(10.0, read=request.timeout_seconds + 30)
        answer = self._client.stream("POST", "/api/execute", json=body.model_dump(), headers={"Accept": NDJSON}, timeout=timeout)
        async with answer as resp:
            if resp.status_code != 200:
                await resp.aread()
                return resp
            if not resp.headers.get("content-type", "").startswith(NDJSON):  # a wrapper that cannot stream
                return ExecuteResult.model_validate_json(await resp.aread())
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                try:
                    step = ExecuteProgress.model_validate_json(line)
                except ValueError:  # not a line of the contract: as if it had broken off
                    return None
                if step.result is not None:
                    return step.result
                if step.output and request.on_output is not None:
                    request.on_output(step.output, step.at)
        return None

    async def abandon(self, task_id: str, iteration: int) -> bool:
        """The wrapper cancels a run whose client went away, but only once it notices; this ends
        the run (its whole process group) now, before the task's tree is put back. A run the
        wrapper has not seen end yet (it waits 5 s per answer; a loaded machine takes longer) is
        asked again, up to ABANDON_SECONDS: the tree must not be put back under a live aider."""
        all_ended = True
        for candidate in (1, 2):  # a second attempt ran beside the first with strategy.candidates 2
            run_id, clock = _run_id(task_id, iteration, candidate), asyncio.get_running_loop().time
            deadline = clock() + ABANDON_SECONDS
            ended = await self._cancel(run_id, timeout=CANCEL_WAIT_SECONDS)
            while not ended and clock() < deadline:  # each ask waits up to 5 s at the wrapper: no busy loop
                ended = await self._cancel(run_id, timeout=CANCEL_WAIT_SECONDS)
            all_ended = all_ended and ended
        return all_ended

    async def _cancel(self, run_id: str, timeout: float = 2.0) -> bool:
        """Whether the run is over: ended on this cancel, or not there (404: no such run, any more)."""
        try:
            answer = await self._client.post(f"/api/runs/{run_id}/cancel", timeout=timeout)
        except httpx.HTTPError as exc:
            log.warning("could not cancel aider run %s: %s", run_id, exc)
            return True  # a wrapper that does not answer is not asked again here; its runs die with it
        try:
            body = answer.json() if answer.status_code == 200 else None
        except ValueError:  # not the wrapper's answer: nothing more to learn from asking again
            body = None
        if isinstance(body, dict) and body.get("ended") is False:
            log.warning("aider run %s has not ended yet after its cancel", run_id)
            return False
        return True

    async def close(self) -> None:
        if self._poller:
            self._poller.cancel()
        await self._client.aclose()


def _run_id(task_id: str, iteration: int, candidate: int = 1) -> str:
    """A run's id at the wrapper: the same for every attempt at one iteration (after a crash), one
    per parallel candidate."""
    return f"{task_id}-{iteration}" if candidate == 1 else f"{task_id}-{iteration}-{candidate}"


def _llm_urls(body: WrapperHealth) -> str:
    return ", ".join(e.url for e in body.llm_endpoints) or body.llama_cpp_url


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:300]
    except ValueError:
        return resp.text[:300]
