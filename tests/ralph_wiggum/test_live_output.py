"""The agent's output while the iteration runs: `output` events from a real orchestrator process
and a real `command` agent, read from the real event stream and by `aistack task logs -f`; the
caps that bound them (pure, and for a real flood)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aistack.ralph_wiggum.output import EVENT_CHARS, ITERATION_CHARS, OutputChunks, OutputStream
from aistack.ralph_wiggum.runner import OUTPUT_KEEP
from support import AISTACK, StackEnv, child_env, make_git_repo

# Says one line, then waits until the test puts `go` into its worktree: whatever the test sees
# before that was streamed while the iteration ran.
GATED = """#!/bin/sh
echo "first line"
while [ ! -e go ]; do sleep 0.05; done
printf 'second line\\nand a third'
"""
FLOOD = "#!/bin/sh\nyes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 50000000\n"


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    """A real orchestrator whose `command` agent is `script`; an HTTP client of it."""
    clients: list[httpx.Client] = []

    def start(script: str) -> httpx.Client:
        agent = stack_env.root / "agent.sh"
        agent.write_text(script)
        agent.chmod(0o755)
        stack_env.set(RALPH_COMMAND_BACKEND=agent)
        clients.append(httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=30))
        make_git_repo(stack_env.workspace_root / "repo")
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def submit(client: httpx.Client) -> str:
    body = {"prompt": "talk", "backend": "command", "workspace": "repo", "max_iterations": 1}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["task_id"]


def events(client: httpx.Client, task_id: str):
    """The task's server-sent events as (type, data) until the stream ends."""
    with client.stream("GET", f"/tasks/{task_id}/events", timeout=httpx.Timeout(30, read=60)) as resp:
        kind = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind:
                yield kind, json.loads(line[5:])
                kind = None


def let_go(client: httpx.Client, task_id: str) -> datetime:
    """Let the gated agent finish; the time just before."""
    before = datetime.now(UTC)
    (Path(client.get(f"/tasks/{task_id}").json()["worktree"]) / "go").write_text("")
    return before


def test_output_streams_while_the_iteration_runs_in_order_stamped_when_read(ralph):
    client = ralph(GATED)
    task_id = submit(client)
    seen: list[dict] = []
    released = None
    for kind, event in events(client, task_id):
        if kind == "output":
            seen.append(event["data"])
            if released is None:  # the agent waits for us: its iteration cannot have ended
                assert event["data"]["text"] == "first line\n"
                assert client.get(f"/tasks/{task_id}/iterations").json() == []
                released = let_go(client, task_id)
        if kind == "iteration_finished":
            break
    assert released is not None
    iteration = client.get(f"/tasks/{task_id}/iterations").json()[0]
    assert "".join(d["text"] for d in seen) == iteration["output_excerpt"] == "first line\nsecond line\nand a third"
    assert all(d["iteration"] == 1 and "truncated" not in d for d in seen)
    read = [datetime.fromisoformat(d["at"]) for d in seen]
    assert read == sorted(read) and read[0] < released <= read[-1]  # when read, not when stored or sent


def test_a_flood_streams_within_the_caps_and_the_iteration_keeps_its_end(ralph):
    client = ralph(FLOOD)
    task_id = submit(client)
    output = [event["data"] for kind, event in events(client, task_id) if kind == "output"]
    texts, notice = output[:-1], output[-1]
    assert notice["truncated"] is True and "not streamed" in notice["text"]
    assert all(len(d["text"]) <= EVENT_CHARS and "truncated" not in d for d in texts)
    streamed = "".join(d["text"] for d in texts)
    whole = ("0123456789abcdefghijklmnopqrstuvwxyz\n" * (50_000_000 // 37 + 1))[:50_000_000]
    assert streamed == whole[:ITERATION_CHARS]
    assert len(output) <= ITERATION_CHARS // EVENT_CHARS + 1  # coalesced: no event per read
    iteration = client.get(f"/tasks/{task_id}/iterations").json()[0]
    # it changed no file: no progress, whatever it said
    assert iteration["status"] == "no_progress" and whole.endswith(iteration["output_excerpt"])
    assert len(iteration["output_excerpt"]) == OUTPUT_KEEP


def test_logs_follow_prints_the_output_before_the_task_ends(ralph, stack_env):
    client = ralph(GATED)
    task_id = submit(client)
    follow = subprocess.Popen(
        [*AISTACK, "task", "logs", task_id, "-f"], env=child_env(stack_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert follow.stdout is not None
        head = [follow.stdout.readline()]
        while "│" not in head[-1] and head[-1]:  # first the task's status and the iteration's start
            head.append(follow.stdout.readline())
        assert head[-1].rstrip().endswith("│ first line") and any("iteration 1 of 1 started" in line for line in head)
        assert client.get(f"/tasks/{task_id}").json()["status"] == "running"  # the agent still waits for `go`
        let_go(client, task_id)
        rest = follow.stdout.read()
        assert follow.wait(30) == 0
    finally:
        follow.kill()
    assert "│ second line\n" in rest and "│ and a third\n" in rest
    assert "iteration 1: success — go" in rest and "result: completed after 1 iteration(s)" in rest  # `go` is its diff


# --- the caps, in process ----------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_pieces_coalesce_into_one_event_stamped_with_its_first_read():
    chunks = OutputChunks(3)
    chunks.add("a\n", at(0))
    chunks.add("b", at(0.1))
    chunks.add("", at(0.2))
    assert chunks.take() == [{"iteration": 3, "at": at(0).isoformat(), "text": "a\nb"}]
    assert chunks.take() == [] and not chunks.pending


def test_an_event_holds_at_most_event_chars_and_the_rest_keeps_its_read_time():
    chunks = OutputChunks(1, event_chars=4, iteration_chars=100)
    chunks.add("abc", at(0))
    chunks.add("defgh", at(1))
    assert chunks.take() == [{"iteration": 1, "at": at(0).isoformat(), "text": "abcd"}]  # one event per window
    assert chunks.take(everything=True) == [{"iteration": 1, "at": at(1).isoformat(), "text": "efgh"}]


def test_past_the_iteration_cap_nothing_streams_and_the_notice_comes_once_last():
    chunks = OutputChunks(2, event_chars=4, iteration_chars=6)
    chunks.add("abcd", at(0))
    chunks.add("efgh", at(1))
    chunks.add("ijkl", at(2))
    assert [e["text"] for e in chunks.take()] == ["abcd"]
    last = chunks.take()
    assert [e["text"] for e in last][0] == "ef" and last[-1]["truncated"] is True and last[-1]["at"] == at(1).isoformat()
    assert chunks.take(everything=True) == [] and not chunks.pending


def test_the_stream_writes_what_is_pending_at_a_normal_end_and_nothing_when_quiet_or_stopped():
    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        written: list[dict] = []

        async def emit(data: dict) -> None:
            written.append(data)

        async with OutputStream(emit, 1) as quiet:
            quiet.feed("")
        async with OutputStream(emit, 2) as talking:
            talking.feed("a\n", at(0))
            talking.feed("b\n", at(1))
        ended, written = written, []
        with pytest.raises(asyncio.CancelledError):
            async with OutputStream(emit, 3) as stopped:
                stopped.feed("lost")
                raise asyncio.CancelledError
        dropped, written = written, []

        async def broken(data: dict) -> None:
            raise OSError("disk full")

        async with OutputStream(broken, 4) as failing:  # the iteration goes on
            failing.feed("x")
        return ended, dropped, written

    ended, dropped, failed = asyncio.run(scenario())
    assert ended == [{"iteration": 2, "at": at(0).isoformat(), "text": "a\nb\n"}]
    assert dropped == [] and failed == []
