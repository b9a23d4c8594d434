"""The process mechanics of a run (timeout, cancel, early stop, group kill) on real processes.
A small shell script stands in for aider here; the service tests run the real one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aistack.aider_wrapper.runner import Ending, run_process, tokens_from_analytics, tokens_of_exhausted, tokens_spent
from aistack.contracts import TokenCounts
from support import alive, wait_until

# Prints, starts a grandchild in the same group, then waits for a long time.
TREE = "echo started; sleep 300 & echo $! > {pidfile}; sleep 300"


def ended_soon(pid: int, within: float = 10.0) -> bool:
    """A signal is delivered asynchronously: give the kernel a moment before calling it alive."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def run(script: str, tmp_path: Path, timeout: float, cancel_after: float | None = None):
    cancel = asyncio.Event()
    if cancel_after is not None:
        asyncio.get_running_loop().call_later(cancel_after, cancel.set)
    return await run_process(["sh", "-c", script], tmp_path, dict(os.environ), timeout, cancel)


def test_an_ordinary_exit_keeps_output_and_exit_code(tmp_path: Path) -> None:
    outcome = asyncio.run(run("echo hello; echo oops >&2; exit 3", tmp_path, timeout=30))
    assert outcome.ending is Ending.exited
    assert outcome.exit_code == 3
    assert "hello\n" in outcome.output and "oops\n" in outcome.output


def test_the_output_is_told_as_it_is_read_one_character_split_across_reads_included(tmp_path: Path) -> None:
    """The second line waits until the first was told: it can only have been told while the process ran."""
    told: list[str] = []
    gate = tmp_path / "go"

    def heard(text: str) -> None:
        told.append(text)
        gate.touch()

    script = f"printf 'caf\\303'; while [ ! -e {gate} ]; do sleep 0.02; done; printf '\\251 done\\n'"
    outcome = asyncio.run(run_process(["sh", "-c", script], tmp_path, dict(os.environ), 30, asyncio.Event(), on_output=heard))
    assert outcome.ending is Ending.exited and outcome.output == "café done\n"
    assert told == ["caf", "é done\n"]  # the half character waited for its other half


def test_timeout_ends_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    started = time.monotonic()
    outcome = asyncio.run(run(TREE.format(pidfile=pidfile), tmp_path, timeout=1))
    assert outcome.ending is Ending.timeout and outcome.exit_code is None
    assert time.monotonic() - started < 30  # ended long before its 300 s sleep (the grace period: bench)
    assert outcome.output.startswith("started")
    assert ended_soon(int(pidfile.read_text()))


def test_cancel_ends_the_whole_group_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    # A process that ignores SIGTERM needs the SIGKILL that follows.
    script = "trap '' TERM; " + TREE.format(pidfile=pidfile)
    started = time.monotonic()
    outcome = asyncio.run(run(script, tmp_path, timeout=60, cancel_after=0.5))
    assert outcome.ending is Ending.cancelled
    assert time.monotonic() - started < 30  # not its 60 s timeout
    assert ended_soon(int(pidfile.read_text()))


def test_a_transient_llm_error_stops_the_run_at_once(tmp_path: Path) -> None:
    script = "echo 'litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.'; sleep 300"
    started = time.monotonic()
    outcome = asyncio.run(run(script, tmp_path, timeout=60))
    assert outcome.ending is Ending.fatal
    assert outcome.fatal is not None and outcome.fatal.transient
    assert time.monotonic() - started < 30  # not its 60 s timeout, nor the 300 s sleep


def test_helpers_left_behind_by_a_finished_run_are_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan"
    outcome = asyncio.run(run(f"sleep 300 & echo $! > {pidfile}; exit 0", tmp_path, timeout=30))
    assert outcome.ending is Ending.exited and outcome.exit_code == 0
    assert ended_soon(int(pidfile.read_text()))


def test_aider_dies_with_the_wrapper(tmp_path: Path) -> None:
    pidfile, watched = tmp_path / "aider.pid", tmp_path / "watched"
    script = WRAPPER.format(script=f"echo $$ > {pidfile}; exec sleep 300", cwd=str(tmp_path), watched=str(watched))
    wrapper = subprocess.Popen([sys.executable, "-c", script])
    try:
        # the group is watched once its start returned, which may be after aider wrote its pid
        assert wait_until(lambda: watched.exists() and pidfile.exists() and pidfile.read_text().strip(), 30)
        aider = int(pidfile.read_text())
        wrapper.kill()  # SIGKILL: nothing of the wrapper's own runs any more
        wrapper.wait()
        assert ended_soon(aider), "aider outlived the wrapper"
    finally:
        wrapper.kill()
        wrapper.wait()
        if pidfile.exists() and alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


# A wrapper in miniature: a process that runs one "aider" through run_process.
WRAPPER = """
import asyncio, os
from pathlib import Path
from aistack.aider_wrapper.runner import run_process
from aistack.procgroup import WARDEN

def told(pgid, watch=WARDEN.watch):  # says when the warden has been told of the group
    watch(pgid)
    Path({watched!r}).touch()

WARDEN.watch = told
asyncio.run(run_process(["sh", "-c", {script!r}], Path({cwd!r}), dict(os.environ), 300, asyncio.Event()))
"""


def test_non_utf8_output_is_kept_readable(tmp_path: Path) -> None:
    outcome = asyncio.run(run(f"{sys.executable} -c \"import sys; sys.stdout.buffer.write(b'ok \\xff\\n')\"", tmp_path, 30))
    assert outcome.output == "ok \ufffd\n"


def test_tokens_are_summed_over_every_request(tmp_path: Path) -> None:
    log = tmp_path / "analytics.jsonl"
    log.write_text(
        '{"event": "launched", "properties": {}}\n'
        '{"event": "message_send", "properties": {"prompt_tokens": 611, "completion_tokens": 15}}\n'
        "not json\n"
        '{"event": "message_send", "properties": {"prompt_tokens": 700, "completion_tokens": 40}}\n'
    )
    tokens = tokens_from_analytics(log)
    assert (tokens.prompt, tokens.completion) == (1311, 55)
    assert tokens_from_analytics(tmp_path / "missing").prompt == 0


# What aider 0.86.2 prints when a reply runs into the output limit (show_exhausted_error)
EXHAUSTED = """
Model openai/local-coder has hit a token limit!
Token counts below are approximate.

Input tokens: ~1,905 of 6,144
Output tokens: ~2,051 of 2,048 -- possibly exceeded output limit!
Total tokens: ~3,956 of 6,144
"""


def test_a_request_that_hit_the_limit_counts_aiders_estimate(tmp_path: Path) -> None:
    assert tokens_of_exhausted(EXHAUSTED) == TokenCounts(prompt=1905, completion=2051)
    assert tokens_of_exhausted(EXHAUSTED * 2).completion == 4102  # one estimate per request that hit it
    assert tokens_of_exhausted("print('Input tokens: ~5 of 9')\nOutput tokens: ~7 of 9\n") == TokenCounts()  # not after the limit line
    log = tmp_path / "analytics.jsonl"
    log.write_text('{"event": "message_send", "properties": {"prompt_tokens": 611, "completion_tokens": 15}}\n')
    assert tokens_spent(log, "Applied edit to a.py\n" + EXHAUSTED) == TokenCounts(prompt=611 + 1905, completion=15 + 2051)
