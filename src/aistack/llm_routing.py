"""Several OpenAI-compatible LLM servers (`LLAMA_CPP_URLS`), with each task routed for the cache.

A task's prompt grows by one check's output per iteration and otherwise repeats itself, and
llama-server keeps a slot's prompt in its KV cache (and evicted ones in `--cache-ram`): a request
whose prefix it has seen evaluates only the new tokens. So every iteration of a task goes to the
server its last one went to while that server is healthy. A task with no server yet, or whose
server is gone, goes to the healthy server with the most free slots; ties go to the server the
task id hashes highest with (rendezvous hashing), so equal servers share the tasks evenly and
every process places a task alike. A task that loses its server mid-run fails transiently (the
orchestrator retries without spending an iteration) and its next run lands elsewhere.

Health and load are polled in the background (`Router.start`); `Router.route` decides from what
was last seen and never waits on the network. Load comes from llama-server's `/slots` (slots and
how many are processing), else Prometheus `/metrics` (llama-server's requests processing and
deferred, vLLM's requests running and waiting); a server with neither (Ollama) is busy-unknown:
only the runs this process sent it count against it. Health is `/health`, or `/v1/models` where
`/health` is 404 (Ollama). The stack's key goes along as a bearer token, never into a log.

Whatever calls an LLM for a task (the aider-wrapper for aider's `--openai-api-base`, an agent
backend) makes one `Router.from_settings`, `start`s it inside its event loop and asks
`with router.route(task_id) as url:` for each run; `url` is None when no server is healthy
(`router.problem()` says why), and after a failed run `await router.confirm(url)` marks the
server down if it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aistack.config import Settings
from aistack.contracts import LlmEndpoint
from aistack.health import Health, acheck

log = logging.getLogger("aistack.llm_routing")

POLL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 1.0
REMEMBERED_TASKS = 10_000  # task → server entries kept; the oldest is forgotten first
BUSY_METRICS = frozenset({
    "llamacpp:requests_processing", "llamacpp:requests_deferred",  # llama-server --metrics
    "vllm:num_requests_running", "vllm:num_requests_waiting",
})  # fmt: skip


@dataclass(frozen=True)
class Server:
    """One LLM server as last seen."""

    url: str  # base URL, without /v1
    healthy: bool = False
    detail: str | None = "not checked yet"  # why it is not healthy
    busy: int | None = None  # requests it is working on or holding; None: it does not say
    slots: int | None = None  # requests it serves at once, where it says
    routed: int = 0  # runs this process has on it now

    @property
    def free(self) -> int:
        """Free slots as far as known: what it reported, or what this process alone sent it,
        whichever is more (a poll is up to POLL_SECONDS old; runs routed since are not in it)."""
        return (self.slots or 0) - max(self.busy or 0, self.routed)


def score(task: str, url: str) -> int:
    """Rendezvous hash: the server with the highest score is the task's among equals."""
    return int.from_bytes(hashlib.blake2b(f"{task}\0{url}".encode(), digest_size=8).digest(), "big")


def choose(task: str, servers: Sequence[Server], last: str | None) -> Server | None:
    """PURE: the server for the task's next run. Its last server while that is healthy; else the
    healthy one with the most free slots, one that reports its load before one that does not,
    then by rendezvous hash; None when none is healthy."""
    healthy = [s for s in servers if s.healthy]
    for server in healthy:
        if server.url == last:
            return server
    return min(healthy, key=lambda s: (-s.free, s.busy is None, -score(task, s.url)), default=None)


def load_from_slots(body: Any) -> tuple[int, int] | None:
    """(busy, slots) from llama-server's `/slots`: `is_processing` in newer servers, `state` (0
    idle) in older ones; None when it is not such a list."""
    if not isinstance(body, list) or not body or not all(isinstance(slot, dict) for slot in body):
        return None
    busy = sum(1 for slot in body if slot.get("is_processing", slot.get("state", 0) not in (0, None)))
    return busy, len(body)


def load_from_metrics(text: str) -> int | None:
    """Requests in progress or queued from a Prometheus text page; None when it names none of BUSY_METRICS."""
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples if s.name in BUSY_METRICS]
    except ValueError:  # not a Prometheus page
        return None
    return int(sum(s.value for s in samples)) if samples else None


def describe(url: str, health: Health) -> str:
    """Why a server is not ready, for people."""
    if health.state == "loading":
        return f"llama-cpp at {url} is still loading its model (HTTP 503)"
    if health.reachable:
        return f"llama-cpp at {url} is unhealthy ({health.detail})"
    return f"llama-cpp at {url} is not reachable ({health.detail})"


class Router:
    """The LLM servers, their last known health and load, and which server each task is on."""

    def __init__(self, urls: Sequence[str], api_key: str | None = None, poll_seconds: float = POLL_SECONDS) -> None:
        self._seen = {url: Server(url) for url in urls}
        self._routed: Counter[str] = Counter()
        self._homes: OrderedDict[str, str] = OrderedDict()
        self._poll_seconds = poll_seconds
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, trust_env=False)  # servers are dialled directly, never via a proxy
        self._poller: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        return cls(settings.llm_urls, settings.api_key)

    @property
    def servers(self) -> list[Server]:
        return [replace(s, routed=self._routed[s.url]) for s in self._seen.values()]

    def start(self) -> None:
        """Poll every server in the background until `close`; call inside the event loop."""
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def close(self) -> None:
        if self._poller:
            self._poller.cancel()
        await self._client.aclose()

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # keep polling whatever happens; the last state stands meanwhile
                log.exception("polling the LLM servers failed")
            await asyncio.sleep(self._poll_seconds)

    async def poll(self) -> None:
        """One look at every server, all at once."""
        seen = await asyncio.gather(*(self._look(url) for url in self._seen))
        self._seen = {s.url: s for s in seen}

    async def _look(self, url: str) -> Server:
        health = await self._health(url)
        if not health.ready:
            return Server(url, False, describe(url, health))
        busy, slots = await self._load(url)
        return Server(url, True, None, busy, slots)

    async def _health(self, url: str) -> Health:
        health = await acheck(self._client, url + "/health", PROBE_TIMEOUT_SECONDS)
        if health.detail == "HTTP 404":  # no /health (Ollama): the OpenAI API answering is the proof
            health = await acheck(self._client, url + "/v1/models", PROBE_TIMEOUT_SECONDS)
        return health

    async def _load(self, url: str) -> tuple[int | None, int | None]:
        try:
            slots = await self._client.get(url + "/slots", timeout=PROBE_TIMEOUT_SECONDS)
            if slots.status_code == 200 and (found := load_from_slots(slots.json())):
                return found
            metrics = await self._client.get(url + "/metrics", timeout=PROBE_TIMEOUT_SECONDS)
            if metrics.status_code == 200:
                return load_from_metrics(metrics.text), None
        except (httpx.HTTPError, ValueError):
            pass
        return None, None

    @contextmanager
    def route(self, task: str) -> Iterator[str | None]:
        """The base URL for one run of `task` (None: no server is healthy), counted as busy
        there until the block ends."""
        last = self._homes.get(task)
        chosen = choose(task, self.servers, last)
        if chosen is None:
            yield None
            return
        if chosen.url != last:
            where = f"moved from {last} ({self._seen[last].detail})" if last in self._seen else "placed"
            log.info("task %s %s to %s (%d free slots)", task, where, chosen.url, chosen.free)
        self._homes[task] = chosen.url
        self._homes.move_to_end(task)
        while len(self._homes) > REMEMBERED_TASKS:
            self._homes.popitem(last=False)
        self._routed[chosen.url] += 1
        try:
            yield chosen.url
        finally:
            self._routed[chosen.url] -= 1

    async def confirm(self, url: str) -> str | None:
        """One probe of `url` now: None when it is ready, else why not, and it is down until a
        poll finds it ready again (its tasks go elsewhere)."""
        health = await self._health(url)
        if health.ready:
            return None
        problem = describe(url, health)
        self._seen[url] = Server(url, False, problem)
        return problem

    def problem(self) -> str | None:
        """None when some server is healthy, else why none is."""
        if any(s.healthy for s in self._seen.values()):
            return None
        return "; ".join(s.detail or "unhealthy" for s in self._seen.values())

    def endpoints(self) -> list[LlmEndpoint]:
        return [LlmEndpoint.model_validate(server, from_attributes=True) for server in self.servers]
