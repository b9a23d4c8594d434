"""The agent's output while an iteration runs, as the task's `output` events.

A backend calls `on_output(text, at)` with each piece of its agent's output the moment it reads
it (`at`: when it was read, where that was elsewhere, as in the aider-wrapper; now by default).
`OutputStream` coalesces the pieces into at most one event per WINDOW_SECONDS of at most
EVENT_CHARS characters, each stamped with the read time of its first character; after
ITERATION_CHARS characters of one iteration it streams no more and says so once (an event with
`truncated: true`). The iteration record keeps the output's end as before: the events are a live
view, not the record.

The events go into the events table, as every other event does, rather than only to the streams
open in this process: a stream that reconnects gets what it missed (Last-Event-ID), a page opened
mid-iteration shows the output so far, and a stream served by another process than the loop's
reads them where it reads every event. What that costs is bounded: a quiet agent writes nothing,
a chatty one at most one ~1 ms transaction per window beside the loop (never in the agent's
read path), and a flood at most ITERATION_CHARS of text per iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from aistack.ralph_wiggum.records import utcnow

log = logging.getLogger("aistack.ralph")

WINDOW_SECONDS = 0.25  # output read within this long after a first piece goes out as one event
EVENT_CHARS = 8_000  # characters of text in one event; more waits for the next window
ITERATION_CHARS = 64_000  # characters of one iteration streamed as events at most


class OnOutput(Protocol):
    """Told each piece of the agent's output as it is read; must not block (it only buffers)."""

    def __call__(self, text: str, at: datetime | None = None) -> None: ...


class OutputChunks:
    """PURE: the pieces read so far, cut into events (`take`) within the caps."""

    def __init__(self, iteration: int, event_chars: int = EVENT_CHARS, iteration_chars: int = ITERATION_CHARS):
        self.iteration, self.event_chars = iteration, event_chars
        self._room = iteration_chars  # what may still be streamed of this iteration
        self._pieces: deque[tuple[datetime, str]] = deque()
        self._cut_at: datetime | None = None  # when the cap was reached; its notice not yet taken
        self._cut_said = False

    @property
    def pending(self) -> bool:
        return bool(self._pieces) or (self._cut_at is not None and not self._cut_said)

    def add(self, text: str, at: datetime) -> None:
        if not text or self._cut_at is not None:
            return
        kept = text[: self._room]
        self._room -= len(kept)
        if kept:
            self._pieces.append((at, kept))
        if len(kept) < len(text):
            self._cut_at = at

    def take(self, everything: bool = False) -> list[dict[str, Any]]:
        """One event's worth of what is pending, oldest first (`everything`: all of it, in as
        many events as it takes), then the notice that the cap was reached once that is all out."""
        events: list[dict[str, Any]] = []
        while self._pieces and (everything or not events):
            events.append(self._event())
        if self._cut_at is not None and not self._pieces and not self._cut_said:
            self._cut_said = True
            notice = f"[… the rest of iteration {self.iteration}'s output is not streamed; the iteration keeps its end …]\n"
            events.append({"iteration": self.iteration, "at": self._cut_at.isoformat(), "text": notice, "truncated": True})
        return events

    def _event(self) -> dict[str, Any]:
        first_at, parts, size = self._pieces[0][0], [], 0
        while self._pieces and size < self.event_chars:
            at, text = self._pieces.popleft()
            part, rest = text[: self.event_chars - size], text[self.event_chars - size :]
            if rest:  # the rest keeps its own read time, for the next event
                self._pieces.appendleft((at, rest))
            parts.append(part)
            size += len(part)
        return {"iteration": self.iteration, "at": first_at.isoformat(), "text": "".join(parts)}


class OutputStream:
    """One iteration's `output` events, written through `emit` beside the loop (a task of its
    own, started by the first piece). Used as `async with`: a normal end writes what is pending;
    an exception (a stop) drops it."""

    def __init__(self, emit: Callable[[dict[str, Any]], Awaitable[None]], iteration: int):
        self._emit, self._chunks = emit, OutputChunks(iteration)
        self._wake, self._closing = asyncio.Event(), asyncio.Event()
        self._writer: asyncio.Task | None = None

    def feed(self, text: str, at: datetime | None = None) -> None:
        if not text:  # a quiet agent costs nothing: no task, no write
            return
        self._chunks.add(text, at or utcnow())
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        self._wake.set()

    async def __aenter__(self) -> OutputStream:
        return self

    async def __aexit__(self, kind, _exc, _tb) -> None:
        if self._writer is None:
            return
        if kind is None:
            self._closing.set()
            self._wake.set()
            await self._writer
        else:
            self._writer.cancel()

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                with contextlib.suppress(TimeoutError):  # the window, cut short by the iteration's end
                    async with asyncio.timeout(WINDOW_SECONDS):
                        await self._closing.wait()
                self._wake.clear()
                last = self._closing.is_set()
                for data in self._chunks.take(everything=last):
                    await self._emit(data)
                if last:
                    return
                if self._chunks.pending:
                    self._wake.set()
        except Exception:  # the live view is lost, not the iteration (whose record keeps the output)
            log.warning("could not store the agent's output as events; the iteration goes on", exc_info=True)
