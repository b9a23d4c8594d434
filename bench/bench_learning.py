"""The learner replayed on recorded tasks: what its limits would have saved, at what cost in
success (not a test; no model runs).

    .venv/bin/python bench/bench_learning.py /tmp/hsolve/solve40-final.json [more reports] [--seeds 10] [--out learning.json]

Input: bench_solve JSON reports; every recorded task of a `loop*` mode (with its iterations)
becomes an outcome as ralph-wiggum records it (`learning.outcome_of`'s fields; the prompt is
rebuilt from the HumanEval problem). For each seed the tasks are split in two halves at random:
the learner (`learning.learn`, its default sample size unless --min-sample) learns on the first,
and the second is replayed under what it learned, two ways:

- `class limit`: the class's iteration limit from an accepted `iteration_limit` proposal;
- `learned`: each task's own limit from the first-half tasks of its class, backend and strategy
  (`rules.learned_limit`, what a submission gets once RALPH_LEARNED_LIMITS_AFTER tasks have finished).

A replayed task under limit L is what its first L recorded iterations were: solved if it was
solved within L, its tokens and seconds those of those iterations. Reported per way: tasks,
solved, iterations, tokens, seconds; and iterations and tokens saved on the tasks that failed
anyway, beside the success rate (it must not drop).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import benchlib  # noqa: F401  first: puts tests/ on the path
import humaneval_repos as he
from aistack.config import Settings
from aistack.contracts import Strategy, StrategyChoice
from aistack.ralph_wiggum import learning, rules
from aistack.ralph_wiggum.records import IterationRecord, OutcomeRecord

WAYS = ("recorded", "class limit", "learned")


def outcomes(report: dict[str, Any], prompts: dict[str, str]) -> list[tuple[OutcomeRecord, list[dict[str, Any]]]]:
    """Every recorded task of the report's loop modes, as an outcome, with its iterations."""
    found = []
    for mode, results in report["results"].items():
        if not mode.startswith("loop"):
            continue
        limit, backend = report["modes"][mode]["max_iterations"], report["modes"][mode].get("backend", "aider")
        strategy = StrategyChoice.model_validate(report["modes"][mode].get("strategy") or {}).over(Strategy())
        for n, r in enumerate(results):
            its = r["per_iteration"]
            prompt = prompts.get(r["problem"], r["problem"])
            complexity, words, items, files = learning.features(prompt, {"files": [he.SOLUTION]})
            idle = learning.idle_run([replace(_BLANK, files_modified=("x",) if it["changed"] else ()) for it in its])
            o = OutcomeRecord(
                task_id=f"{mode}:{r['task']}", status=r["status"], reason=None, complexity=complexity, words=words, items=items,
                context_files=files, workspace=r["problem"], backend=backend, model=report.get("model"), strategy=strategy.model_dump(),
                iterations=r["iterations"], max_iterations=limit, limit_source="request", evidence_rule=None,
                check_command=report.get("check_command"), check_passed=r["solved"], check_failure=None, promise=None,
                diff=any(it["changed"] for it in its), prompt_tokens=r["tokens"]["prompt"], completion_tokens=r["tokens"]["completion"],
                seconds=r["seconds"], longest_iteration_seconds=max((it["seconds"] for it in its), default=None), idle_run=idle,
                finished_at=_T0 + timedelta(seconds=n),
            )  # fmt: skip
            found.append((o, its))
    return found


_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_BLANK = IterationRecord(task_id="", number=0, started_at=_T0, status="success")


def replay(o: OutcomeRecord, its: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The task as it would have gone under `limit`: its first `limit` recorded iterations."""
    kept = its[:limit]
    return {"solved": o.solved and o.iterations <= limit, "failed_anyway": not o.solved, "iterations": len(kept),
            "tokens": sum(it["tokens"]["prompt"] + it["tokens"]["completion"] for it in kept),
            "seconds": sum(it["seconds"] for it in kept)}  # fmt: skip


Recorded = list[tuple[OutcomeRecord, list[dict[str, Any]]]]  # each task's outcome, with its iterations as the report has them


def one_split(tasks: Recorded, prompts: dict[str, str], seed: int, min_sample: int) -> dict[str, Any]:
    order = sorted(tasks, key=lambda t: t[0].task_id)
    random.Random(seed).shuffle(order)
    learn_on, replayed = order[: len(order) // 2], order[len(order) // 2 :]
    recorded_limit = max(o.max_iterations for o, _ in tasks)
    current = learning.Current.of(Settings(_env_file=None))  # type: ignore[call-arg]
    current = replace(current, limits=dict.fromkeys(current.limits, recorded_limit))  # as the recorded tasks ran
    proposals = learning.learn([o for o, _ in learn_on], current, min_sample)
    class_limits = {**current.limits, **{p.subject: int(v) for p in proposals if p.kind == "iteration_limit" for v in p.changes.values()}}
    history = rules.History(learning.past_tasks(o for o, _ in learn_on), after=1, min_evidence=min_sample)
    rows: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for o, its in replayed:
        strategy = Strategy.model_validate(o.strategy or {})
        prompt_limit = rules.learned_limit(prompts.get(o.workspace, o.workspace), o.backend, strategy, history)
        limits = {"recorded": o.iterations, "class limit": class_limits[o.complexity],
                  "learned": min(prompt_limit.max_iterations, recorded_limit) if prompt_limit else class_limits[o.complexity]}  # fmt: skip
        for way in WAYS:
            rows[way].append(replay(o, its, limits[way]))
    return {"seed": seed, "learned_on": len(learn_on), "replayed": len(replayed), "class_limits": class_limits,
            "proposals": [{"kind": p.kind, "subject": p.subject, "changes": p.changes} for p in proposals],
            "ways": {way: _totals(rows[way]) for way in WAYS}}  # fmt: skip


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    anyway = [r for r in rows if r["failed_anyway"]]
    return {"tasks": len(rows), "solved": sum(r["solved"] for r in rows), "iterations": sum(r["iterations"] for r in rows),
            "tokens": sum(r["tokens"] for r in rows), "seconds": round(sum(r["seconds"] for r in rows), 1),
            "failed_anyway": len(anyway), "iterations_on_failed": sum(r["iterations"] for r in anyway),
            "tokens_on_failed": sum(r["tokens"] for r in anyway)}  # fmt: skip


def table(splits: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    total = {way: {key: sum(s["ways"][way][key] for s in splits) for key in splits[0]["ways"][way]} for way in WAYS}
    base = total["recorded"]
    lines = [f"{'way':12} {'tasks':>6} {'solved':>7} {'rate':>6} {'iters':>6} {'tokens':>8} {'seconds':>9} "
             f"{'iters saved on failed':>22} {'tokens saved on failed':>23}"]  # fmt: skip
    for way in WAYS:
        t = total[way]
        rate = t["solved"] / t["tasks"] if t["tasks"] else 0.0
        saved = (base["iterations_on_failed"] - t["iterations_on_failed"], base["tokens_on_failed"] - t["tokens_on_failed"])
        lines.append(f"{way:12} {t['tasks']:>6} {t['solved']:>7} {rate:>6.1%} {t['iterations']:>6} {t['tokens']:>8} {t['seconds']:>9.0f} "
                     f"{saved[0]:>22} {saved[1]:>23}")  # fmt: skip
    return "\n".join(lines), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="bench_solve JSON reports")
    parser.add_argument("--seeds", type=int, default=10, help="random splits, seeds 0..N-1 (the totals add them up)")
    parser.add_argument("--min-sample", type=int, default=learning.MIN_SAMPLE, help="RALPH_LEARN_MIN_OUTCOMES for the learner")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()
    prompts = {p.task_id: he.prompt(p) for p in he.problems()}
    tasks = [t for path in args.reports for t in outcomes(json.loads(path.read_text()), prompts)]
    if not tasks:
        raise SystemExit("no recorded task of a loop mode (loop, loop-*) in these reports: nothing to replay")
    splits = [one_split(tasks, prompts, seed, args.min_sample) for seed in range(args.seeds)]
    text, total = table(splits)
    print(f"{len(tasks)} recorded tasks from {', '.join(str(p) for p in args.reports)}; {args.seeds} seeded splits, learned on "
          f"one half, replayed on the other (min sample {args.min_sample})")  # fmt: skip
    print(text)
    if args.out:
        report = {"reports": [str(p) for p in args.reports], "tasks": len(tasks), "min_sample": args.min_sample, "seeds": args.seeds}
        args.out.write_text(json.dumps({**report, "totals": total, "splits": splits}, indent=1) + "\n")


if __name__ == "__main__":
    main()
