"""What the finished tasks teach: their outcomes in, proposals out. Pure functions of plain data
(no I/O, no clock), like `rules`; the store writes the outcomes and keeps the proposals, and a
person accepts or rejects each one.

Every proposal carries its evidence (counts, percentiles, the tasks it rests on) and needs a
sample of at least `min_sample` finished tasks: a limit learned from three tasks is a guess. The
limits it proposes are the ones under which every recorded success would still have succeeded,
and only where enough failures ran on past them for nothing (`rules.enough_iterations`, per
strategy), so what it saves is spent on tasks that failed anyway.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aistack.config import per_backend
from aistack.contracts import Complexity, Strategy, TaskStatus
from aistack.ralph_wiggum import rules, testreport
from aistack.ralph_wiggum.records import IterationRecord, OutcomeRecord, TaskRecord

MIN_SAMPLE = 10  # finished tasks a proposal needs at the least (RALPH_LEARN_MIN_OUTCOMES)
MIN_SOLVED = rules.MIN_SOLVED  # solved tasks a limit needs: it is read from how long they took
LOOP_ENDINGS = frozenset({TaskStatus.completed.value, TaskStatus.exhausted.value, TaskStatus.failed.value})
LIMIT_KEYS = {c.value: f"RALPH_MAX_ITERATIONS_{c.value.upper()}" for c in Complexity}
TASK_IDS_SHOWN = 50  # the tasks a proposal's evidence names, at most


# --- outcomes --------------------------------------------------------------------------------------


def features(prompt: str, context: dict[str, Any]) -> tuple[str, int, int, int]:
    """A prompt's plain features: its class, words, listed items, and the files its context names."""
    complexity, _ = rules.classify(prompt)
    files = [*(context.get("files") or []), *(context.get("read_only_files") or [])]
    return complexity.value, len(prompt.split()), len(rules.LIST_ITEM.findall(prompt)), len(files) if isinstance(files, list) else 0


def outcome_of(task: TaskRecord, history: Sequence[IterationRecord], model: str | None) -> OutcomeRecord:
    """The outcome of a task that just reached a terminal status, from it and its iterations."""
    complexity, words, items, files = features(task.prompt, task.context)
    last = history[-1] if history else None
    checked = last is not None and task.check_command is not None and (last.check_exit_code is not None or last.check_output)
    failure = None
    if checked and last is not None and last.check_exit_code != 0:
        where = testreport.score(last.check_exit_code, last.check_output).first_failure
        failure = where[0] if where else f"exit code {last.check_exit_code}"
    evidence = task.evidence or {}
    durations = [it.duration_seconds for it in history if it.duration_seconds is not None]
    return OutcomeRecord(
        task_id=task.id, status=task.status.value, reason=task.completion_reason, complexity=complexity, words=words, items=items,
        context_files=files, workspace=task.workspace, backend=task.backend, model=model, strategy=task.strategy,
        iterations=task.iteration, max_iterations=task.max_iterations, limit_source=task.limit_source,
        evidence_rule=evidence.get("rule"), check_command=task.check_command,
        check_passed=(last.check_exit_code == 0) if checked and last is not None else None, check_failure=failure,
        promise=bool(evidence.get("promise_line")) if task.completion_promise else None,
        diff=any(it.files_modified for it in history), prompt_tokens=task.prompt_tokens, completion_tokens=task.completion_tokens,
        seconds=round(sum(durations), 3), longest_iteration_seconds=max(durations) if durations else None,
        idle_run=idle_run(history), finished_at=task.finished_at or task.updated_at,
    )  # fmt: skip


def past_tasks(outcomes: Iterable[OutcomeRecord]) -> list[rules.PastTask]:
    """The outcomes the learned limits read: the tasks the loop ended, as what they were and took."""
    return [rules.PastTask(o.complexity, o.backend, _strategy_key(o), o.iterations, o.solved) for o in outcomes if o.status in LOOP_ENDINGS]


def _strategy_key(o: OutcomeRecord) -> str:
    return rules.strategy_key(Strategy.model_validate(o.strategy or {}))


def idle_run(history: Sequence[IterationRecord]) -> int:
    """The longest run of consecutive iterations that changed no file (what the stuck rule counts)."""
    longest = current = 0
    for it in history:
        current = 0 if it.files_modified else current + 1
        longest = max(longest, current)
    return longest


# --- proposals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """The settings the learner proposes changes to, as they are now."""

    limits: dict[str, int]  # class -> RALPH_MAX_ITERATIONS_<CLASS>
    stuck_iterations: int
    iteration_timeout_seconds: int
    strategy: Strategy = field(default_factory=Strategy)
    backend_timeouts: dict[str, int] = field(default_factory=dict)  # RALPH_BACKEND_TIMEOUT_SECONDS

    @classmethod
    def of(cls, settings: Any) -> Current:
        limits = {c: getattr(settings, key.lower()) for c, key in LIMIT_KEYS.items()}
        timeouts = per_backend(settings.ralph_backend_timeout_seconds)
        return cls(limits, settings.ralph_stuck_iterations, settings.ralph_iteration_timeout_seconds, settings.strategy(), timeouts)

    def timeout(self, backend: str) -> int:
        return self.backend_timeouts.get(backend, self.iteration_timeout_seconds)


@dataclass(frozen=True)
class Proposal:
    kind: str  # iteration_limit, iteration_timeout, stuck_threshold, strategy, backend or task
    subject: str  # one open proposal per kind and subject: a newer one replaces it
    summary: str
    changes: dict[str, str]  # .env keys and their new values; {} for advice a person acts on
    evidence: dict[str, Any]
    task: dict[str, Any] | None = None  # kind task: the drafted submission (a TaskCreate's fields)


def learn(outcomes: Iterable[OutcomeRecord], current: Current, min_sample: int = MIN_SAMPLE) -> list[Proposal]:
    """Every proposal the outcomes support. Only tasks the loop ended count (completed, exhausted,
    failed): a task a person stopped or rejected says nothing about what the loop needs."""
    ended = [o for o in outcomes if o.status in LOOP_ENDINGS]
    by_class: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for o in ended:
        by_class[o.complexity].append(o)
    found: list[Proposal | None] = [iteration_limit(c, group, current.limits.get(c), min_sample) for c, group in sorted(by_class.items())]
    found.append(iteration_timeouts(ended, current, min_sample))
    found.append(stuck_threshold(ended, current.stuck_iterations, min_sample))
    found += [strategy_for(c, group, current.strategy, min_sample) for c, group in sorted(by_class.items())]
    found += failing_backends(ended, min_sample)
    found += repeated_failures(ended, min_sample)
    return [p for p in found if p is not None]


def iteration_limit(complexity: str, group: Sequence[OutcomeRecord], limit: int | None, min_sample: int) -> Proposal | None:
    """The class's limit lowered to the iterations its tasks show are enough (`rules.enough_iterations`:
    the most any solved one needed, with `min_sample` failures that ran on past it for nothing), for
    every backend and strategy that solved any of them: the tasks that ran on past it never finished.
    One whose tasks cannot show it yet (a strategy that rescues late, tried on few) keeps the limit
    where it is; one that never solved a task of the class has no success to cut, and no say."""
    if limit is None or len(group) < min_sample:
        return None
    by_way: dict[tuple[str, str], list[OutcomeRecord]] = defaultdict(list)
    for o in group:
        by_way[(o.backend, _strategy_key(o))].append(o)
    shown = [rules.enough_iterations(past_tasks(tasks), min_sample) for tasks in by_way.values() if any(o.solved for o in tasks)]
    if not shown or any(enough is None for enough in shown):
        return None
    value = max(enough.iterations for enough in shown if enough is not None)
    solved = sorted(o.iterations for o in group if o.solved)
    wasted = [o for o in group if not o.solved and o.iterations > value]
    if value >= limit or not wasted:
        return None
    saved_iterations = sum(o.iterations - value for o in wasted)
    saved_tokens = sum(round(o.tokens * (o.iterations - value) / o.iterations) for o in wasted)
    key = LIMIT_KEYS[complexity]
    summary = (f"{complexity} tasks: limit {limit} -> {value} iterations. All {len(solved)} solved ones needed at most {value}; "
               f"{len(wasted)} that failed anyway ran {saved_iterations} iterations ({saved_tokens} tokens) past it.")  # fmt: skip
    evidence = {**_sample(group), "iterations_to_success": _spread(solved), "failed_past_limit": len(wasted),
                "ways_run": len(shown), "iterations_saved": saved_iterations, "tokens_saved": saved_tokens,
                "tasks": _ids(group)}  # fmt: skip
    return Proposal("iteration_limit", complexity, summary, {key: str(value)}, evidence)


def iteration_timeouts(ended: Sequence[OutcomeRecord], current: Current, min_sample: int) -> Proposal | None:
    """Per backend with `min_sample` finished tasks: its timeout at 1.5x the longest iteration of
    one of its solved tasks (at least a minute, in whole 10 s), where that is a quarter or more
    away from the one in effect. One proposal of RALPH_BACKEND_TIMEOUT_SECONDS for them all (an
    agent on a CPU model takes minutes where a script takes a second), the other backends' kept."""
    by_backend: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for o in ended:
        by_backend[o.backend].append(o)
    chosen, evidence, said = dict(current.backend_timeouts), dict[str, Any](), list[str]()
    for backend, group in sorted(by_backend.items()):
        longest = sorted(o.longest_iteration_seconds for o in group if o.solved and o.longest_iteration_seconds is not None)
        if len(group) < min_sample or len(longest) < MIN_SOLVED:
            continue
        seconds, now = max(60, math.ceil(longest[-1] * 1.5 / 10) * 10), current.timeout(backend)
        if abs(seconds - now) < now / 4:
            continue
        slower = [o for o in group if not o.solved and (o.longest_iteration_seconds or 0) > seconds]
        chosen[backend] = seconds
        said.append(f"{backend} {now} -> {seconds} s (its longest solved iteration: {longest[-1]:.0f} s)")
        evidence[backend] = {**_sample(group), "longest_iteration_seconds_of_solved": _spread(longest),
                             "failed_with_longer": len(slower), "tasks": _ids(group)}  # fmt: skip
    if not evidence:
        return None
    setting = ",".join(f"{backend}={seconds}" for backend, seconds in sorted(chosen.items()))
    return Proposal("iteration_timeout", "per backend", "iteration timeouts: " + "; ".join(said),
                    {"RALPH_BACKEND_TIMEOUT_SECONDS": setting}, evidence)  # fmt: skip


def stuck_threshold(ended: Sequence[OutcomeRecord], threshold: int, min_sample: int) -> Proposal | None:
    """RALPH_STUCK_ITERATIONS one above the longest run of iterations without a change that a
    solved task still came back from, where failed tasks idled at least that long."""
    solved = sorted(o.idle_run for o in ended if o.solved)
    if len(ended) < min_sample or len(solved) < MIN_SOLVED:
        return None
    value = max(2, solved[-1] + 1)
    idling = [o for o in ended if not o.solved and o.idle_run >= value]
    if value == threshold or not idling or (threshold and value > threshold):
        return None
    summary = (f"stuck after {value} iterations without a change (now {threshold or 'off'}): no solved task idled more than "
               f"{solved[-1]} in a row; {len(idling)} failed tasks idled {value} or more")  # fmt: skip
    evidence = {**_sample(ended), "idle_run_of_solved": _spread(solved), "failed_idling": len(idling), "tasks": _ids(ended)}
    return Proposal("stuck_threshold", "all", summary, {"RALPH_STUCK_ITERATIONS": str(value)}, evidence)


def strategy_for(complexity: str, group: Sequence[OutcomeRecord], current: Strategy, min_sample: int) -> Proposal | None:
    """The strategy that solved the class's tasks most often, where it beats today's, both tried
    on `min_sample` tasks or more. The strategy settings are the stack's, not the class's: the
    summary says for which class it was measured."""
    by_strategy: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for o in group:
        by_strategy[_strategy_key(o)].append(o)
    rates = {key: _rate(tasks) for key, tasks in by_strategy.items() if len(tasks) >= min_sample}
    today = rules.strategy_key(current)
    if today not in rates or not rates:
        return None
    best = max(rates, key=lambda key: (rates[key], -(_tokens_per_solved(by_strategy[key]) or 0.0)))
    if rates[best] <= rates[today]:
        return None
    chosen = Strategy.model_validate(json.loads(best))
    changes = {f"RALPH_STRATEGY_{name.upper()}": _env_value(getattr(chosen, name))
               for name in Strategy.model_fields if getattr(chosen, name) != getattr(current, name)}  # fmt: skip
    summary = f"{complexity} tasks: strategy {_describe(changes)} solved {rates[best]:.0%}, today's {rates[today]:.0%}"
    tried = {key: {**_sample(by_strategy[key]), "tokens_per_solved": _tokens_per_solved(by_strategy[key])} for key in rates}
    evidence = {"class": complexity, "per_strategy": tried, "tasks": _ids(group)}
    return Proposal("strategy", complexity, summary, changes, evidence)


def failing_backends(ended: Sequence[OutcomeRecord], min_sample: int) -> list[Proposal]:
    """A backend (with its model) that solves at most a tenth of a class's tasks where another
    solves half or more: advice to send that class elsewhere (no setting routes by class)."""
    groups: dict[tuple[str, str], list[OutcomeRecord]] = defaultdict(list)
    for o in ended:
        groups[(o.complexity, f"{o.backend}/{o.model or '?'}")].append(o)
    found = []
    for (complexity, engine), group in sorted(groups.items()):
        better = {other: _rate(g) for (c, other), g in groups.items() if c == complexity and other != engine and len(g) >= min_sample}
        if len(group) < min_sample or _rate(group) > 0.1 or not better or max(better.values()) < 0.5:
            continue
        best = max(better, key=lambda other: better[other])
        summary = f"{complexity} tasks fail on {engine} ({_rate(group):.0%} solved of {len(group)}); {best} solves {better[best]:.0%}"
        evidence = {"class": complexity, "failing": {engine: _sample(group)}, "better": {k: round(v, 3) for k, v in better.items()},
                    "tasks": _ids(group)}  # fmt: skip
        found.append(Proposal("backend", f"{complexity}:{engine}", summary, {}, evidence))
    return found


def repeated_failures(ended: Sequence[OutcomeRecord], min_sample: int) -> list[Proposal]:
    """A drafted task where `min_sample` tasks or more in one workspace ended with the same check
    failing the same way: the check (or what it tests) may be what needs the work."""
    groups: dict[tuple[str, str, str], list[OutcomeRecord]] = defaultdict(list)
    for o in ended:
        if not o.solved and o.check_passed is False and o.check_command and o.check_failure:
            groups[(o.workspace, o.check_command, o.check_failure)].append(o)
    found = []
    for (workspace, check, failure), group in sorted(groups.items()):
        if len(group) < min_sample:
            continue
        prompt = (f"The check `{check}` fails the same way ({failure}) at the end of {len(group)} tasks in this repository. "
                  "Find out why and make it pass: fix the code it tests, or the check itself where it is wrong.")  # fmt: skip
        draft = {"prompt": prompt, "workspace": workspace, "check_command": check, "backend": group[-1].backend}
        summary = f"{len(group)} tasks in {workspace} ended with `{check}` failing at {failure}: a task to fix that"
        found.append(Proposal("task", f"{workspace}:{check}:{failure}"[:200], summary, {}, {**_sample(group), "tasks": _ids(group)}, draft))
    return found


# --- helpers ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values` (q in 0..1)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "max": values[-1]}


def _sample(group: Sequence[OutcomeRecord]) -> dict[str, Any]:
    solved = sum(o.solved for o in group)
    return {"tasks_total": len(group), "solved": solved, "success_rate": round(solved / len(group), 3) if group else None}


def _ids(group: Sequence[OutcomeRecord]) -> list[str]:
    newest = sorted(group, key=lambda o: o.finished_at, reverse=True)
    return [o.task_id for o in newest[:TASK_IDS_SHOWN]]


def _rate(group: Sequence[OutcomeRecord]) -> float:
    return sum(o.solved for o in group) / len(group)


def _tokens_per_solved(group: Sequence[OutcomeRecord]) -> float | None:
    solved = [o.tokens for o in group if o.solved]
    return sum(solved) / len(solved) if solved else None


def _env_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _describe(changes: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in changes.items()) or "today's"
