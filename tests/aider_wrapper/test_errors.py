"""Fatal-error detection on lines aider 0.86.2 printed against llama-server (captured verbatim)."""

from __future__ import annotations

import pytest

from aistack.aider_wrapper.errors import MAX_ERROR_CHARS, classify_line, find_fatal

# Nothing listening on the API port (aider then retries for about a minute).
REFUSED = "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error."
# llama-server still loading its model.
LOADING = "litellm.ServiceUnavailableError: ServiceUnavailableError: OpenAIException - Loading model"
# Wrong API base path (llama-server answers any model name, so a wrong path is how a 404 looks).
NOT_FOUND = "litellm.NotFoundError: NotFoundError: OpenAIException - File Not Found"
# A prompt larger than the slot's context.
TOO_BIG = (
    "litellm.BadRequestError: OpenAIException - request (74813 tokens) exceeds the available context size (8192 tokens), try increasing it"
)
TIMEOUT = "litellm.Timeout: APITimeoutError - Request timed out. Error_str: Request timed out."
TOKEN_LIMIT = "Model openai/local-coder has hit a token limit!"


@pytest.mark.parametrize(
    ("line", "transient", "meaning"),
    [
        (REFUSED, True, "not reachable"),
        (LOADING, True, "unavailable or busy"),
        (TIMEOUT, True, "unavailable or busy"),
        (NOT_FOUND, False, "not found"),
        (TOO_BIG, False, "context window"),
        (TOKEN_LIMIT, False, "token limit"),
        ("litellm.AuthenticationError: AuthenticationError: OpenAIException - bad key", False, "API key"),
        ("litellm.UnsupportedParamsError: something else", False, "rejected"),
    ],
)
def test_each_signature_is_classified(line: str, transient: bool, meaning: str) -> None:
    found = classify_line(line)
    assert found is not None
    assert found.transient is transient
    assert meaning in found.error
    assert line in found.error  # the user sees what aider said
    assert "\n" not in found.error


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Tokens: 611 sent, 15 received.",
        "Applied edit to hello.py",
        # The model's own code about errors must not count: the patterns are anchored.
        "    except litellm.InternalServerError: # Connection error",
        "raise ConnectionError('Connection error.')",
        "print('litellm.NotFoundError: x')",
        "Your estimated chat context of 40,788 tokens exceeds the 6,144 token limit for openai/local-coder!",
    ],
)
def test_ordinary_lines_are_not_errors(line: str) -> None:
    assert classify_line(line) is None


def test_find_fatal_reads_a_whole_captured_output() -> None:
    output = "\n".join(
        [
            "Aider v0.86.2",
            "Model: openai/local-coder with whole edit format",
            "Added ../big.txt to the chat (read-only).",
            "",
            "Your estimated chat context of 40,788 tokens exceeds the 6,144 token limit for openai/local-coder!",
            "It's probably safe to try and send the request, most providers won't charge if the context limit is exceeded.",
            TOO_BIG,
            "",
        ]
    )
    found = find_fatal(output)
    assert found is not None and not found.transient
    assert "74813 tokens" in found.error
    assert find_fatal("Aider v0.86.2\nhello.py\n```\ndef hello():\n    return 'hello'\n```\nApplied edit to hello.py\n") is None


def test_a_long_line_is_cut_to_one_short_line() -> None:
    found = classify_line(REFUSED + " " + "x" * 2000)
    assert found is not None
    assert len(found.error) <= MAX_ERROR_CHARS + 40
    assert found.error.endswith("…")
