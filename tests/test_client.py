"""The orchestrator's client against the wire format alone (a transport that answers fixed bytes)."""

from __future__ import annotations

import asyncio

import httpx

from aistack.client import RalphClient

EVENT = '{"id": 1, "task_id": "t1", "type": "status", "data": {"status": "running"}, "created_at": "2026-11-29T10:00:00Z"}'

# What ralph-wiggum's event stream sends while an iteration runs for a while: an event, then
# sse-starlette's keep-alive comment every 15 s, then the end. A comment dispatches no event, but
# the decoder keeps the last event id, so the keep-alive's blank line comes out as a message with
# that id and no data.
STREAM = f"id: 1\nevent: status\ndata: {EVENT}\n\n: ping - 2026-11-29 10:00:15\n\nevent: end\ndata: {{}}\n\n"


def test_follow_reads_through_a_keep_alive_between_events():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=STREAM.encode())

    async def scenario() -> list:
        client = RalphClient("http://ralph.test", transport=httpx.MockTransport(answer))
        try:
            return [event async for event in client.follow("t1")]
        finally:
            await client.aclose()

    events = asyncio.run(scenario())
    assert [(e.id, e.type, e.data) for e in events] == [(1, "status", {"status": "running"})]
