"""The loop's decisions, as pure functions of plain data: no I/O, no clock, no randomness.

`loop.py` gathers the facts (what the agent said, what git saw, what the check returned) and
asks these functions what they mean. Keeping them here lets every branch be tested with a table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from aistack.contracts import Complexity, Evidence, TaskStatus

EXCERPT_CHARS = 4000

# --- iteration limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    simple: int
    default: int
    complex: int
    adaptive: bool
    cap: int


@dataclass(frozen=True)
class LimitChoice:
    max_iterations: int
    source: str  # "request", "adaptive" or "default"
    complexity: Complexity | None
    reason: str


_COMPLEX_WORDS = re.compile(
    r"\b(refactor\w*|architect\w*|migrat\w*|redesign\w*|rewrite|overhaul|framework|end[- ]to[- ]end|"
    r"across (?:the|all|multiple)|multiple (?:files|modules|services)|entire|whole (?:code ?base|project)|"
    r"concurren\w*|distributed|database schema|authentication|integrat\w+)\b",
    re.IGNORECASE,
)
_SIMPLE_WORDS = re.compile(
    r"\b(typo|rename|comment|docstring|print|hello|return(?:s)? ['\"]|one[- ]line|a function|add a test|"
    r"bump|format|lint)\b",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)


def classify(prompt: str) -> tuple[Complexity, str]:
    """Guess how much work a prompt asks for, from its length, structure and wording."""
    words = len(prompt.split())
    items = len(_LIST_ITEM.findall(prompt))
    complex_hit = _COMPLEX_WORDS.search(prompt)
    if complex_hit:
        return Complexity.complex, f"mentions {complex_hit.group(0).lower()!r}"
    if words > 150:
        return Complexity.complex, f"long prompt ({words} words)"
    if items >= 5:
        return Complexity.complex, f"{items} listed requirements"
    simple_hit = _SIMPLE_WORDS.search(prompt)
    if words <= 40 and items <= 1:
        why = f"mentions {simple_hit.group(0).lower()!r}" if simple_hit else "short prompt"
        return Complexity.simple, f"{why} ({words} words)"
    return Complexity.default, f"{words} words, {items} listed requirements"


def choose_limit(requested: int | None, prompt: str, limits: Limits) -> LimitChoice:
    """The task's iteration limit: what the request asked for, else adaptive, else the default."""
    if requested is not None:
        return LimitChoice(requested, "request", None, "given in the request")
    if not limits.adaptive:
        return LimitChoice(min(limits.default, limits.cap), "default", None, "adaptive limits are off")
    complexity, reason = classify(prompt)
    chosen = {Complexity.simple: limits.simple, Complexity.default: limits.default, Complexity.complex: limits.complex}
    return LimitChoice(min(chosen[complexity], limits.cap), "adaptive", complexity, reason)


def limit_error(requested: int | None, cap: int) -> str | None:
    if requested is not None and not 1 <= requested <= cap:
        return f"max_iterations must be between 1 and {cap} (RALPH_MAX_ITERATIONS_CAP), got {requested}"
    return None


# --- completion evidence ---------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_PROMISE = re.compile(r"<promise>(.*)</promise>", re.DOTALL)


def _norm(text: str) -> str:
    return " ".join(text.split())


def promise_line(output: str, promise: str) -> str | None:
    """The reply's last non-empty line if it is exactly `<promise>PROMISE</promise>`
    (whitespace-normalised), else None. A promise quoted anywhere else does not count."""
    lines = [line for line in _ANSI.sub("", output).splitlines() if line.strip()]
    if not lines:
        return None
    match = _PROMISE.fullmatch(lines[-1].strip())
    if match is None or _norm(match.group(1)) != _norm(promise):
        return None
    return f"<promise>{_norm(promise)}</promise>"


@dataclass(frozen=True)
class IterationFacts:
    """What one finished iteration produced, as seen by the loop."""

    number: int
    succeeded: bool
    output: str
    files_modified: tuple[str, ...] = ()
    diff_stat: str | None = None
    check_exit_code: int | None = None
    check_output: str | None = None


def evidence_for(facts: IterationFacts, check_command: str | None, completion_promise: str | None) -> Evidence | None:
    """Evidence that the task is done after this iteration, or None.

    Every configured rule must hold (a check command and a promise both given → both needed);
    with neither configured, a successful iteration that changed files is the evidence."""
    promise = promise_line(facts.output, completion_promise) if completion_promise else None
    if completion_promise and promise is None:
        return None
    if check_command:
        if facts.check_exit_code != 0:
            return None
        return Evidence(
            rule="check_command",
            iteration=facts.number,
            detail=f"check command exited 0 after iteration {facts.number}",
            check_exit_code=0,
            check_output=facts.check_output,
            promise_line=promise,
            diff_stat=facts.diff_stat,
            files_modified=list(facts.files_modified),
        )
    if completion_promise:
        return Evidence(
            rule="completion_promise",
            iteration=facts.number,
            detail=f"the reply of iteration {facts.number} ended with the promise",
            promise_line=promise,
            diff_stat=facts.diff_stat,
            files_modified=list(facts.files_modified),
        )
    if facts.succeeded and facts.files_modified:
        return Evidence(
            rule="diff",
            iteration=facts.number,
            detail=f"iteration {facts.number} succeeded and changed {len(facts.files_modified)} file(s)",
            diff_stat=facts.diff_stat,
            files_modified=list(facts.files_modified),
        )
    return None


# --- what happens next ---------------------------------------------------------------------------


def output_fingerprint(output: str) -> str:
    """Same reply modulo whitespace, colour codes and numbers (timings, token counts)."""
    text = re.sub(r"\d+(?:\.\d+)?", "#", _norm(_ANSI.sub("", output)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_stuck(recent: list[IterationFacts], threshold: int) -> bool:
    """`threshold` consecutive iterations (the newest last) without a file change and with the same reply."""
    if threshold <= 0 or len(recent) < threshold:
        return False
    window = recent[-threshold:]
    if any(f.files_modified for f in window):
        return False
    return len({output_fingerprint(f.output) for f in window}) == 1


@dataclass(frozen=True)
class Decision:
    status: TaskStatus
    reason: str | None = None


def after_iteration(
    facts: IterationFacts,
    evidence: Evidence | None,
    recent: list[IterationFacts],
    max_iterations: int,
    stuck_threshold: int,
    require_approval: bool,
) -> Decision:
    """The task's status once iteration `facts.number` is recorded. `recent` ends with `facts`."""
    if evidence is not None:
        return Decision(TaskStatus.completed, evidence.rule)
    if is_stuck(recent, stuck_threshold):
        return Decision(TaskStatus.failed, "stuck")
    if facts.number >= max_iterations:
        return Decision(TaskStatus.exhausted, "max_iterations")
    return Decision(TaskStatus.awaiting_approval if require_approval else TaskStatus.running)


def needs_approval(require_approval: bool, next_iteration: int, approved_through: int) -> bool:
    """Approval gates every iteration, the first included: iteration n runs only once approved."""
    return require_approval and approved_through < next_iteration


# --- transient failures -----------------------------------------------------------------------------


def retry_delay(attempt: int, elapsed: float, budget: float) -> float | None:
    """Seconds to wait before retry `attempt` (1-based) of a transient failure, or None when
    the retry budget is spent. Exponential backoff 1, 2, 4 … capped at 10 s and at the budget."""
    remaining = budget - elapsed
    if remaining <= 0:
        return None
    return min(2.0 ** (attempt - 1), 10.0, remaining)


# --- prompt ------------------------------------------------------------------------------------------


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    """The end of a long text (where errors and test summaries are), marked as cut."""
    if not text:
        return ""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def compose_prompt(prompt: str, check_command: str | None, last: IterationFacts | None) -> str:
    """The unchanged task prompt, followed by the last failed check's output when there is one.
    The prompt comes first and never changes, so the LLM server's prefix cache can reuse it."""
    if not check_command or last is None or last.check_exit_code in (None, 0):
        return prompt
    return (
        f"{prompt}\n\n"
        f"The check `{check_command}` failed after the previous attempt (exit code {last.check_exit_code}). "
        f"Its output:\n```\n{excerpt(last.check_output, 2000)}\n```\nFix the cause and finish the task."
    )
