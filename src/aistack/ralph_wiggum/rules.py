"""The loop's decisions, as pure functions of plain data: no I/O, no clock, no randomness.

The task's life is one state machine (`TRANSITIONS`: status × action → status). The runner
gathers an iteration's facts (what the agent said, what git saw, what the check returned) and
`outcome()` turns them into everything to store; the task service asks `transition()` whether a
person's stop, approval or rejection applies. Keeping them here lets every branch be tested with
a table.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from aistack.contracts import Complexity, Evidence, IterationLimits, Sampling, Strategy, TaskStatus
from aistack.ralph_wiggum import testreport
from aistack.ralph_wiggum.records import Event, IterationRecord, TaskRecord, TaskUpdate

# --- the state machine ---------------------------------------------------------------------------


class Action(str, Enum):
    """What can happen to a task."""

    start = "start"  # a worker takes it up (again)
    ask_approval = "ask_approval"  # the next iteration needs a person's yes
    approve = "approve"
    reject = "reject"
    stop = "stop"  # a person stops it
    proceed = "proceed"  # an iteration ended without settling anything: the next one runs
    complete = "complete"  # an iteration brought evidence
    exhaust = "exhaust"  # the iteration limit is reached without evidence
    fail = "fail"  # stuck, or an error the task cannot go on after


_OPEN = [status for status in TaskStatus if not status.terminal]
TRANSITIONS: dict[tuple[TaskStatus, Action], TaskStatus] = {
    (TaskStatus.queued, Action.start): TaskStatus.running,
    (TaskStatus.running, Action.start): TaskStatus.running,  # taken up again (after a restart or an approval)
    (TaskStatus.running, Action.ask_approval): TaskStatus.awaiting_approval,  # before each iteration that needs it
    (TaskStatus.awaiting_approval, Action.approve): TaskStatus.running,
    (TaskStatus.awaiting_approval, Action.reject): TaskStatus.rejected,
    (TaskStatus.running, Action.proceed): TaskStatus.running,
    (TaskStatus.running, Action.complete): TaskStatus.completed,
    (TaskStatus.running, Action.exhaust): TaskStatus.exhausted,
    **{(status, Action.stop): TaskStatus.stopped for status in _OPEN},
    **{(status, Action.fail): TaskStatus.failed for status in _OPEN},
}


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[TaskStatus]  # the statuses it applies in (the store's compare-and-set)
    target: TaskStatus


@functools.cache
def transition(action: Action) -> Transition:
    """The statuses `action` applies in, and the one status it leads to."""
    pairs = [(source, to) for (source, act), to in TRANSITIONS.items() if act is action]
    targets = {to for _, to in pairs}
    if len(targets) != 1:  # the table must keep this: a compare-and-set has one target
        raise ValueError(f"{action.value} leads to {sorted(t.value for t in targets)}")
    return Transition(action, frozenset(source for source, _ in pairs), targets.pop())


class Reason(str, Enum):
    """Why a task ended (stored as `completion_reason`)."""

    check_command = "check_command"  # evidence rules first: a task completed by them
    completion_promise = "completion_promise"
    diff = "diff"
    max_iterations = "max_iterations"
    stuck = "stuck"
    stopped = "stopped by user"
    rejected = "rejected by user"
    error = "error"


EXCERPT_CHARS = 4000

# --- iteration limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitChoice:
    max_iterations: int
    source: str  # "request", "backend", "learned", "adaptive" or "default"
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
LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)


def classify(prompt: str) -> tuple[Complexity, str]:
    """Guess how much work a prompt asks for, from its length, structure and wording."""
    words = len(prompt.split())
    items = len(LIST_ITEM.findall(prompt))
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


def choose_limit(
    requested: int | None, prompt: str, limits: IterationLimits, backend_limit: int | None = None, learned: LimitChoice | None = None
) -> LimitChoice:
    """The task's iteration limit: what the request asked for, else its backend's
    (RALPH_BACKEND_MAX_ITERATIONS), else adaptive: `learned` from past tasks like it where there is
    one (`learned_limit`), else the prompt's class; else the default."""
    cap = limits.ralph_max_iterations_cap
    if requested is not None:
        return LimitChoice(requested, "request", None, "given in the request")
    if backend_limit is not None:
        return LimitChoice(min(backend_limit, cap), "backend", None, "RALPH_BACKEND_MAX_ITERATIONS")
    if not limits.ralph_adaptive_iterations:
        return LimitChoice(min(limits.ralph_max_iterations_default, cap), "default", None, "adaptive limits are off")
    if learned is not None:
        return replace(learned, max_iterations=min(learned.max_iterations, cap))
    complexity, reason = classify(prompt)
    chosen = {
        Complexity.simple: limits.ralph_max_iterations_simple,
        Complexity.default: limits.ralph_max_iterations_default,
        Complexity.complex: limits.ralph_max_iterations_complex,
    }
    return LimitChoice(min(chosen[complexity], cap), "adaptive", complexity, reason)


@dataclass(frozen=True)
class PastTask:
    """A finished task as the learned limits see it: its prompt's class, how it ran, and what it took."""

    complexity: str
    backend: str
    strategy: str  # `strategy_key` of the strategy it ran with
    iterations: int
    solved: bool


@dataclass(frozen=True)
class History:
    """The finished tasks the learned limits read, and how much of them a limit needs."""

    past: Sequence[PastTask] = ()
    after: int = 0  # RALPH_LEARNED_LIMITS_AFTER: finished tasks before any limit is learned; 0: never
    min_evidence: int = 10  # RALPH_LEARN_MIN_OUTCOMES: tasks that ran on past a limit, none rescued


def strategy_key(strategy: Strategy) -> str:
    """A strategy's settings as one comparable text: tasks are alike only if they ran alike."""
    return json.dumps(strategy.model_dump(), sort_keys=True)


MIN_SOLVED = 3  # solved tasks a limit is read from, at the least


@dataclass(frozen=True)
class Enough:
    """The iterations a set of past tasks shows are enough, and what shows it."""

    iterations: int  # the most any solved task needed
    solved: int
    ran_on: int  # tasks still failing there that ran on, none of them rescued


def enough_iterations(tasks: Sequence[PastTask], min_evidence: int) -> Enough | None:
    """The most iterations any solved task needed, where at least `min_evidence` others were still
    failing there and ran on without one rescue. None while the tasks cannot show it: a limit read
    from fewer cuts the late rescues a small sample had no room to show (a restart that succeeds at
    iteration 3), and a limit is only worth lowering where many tasks ran on for nothing."""
    solved = [t.iterations for t in tasks if t.solved]
    if len(solved) < MIN_SOLVED:
        return None
    most = max(solved)
    ran_on = sum(1 for t in tasks if not t.solved and t.iterations > most)
    return Enough(most, len(solved), ran_on) if ran_on >= min_evidence else None


def learned_limit(prompt: str, backend: str, strategy: Strategy, history: History) -> LimitChoice | None:
    """One above the iterations past tasks like this one show are enough (`enough_iterations`): those
    of the prompt's class, run on the same backend with the same strategy, since each of these
    changes how many iterations a success takes. One above, because nobody approves this limit: a
    success one iteration later can still show itself, so the limit can grow again. None before
    `history.after` tasks have finished, or while they cannot show it: the prompt's class decides."""
    if not history.after or len(history.past) < history.after:
        return None
    complexity, _ = classify(prompt)
    key = (complexity.value, backend, strategy_key(strategy))
    alike = [t for t in history.past if (t.complexity, t.backend, t.strategy) == key]
    enough = enough_iterations(alike, history.min_evidence)
    if enough is None:
        return None
    why = (f"{len(alike)} past {complexity.value} tasks on {backend} with this strategy: {enough.solved} solved, in at most "
           f"{enough.iterations} iterations; {enough.ran_on} still failing there ran on, none rescued")  # fmt: skip
    return LimitChoice(enough.iterations + 1, "learned", complexity, why)


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


def evidence_for(it: IterationRecord, check_command: str | None, completion_promise: str | None) -> Evidence | None:
    """Evidence that the task is done after this iteration, or None.

    Every configured rule must hold (a check command and a promise both given → both needed);
    with neither configured, a successful iteration that changed files is the evidence."""
    promise = promise_line(it.output, completion_promise) if completion_promise else None
    if completion_promise and promise is None:
        return None
    if check_command:
        if it.check_exit_code != 0:
            return None
        return Evidence(
            rule="check_command",
            iteration=it.number,
            detail=f"check command exited 0 after iteration {it.number}",
            check_exit_code=0,
            check_output=it.check_output,
            promise_line=promise,
            diff_stat=it.diff_stat,
            files_modified=list(it.files_modified),
        )
    if completion_promise:
        return Evidence(
            rule="completion_promise",
            iteration=it.number,
            detail=f"the reply of iteration {it.number} ended with the promise",
            promise_line=promise,
            diff_stat=it.diff_stat,
            files_modified=list(it.files_modified),
        )
    if it.succeeded and it.files_modified:
        return Evidence(
            rule="diff",
            iteration=it.number,
            detail=f"iteration {it.number} succeeded and changed {len(it.files_modified)} file(s)",
            diff_stat=it.diff_stat,
            files_modified=list(it.files_modified),
        )
    return None


# --- what happens next ---------------------------------------------------------------------------


def output_fingerprint(output: str) -> str:
    """Same reply modulo whitespace, colour codes and numbers (timings, token counts)."""
    text = re.sub(r"\d+(?:\.\d+)?", "#", _norm(_ANSI.sub("", output)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


NO_PROGRESS = "no_progress"  # an iteration's status: the agent's run succeeded, but got nowhere


def check_score(it: IterationRecord) -> testreport.Score:
    return testreport.score(it.check_exit_code, it.check_output)


def no_progress(it: IterationRecord, previous: IterationRecord | None, check_command: str | None) -> str | None:
    """Why a run that succeeded made no progress, or None: it changed no file, or (with a check)
    it replied what the previous one did and the check got no further. A passing check is progress."""
    if not it.succeeded or (check_command and it.check_exit_code == 0):
        return None
    if not it.files_modified:
        return "changed only protected files, and that was undone" if it.protected_undone else "changed no file"
    if check_command and previous is not None and output_fingerprint(it.output) == output_fingerprint(previous.output):
        if not testreport.is_worse(check_score(previous), check_score(it)):
            return "repeated the previous reply, and the check got no further"
    return None


def with_progress(it: IterationRecord, previous: IterationRecord | None, check_command: str | None) -> IterationRecord:
    """The iteration as it is recorded: `no_progress`, and why, where its run got nowhere."""
    why = no_progress(it, previous, check_command)
    return replace(it, status=NO_PROGRESS, error=f"no progress: {why}") if why else it


def is_stuck(recent: Sequence[IterationRecord], threshold: int) -> bool:
    """`threshold` consecutive iterations (the newest last) without a file change and with the same
    reply. Iterations that change files are never stuck, even when recorded as no_progress: they
    may be legitimate work whose check has not moved yet."""
    if threshold <= 0 or len(recent) < threshold:
        return False
    window = recent[-threshold:]
    if any(f.files_modified for f in window):
        return False
    return len({output_fingerprint(f.output) for f in window}) == 1


@dataclass(frozen=True)
class Decision:
    status: TaskStatus
    reason: Reason | None = None

    @property
    def action(self) -> Action:
        return {
            TaskStatus.completed: Action.complete,
            TaskStatus.failed: Action.fail,
            TaskStatus.exhausted: Action.exhaust,
        }.get(self.status, Action.proceed)


def after_iteration(
    it: IterationRecord,
    evidence: Evidence | None,
    recent: Sequence[IterationRecord],
    max_iterations: int,
    stuck_threshold: int,
) -> Decision:
    """The task's status once iteration `it.number` is recorded. `recent` ends with `it`."""
    if evidence is not None:
        return Decision(TaskStatus.completed, Reason(evidence.rule))
    if is_stuck(recent, stuck_threshold):
        return Decision(TaskStatus.failed, Reason.stuck)
    if it.number >= max_iterations:
        return Decision(TaskStatus.exhausted, Reason.max_iterations)
    return Decision(TaskStatus.running)  # the runner asks for approval before the next one, if needed


@dataclass(frozen=True)
class Outcome:
    """Everything one iteration changes, ready to store in one transaction."""

    decision: Decision
    update: TaskUpdate
    events: tuple[Event, ...]
    restore: str | None = None  # keep_best: the commit to put the tree back at (None: it stays)


def outcome(it: IterationRecord, task: TaskRecord, history: Sequence[IterationRecord], stuck_threshold: int) -> Outcome:
    """What iteration `it` of `task` means: the decision, the task's new fields and the events.
    `history` holds the iterations before it."""
    evidence = evidence_for(it, task.check_command, task.completion_promise)
    decision = after_iteration(it, evidence, [*history, it], task.max_iterations, stuck_threshold)
    final = decision.status.terminal
    update = TaskUpdate(
        status=decision.status if decision.status is not task.status else None,
        completion_reason=decision.reason.value if final and decision.reason else None,
        evidence=evidence.model_dump() if final and evidence else None,
        error=f"stuck: {stuck_threshold} iterations in a row changed no file and replied the same"
        if decision.reason is Reason.stuck
        else None,
    )
    events: list[Event] = []
    if task.check_command:
        events.append(("check", {"iteration": it.number, "exit_code": it.check_exit_code, "output": excerpt(it.check_output, 1000)}))
    events.append(("iteration_finished", {
        "iteration": it.number,
        "status": it.status,
        "error": it.error,
        "files_modified": list(it.files_modified),
        **({"protected_undone": list(it.protected_undone)} if it.protected_undone else {}),
        "diff_stat": it.diff_stat,
        "checkpoint_commit": it.checkpoint_commit,
        "duration_seconds": round(it.duration_seconds or 0.0, 3),
        "tokens": {"prompt": it.prompt_tokens, "completion": it.completion_tokens},
    }))  # fmt: skip
    restore = None
    strategy = task.loop_strategy
    if strategy.keep_best or strategy.restart:
        at = position([*history, it], task.base_commit, strategy.keep_best, strategy.restart)
        best = at.best.number if at.best else None
        events[-1][1].update(best_iteration=best, best_checkpoint=at.best_commit)
        if strategy.restart and failed_check(it):
            # the next attempt starts from the base; a task that ends here keeps its best attempt
            restore, reason = (at.best_commit, "the task ended: its best attempt") if final else (at.commit, "restart")
            to = best if final else None
            events.append(("checkpoint_restored", {"iteration": it.number, "to_iteration": to, "commit": restore, "reason": reason}))
        elif at.undone is not None:  # also when the task ends here: its branch keeps the best checkpoint
            restore = at.commit
            why = f"{check_score(it).describe()}, worse than after iteration {best}"
            events.append(("checkpoint_restored", {"iteration": it.number, "to_iteration": best, "commit": at.commit, "reason": why}))
    return Outcome(decision, update, tuple(events), restore)


def approval_summary(number: int, last: IterationRecord | None) -> dict[str, Any]:
    """What a person sees before approving iteration `number`: the last one's result."""
    summary: dict[str, Any] = {"iteration": number}
    if last is not None:
        summary.update(
            last_iteration=last.number,
            files_modified=list(last.files_modified),
            diff_stat=last.diff_stat,
            check_exit_code=last.check_exit_code,
            output_excerpt=excerpt(last.output, 1000),
        )
    return summary


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


def check_output(output: str, timed_out_after: float | None) -> str:
    """What is kept of a check's output: its end, and a note when it was cut off by the timeout."""
    text = excerpt(output)
    if timed_out_after is not None:
        text = f"{text}\n[check timed out after {timed_out_after:.0f} s]".strip()
    return text


TODAYS_LOOP = Strategy()  # every strategy field at its default


def compose_prompt(prompt: str, check_command: str | None, history: Sequence[IterationRecord], strategy: Strategy = TODAYS_LOOP) -> str:
    """The unchanged task prompt, then what the next attempt needs to know: the check's failure on
    the files as they are (the last iteration's, or the best one's after a worse attempt was
    undone), and what the last attempt did when it got nowhere, so that no request repeats the one
    before. The prompt comes first and never changes, so the LLM server's prefix cache can reuse it."""
    if not history:
        return prompt
    last, at = history[-1], position(history, None, strategy.keep_best, strategy.restart)
    parts = [prompt]
    if at.undone is not None and at.best is not None:
        parts.append(_undone_note(at.undone, at.best))
    current = at.best if at.undone is not None and at.best is not None else last
    if check_command and failed_check(current):
        parts.append(_check_note(check_command, current, strategy.feedback))
    if last.protected_undone:
        parts.append(_protected_note(last))
    if strategy.restart and failed_check(last):
        parts.append(_restart_note(last))
    elif at.undone is None and (last.status == NO_PROGRESS or (last.status == "error" and not last.files_modified)):
        parts.append(_retry_note(last, strategy.context))
    return "\n\n".join(parts)


def _check_note(check_command: str | None, it: IterationRecord, feedback: str) -> str:
    shaped = testreport.first_failure(it.check_output) if feedback == "shaped" else None
    if shaped is None:
        return (f"The check `{check_command}` failed after the previous attempt (exit code {it.check_exit_code}). "
                f"Its output:\n```\n{excerpt(it.check_output, 2000)}\n```\nFix the cause and finish the task.")  # fmt: skip
    summary = check_score(it).describe()
    return (f"The check `{check_command}` failed after the previous attempt ({summary}). Its first failure, "
            f"in the project's own code:\n```\n{excerpt(shaped, 2000)}\n```\nFix the cause and finish the task.")  # fmt: skip


def _retry_note(last: IterationRecord, context: str) -> str:
    """Why the last attempt got nowhere. Its number changes every time, so a request never repeats
    the previous one word for word; with carried context, also what it replied."""
    what = last.error.removeprefix("no progress: ") if last.error else "got nowhere"
    if last.status != NO_PROGRESS:
        what = f"ended in an error ({excerpt(what, 300)})"
    note = f"Attempt {last.number} {what}."
    if context == "carried" and last.output.strip():
        quoted = "\n".join(f"> {line}" for line in excerpt(last.output, 800).splitlines())  # its own fences stay inside
        note += f" Its reply was:\n{quoted}\nDo not answer the same way again."
    return note + " Make the change itself: write out every file you change, in full."


def _protected_note(last: IterationRecord) -> str:
    return (f"Attempt {last.number} changed {', '.join(last.protected_undone)}, which this task does not let you change; "
            "those changes were undone. Make the check pass by changing the other files.")  # fmt: skip


def _restart_note(last: IterationRecord) -> str:
    return (f"The files are back as they were before attempt {last.number}, which failed the check as shown. "
            "Write the change anew, in full, and not the way that attempt did.")  # fmt: skip


def _undone_note(worse: IterationRecord, best: IterationRecord) -> str:
    changed = ", ".join(worse.files_modified) or "no file"
    return (f"Attempt {worse.number} changed {changed} and made the check worse ({check_score(worse).describe()}, "
            f"against {check_score(best).describe()} after attempt {best.number}), so it was undone: "
            f"the files are as attempt {best.number} left them. Try a different change.")  # fmt: skip


# --- how the loop retries (the task's Strategy) --------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where the next iteration starts, and why."""

    commit: str | None  # the commit the task's tree is at (None: its base)
    best: IterationRecord | None  # the iteration whose check got furthest, first of equals
    best_commit: str | None  # the commit that iteration's check ran on
    undone: IterationRecord | None  # the last iteration, when keep_best undid it


def position(history: Sequence[IterationRecord], base: str | None, keep_best: bool, restart: bool = False) -> Position:
    """Replay the iterations: each checkpoint moves the tree on; with `keep_best`, an iteration
    whose check got less far than the best one so far moves it back to the commit that one's
    check ran on; with `restart`, a failed check moves it back to the base. Pure, so a resume
    after a crash puts the tree where the loop had it."""
    at, best, best_commit, undone = base, None, base, None
    for it in history:
        at = it.checkpoint_commit or at
        undone = None
        if best is None or testreport.is_worse(check_score(best), check_score(it)):
            best, best_commit = it, at
        elif keep_best and testreport.is_worse(check_score(it), check_score(best)):
            at, undone = best_commit, it
        if restart and failed_check(it):
            at, undone = base, None
    return Position(at, best, best_commit, undone)


def failed_check(it: IterationRecord) -> bool:
    return it.check_exit_code not in (None, 0)


RETRY_TEMPERATURES = (0.4, 0.7, 1.0)  # iteration 2, 3, 4 and later; the first runs at the backend's own (0 for aider)


CANDIDATE_TEMPERATURE = 0.7  # the second of two parallel attempts: it must not write what the first writes


def candidate_sampling(iteration: int, first: Sampling | None) -> Sampling:
    """How the second of two parallel attempts samples: hotter than the first, with a seed of its own."""
    temperature = max(CANDIDATE_TEMPERATURE, first.temperature if first else 0.0)
    return Sampling(temperature=temperature, seed=10_000 + iteration)


def pick_candidate(checks: Sequence[tuple[int | None, str | None]]) -> tuple[int, dict[str, Any]]:
    """Which of the parallel attempts to keep (its index), by (exit code, output) of their checks:
    the one whose check got furthest, the first of equals; and the `candidates` event's data."""
    scores = [testreport.score(code, output) for code, output in checks]
    kept = 0
    for index, candidate in enumerate(scores):
        if testreport.is_worse(scores[kept], candidate):
            kept = index
    return kept, {"kept": kept + 1, "checks": [score.describe() for score in scores]}


def sampling(iteration: int, diversity: bool) -> Sampling | None:
    """With diversity, each retry samples hotter than the last, with a seed of its own, so a
    repeated failure does not repeat itself; None: the backend's own settings."""
    if not diversity or iteration <= 1:
        return None
    return Sampling(temperature=RETRY_TEMPERATURES[min(iteration - 2, len(RETRY_TEMPERATURES) - 1)], seed=iteration)
