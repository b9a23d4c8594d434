"""One /health vocabulary for every service and every caller (real HTTP for the probes)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from aistack import health
from support import free_port


@pytest.mark.parametrize(
    ("status", "body", "state", "ready", "detail"),
    [
        (200, {"status": "healthy", "version": "1"}, "healthy", True, "HTTP 200"),
        (200, {"status": "ok"}, "healthy", True, "HTTP 200"),
        (200, "not json", "healthy", True, "HTTP 200"),
        (200, {"status": "degraded", "backends": [{"name": "aider", "available": True, "reachable": False}]}, "degraded",
         True, "HTTP 200 (degraded: backend unreachable: aider)"),
        (200, {"status": "degraded", "backends": [{"name": "aider", "available": True, "reachable": False},
                                                  {"name": "goose", "available": False, "reachable": None}]}, "degraded",
         True, "HTTP 200 (degraded: backend unreachable: aider)"),
        (200, {"status": "degraded", "backends": [{"name": "goose", "available": False, "reachable": None}]}, "degraded",
         True, "HTTP 200 (degraded: no backend is available)"),
        (503, {"status": "loading model"}, "loading", False, "HTTP 503 (loading model)"),
        (503, {"error": {"message": "Loading model"}}, "loading", False, "HTTP 503 (loading)"),
        (500, {}, "unhealthy", False, "HTTP 500"),
        (404, {}, "unhealthy", False, "HTTP 404"),
    ],
)  # fmt: skip
def test_every_answer_means_one_thing(status, body, state, ready, detail):
    result = health.classify(status, body, 1.0)
    assert (result.state, result.ready, result.detail, result.reachable) == (state, ready, detail, True)


def test_the_async_probe_reads_the_answer_like_the_sync_one():
    async def probe():
        transport = httpx.MockTransport(lambda request: httpx.Response(503, json={"status": "loading"}))
        async with httpx.AsyncClient(transport=transport) as client:
            return await health.acheck(client, "http://svc/health")

    result = asyncio.run(probe())
    assert result.state == "loading" and result.latency_ms is not None and not result.ready


def test_nothing_listening_is_down_and_a_silent_listener_is_unhealthy():
    refused = health.check(f"http://127.0.0.1:{free_port()}/health", timeout=1)
    assert (refused.state, refused.detail, refused.reachable) == ("down", "connection refused", False)
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        silent = health.check(f"http://127.0.0.1:{s.getsockname()[1]}/health", timeout=0.5)
    assert (silent.state, silent.reachable, silent.ready) == ("unhealthy", True, False)


def test_a_refused_connection_is_named_so_for_async_callers_too():
    async def probe():
        async with httpx.AsyncClient() as client:
            return await health.acheck(client, f"http://127.0.0.1:{free_port()}/health", 1)

    assert asyncio.run(probe()).detail == "connection refused"
