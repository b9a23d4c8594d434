"""One aider process: started in its own session (process group), its output read as it comes,
ended as a whole group on timeout, cancel, or a fatal LLM error it would otherwise retry for a
minute. Nothing here blocks the event loop."""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from aistack.aider_wrapper.errors import TOKEN_LIMIT, FatalError, classify_line
from aistack.contracts import TokenCounts
from aistack.procgroup import end_group, kill_group, start_in_group
from aistack.sandbox import Jail

MAX_OUTPUT_CHARS = 1_000_000  # beyond this the start of the output is dropped
TIMEOUT_GRACE_SECONDS = 3.0  # SIGTERM, then SIGKILL after this long
CANCEL_GRACE_SECONDS = 1.0  # a cancel must end the group within 2 s


class Ending(str, Enum):
    exited = "exited"  # aider ended by itself
    timeout = "timeout"
    cancelled = "cancelled"
    fatal = "fatal"  # a transient LLM error: stopped rather than let aider retry for a minute


@dataclass
class ProcessOutcome:
    output: str
    exit_code: int | None  # None when we ended it
    ending: Ending
    fatal: FatalError | None = None  # what ended it early (Ending.fatal)


class OutputBuffer:
    """aider's merged stdout/stderr, decoded as it arrives; calls `on_line` for each full line."""

    def __init__(self, on_line, on_text: Callable[[str], None] | None = None) -> None:
        self._on_text = on_text  # told each piece of text as it is decoded (the run's live output)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._size = 0
        self._partial = ""
        self._on_line = on_line
        self.trimmed = False

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        if not text:
            return
        if self._on_text is not None:
            self._on_text(text)
        self._parts.append(text)
        self._size += len(text)
        if self._size > 2 * MAX_OUTPUT_CHARS:
            joined = "".join(self._parts)[-MAX_OUTPUT_CHARS:]
            self._parts, self._size, self.trimmed = [joined], len(joined), True
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._on_line(line)
        if final and self._partial:
            self._on_line(self._partial)

    def text(self) -> str:
        joined = "".join(self._parts)
        if self.trimmed or len(joined) > MAX_OUTPUT_CHARS:
            return "[… start of output dropped …]\n" + joined[-MAX_OUTPUT_CHARS:]
        return joined


async def run_process(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float, cancel: asyncio.Event, jail: Jail | None = None,
    on_output: Callable[[str], None] | None = None,
) -> ProcessOutcome:  # fmt: skip
    """Run `cmd` (in `jail` when given) to its end, or until `timeout` seconds pass, `cancel` is
    set, or it prints a transient LLM error; in the last three cases its whole process group is
    ended. `on_output` is told its output as it is read."""
    stop_fatal: list[FatalError] = []
    fatal_seen = asyncio.Event()

    def on_line(line: str) -> None:
        found = classify_line(line)
        if found and found.transient and not stop_fatal:
            stop_fatal.append(found)
            fatal_seen.set()

    buffer = OutputBuffer(on_line, on_output)
    # dies_with_parent: a wrapper killed mid-run (kill -9, OOM) takes aider along, instead of leaving
    # it to write into the worktree while the orchestrator retries the iteration with a new one
    proc = await start_in_group(
        *(jail.argv(cmd) if jail else cmd), cwd=cwd, env=env, dies_with_parent=True,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    reader = asyncio.create_task(_pump(proc.stdout, buffer))
    waits = {
        asyncio.create_task(proc.exited()): Ending.exited,
        asyncio.create_task(cancel.wait()): Ending.cancelled,
        asyncio.create_task(fatal_seen.wait()): Ending.fatal,
    }
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        # If aider exited in the same moment as something else happened, its own end counts.
        endings = {waits[task] for task in done}
        ending = Ending.exited if Ending.exited in endings else (min(endings, key=_priority) if endings else Ending.timeout)
        if ending is not Ending.exited:
            grace = CANCEL_GRACE_SECONDS if ending is Ending.cancelled else TIMEOUT_GRACE_SECONDS
            await end_group(proc, grace)
    finally:
        for task in waits:
            task.cancel()
        if proc.returncode is None:  # we were cancelled ourselves (shutdown): take aider along
            await end_group(proc, CANCEL_GRACE_SECONDS)
        kill_group(proc.pid, signal.SIGKILL)  # helpers aider started must not outlive it
        try:
            async with asyncio.timeout(5):
                await reader
        except (TimeoutError, asyncio.CancelledError):
            reader.cancel()
    return ProcessOutcome(
        output=buffer.text(),
        exit_code=proc.returncode if ending is Ending.exited else None,
        ending=ending,
        fatal=stop_fatal[0] if ending is Ending.fatal else None,
    )


def _priority(ending: Ending) -> int:
    return [Ending.cancelled, Ending.fatal, Ending.timeout].index(ending)


async def _pump(stream: asyncio.StreamReader | None, buffer: OutputBuffer) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        buffer.feed(chunk)
    buffer.feed(b"", final=True)


def tokens_from_analytics(path: Path) -> TokenCounts:
    """Token usage of every LLM request of the run, as llama-server reported it to aider.
    aider logs one `message_send` event per request into its analytics log (a local file; the
    network analytics are disabled). Replies are not streamed, so these are the server's counts."""
    prompt = completion = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return TokenCounts()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "message_send":
            props = event.get("properties") or {}
            prompt += _int(props.get("prompt_tokens"))
            completion += _int(props.get("completion_tokens"))
    return TokenCounts(prompt=prompt, completion=completion)


_APPROXIMATE = re.compile(r"^(Input|Output) tokens: ~([\d,]+) of")


def tokens_of_exhausted(output: str) -> TokenCounts:
    """Token usage of the requests that hit the model's token limit. aider logs no `message_send`
    for those, only its own estimate under the "has hit a token limit!" line, and the longest
    runs are the ones that end so: counted as nothing, they would be the cheapest."""
    counts = {"Input": 0, "Output": 0}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if TOKEN_LIMIT.match(line.strip()):
            for follow in lines[i + 1 : i + 6]:  # "Token counts below are approximate.", a blank, then the counts
                if found := _APPROXIMATE.match(follow.strip()):
                    counts[found[1]] += int(found[2].replace(",", ""))
    return TokenCounts(prompt=counts["Input"], completion=counts["Output"])


def tokens_spent(analytics: Path, output: str) -> TokenCounts:
    """Every request's tokens: the logged ones and the estimates of those that hit the limit."""
    logged, exhausted = tokens_from_analytics(analytics), tokens_of_exhausted(output)
    return TokenCounts(prompt=logged.prompt + exhausted.prompt, completion=logged.completion + exhausted.completion)


def _int(value: object) -> int:
    """A token count as aider logged it (a number, or a string of one); 0 for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        return 0
