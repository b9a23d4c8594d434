"""Fatal errors in aider's output. aider exits 0 even when every request to the LLM failed, so the
wrapper reads the error lines aider prints for litellm exceptions.

The patterns are anchored at the start of a line and name litellm's exception classes, the form
aider prints them in (`litellm.NotFoundError: NotFoundError: OpenAIException - File Not Found`),
so code the model writes about, say, connection errors does not match. The lines below were
seen from aider 0.86.2 against llama-server (see tests/aider_wrapper/test_errors.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class FatalError:
    error: str  # one line for the user
    transient: bool  # the LLM was unreachable/busy: a retry later may succeed


# aider's line when a reply ran into the model's output limit or the prompt filled the context
TOKEN_LIMIT = re.compile(r"^Model \S+ has hit a token limit!")
_LITELLM = r"^litellm\.(?P<kind>\w+):"

# (pattern, transient, what it means). The first rule that matches a line wins.
_RULES: list[tuple[re.Pattern[str], bool, str]] = [
    # llama-server says "request (N tokens) exceeds the available context size (M tokens)".
    (re.compile(_LITELLM + r".*(exceeds the available context|context window|context length|maximum context)", re.I), False,
     "the prompt does not fit the model's context window"),
    (re.compile(r"^litellm\.ContextWindowExceededError\b"), False, "the prompt does not fit the model's context window"),
    (TOKEN_LIMIT, False, "the model hit its token limit (context window or output limit)"),
    # Nothing listening: "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error."
    (re.compile(_LITELLM + r".*(Connection error|Connection refused|ConnectError|Connection reset)", re.I), True,
     "the LLM is not reachable"),
    (re.compile(r"^litellm\.(APIConnectionError|ServiceUnavailableError|BadGatewayError|InternalServerError|Timeout"
                r"|RateLimitError|APIError)\b"), True, "the LLM is unavailable or busy"),
    (re.compile(r"^litellm\.NotFoundError\b"), False, "the model or API endpoint was not found"),
    (re.compile(r"^litellm\.AuthenticationError\b"), False, "the LLM refused the API key"),
    (re.compile(r"^litellm\.\w+Error\b"), False, "the LLM rejected the request"),
]  # fmt: skip


def classify_line(line: str) -> FatalError | None:
    """The fatal error this output line reports, if any."""
    line = line.strip()
    if not line:
        return None
    for pattern, transient, meaning in _RULES:
        if pattern.search(line):
            shown = line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
            return FatalError(f"{meaning}: {shown}", transient)
    return None


def find_fatal(output: str) -> FatalError | None:
    """The first fatal error in aider's output, or None when the run went through."""
    for line in output.splitlines():
        found = classify_line(line)
        if found:
            return found
    return None
