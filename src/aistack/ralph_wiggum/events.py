"""Wakes Server-Sent-Event streams when the store records something (from any thread)."""

from __future__ import annotations

import asyncio


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, _task_id: str = "") -> None:
        """Safe to call from worker threads (the store's callback)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def current(self) -> asyncio.Event:
        """Take this BEFORE reading the store, then wait on it: nothing recorded in between is missed."""
        return self._event
