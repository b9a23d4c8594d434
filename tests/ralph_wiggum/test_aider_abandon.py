"""Abandoning an interrupted iteration's aider run: the tree is put back only once the wrapper says
the run has ended (in process: the wrapper's cancel answers as data; the real wrapper ending a real
aider is tests/aider_wrapper/test_runs_smol.py)."""

from __future__ import annotations

import asyncio

import httpx

from aistack.ralph_wiggum.backends import aider


def test_a_run_not_ended_yet_is_asked_again_until_the_wrapper_says_it_ended(monkeypatch) -> None:
    answers = {"t1-3": [{"ended": False}, {"ended": False}, {"ended": True}], "t1-3-2": []}  # the 2nd candidate: no such run
    asked: list[str] = []

    def wrapper(request: httpx.Request) -> httpx.Response:
        run_id = request.url.path.split("/")[3]
        asked.append(run_id)
        if not answers[run_id]:
            return httpx.Response(404, json={"detail": f"no run {run_id!r} is in progress"})
        return httpx.Response(200, json={"run_id": run_id, "cancelled": True, **answers[run_id].pop(0)})

    backend = aider.AiderBackend("http://wrapper")
    backend._client = httpx.AsyncClient(base_url="http://wrapper", transport=httpx.MockTransport(wrapper))
    assert asyncio.run(backend.abandon("t1", 3)) is True
    assert asked == ["t1-3", "t1-3", "t1-3", "t1-3-2"]

    answers["t1-3"] = [{"ended": False}] * 100  # one that never ends: asked until ABANDON_SECONDS, not for ever
    monkeypatch.setattr(aider, "ABANDON_SECONDS", 0.0)
    asked.clear()
    assert asyncio.run(backend.abandon("t1", 3)) is False  # the task fails rather than reset a tree under it
    assert asked == ["t1-3", "t1-3-2"]


def test_an_answer_that_is_not_the_wrappers_ends_the_asking() -> None:
    asked: list[str] = []

    def impostor(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, text="<html>sign in</html>")

    backend = aider.AiderBackend("http://wrapper")
    backend._client = httpx.AsyncClient(base_url="http://wrapper", transport=httpx.MockTransport(impostor))
    assert asyncio.run(backend.abandon("t1", 3)) is True  # nothing more to learn by asking it
    assert asked == ["/api/runs/t1-3/cancel", "/api/runs/t1-3-2/cancel"]
