"""llama-cpp as the agents that talk to it themselves (langchain, mini-swe-agent) see it: its
OpenAI API, the model's name, the stack's key, and its health, polled in the background so that
a backend's `health()` never waits on it."""

from __future__ import annotations

import asyncio

import httpx

from aistack.config import Settings
from aistack.contracts import BackendHealth
from aistack.health import acheck

POLL_SECONDS = 5.0
NO_KEY = "no-key"  # OpenAI clients insist on a key; llama-server without one ignores it


class LocalLlm:
    def __init__(self, settings: Settings):
        self.url = settings.url("llama-cpp")
        self.api_url = self.url + "/v1"
        self.model = settings.llama_cpp_model_alias
        self.api_key = settings.api_key or NO_KEY
        # our own service: never through a proxy; no read timeout (a reply takes what it takes)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), trust_env=False)
        self.reachable: bool | None = None
        self.detail: str | None = "not checked yet"
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin polling (once, however many backends share this)."""
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def backend_health(self, name: str, missing: str | None) -> BackendHealth:
        """A backend that calls this LLM itself: available unless `missing` says what is not
        installed; reachable as last polled."""
        return BackendHealth(name=name, available=missing is None, reachable=self.reachable, url=self.api_url,
                             detail=missing or self.detail)  # fmt: skip

    async def _poll(self) -> None:
        while True:
            health = await acheck(self.client, self.url + "/health")
            self.reachable = health.ready
            self.detail = None if health.ready else f"LLM at {self.url}: {health.detail}"
            await asyncio.sleep(POLL_SECONDS)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if not self.client.is_closed:
            await self.client.aclose()
