"""The API's read latency while a burst of tasks drains, and the time to drain it (not a test).

    .venv/bin/python bench/bench_load.py [--tasks 200] [--clients 20] [--concurrency 4]   (needs `wrk`)

A real `aistack serve ralph-wiggum` (`command` backend, RALPH_MAX_CONCURRENT_TASKS=concurrency)
gets `--tasks` tasks queued at once, spread over four repositories; each runs two iterations of
an agent that appends a line (tests/load_support.py, as the load test runs them). While they
drain, `wrk` with `--clients` connections reads the API in rounds of a few seconds, each request
one of: the task list, a task, its iterations, its events, the running count.

Figures: the drain time (first task created to last task finished, by the server's clocks), the
reads' p50/p99 in each round under load, and, as the anchor, the same reads at rest after the
drain. That nothing was lost is the load test's job; this script only says so if it saw otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchlib import commit_line, hammer, start_ralph
from load_support import ITERATIONS, audit, make_repos, submit_all, wait_terminal, write_agent

ROUND_SECONDS = 5


def read_paths(ids: list[str]) -> list[str]:
    """The read mix, as the load test's readers weigh it (SSE aside: wrk reads whole answers)."""
    per_task = [p for i in ids for p in (f"/tasks/{i}", f"/tasks/{i}/iterations", f"/tasks/{i}/events.json")]
    lists = ["/tasks?limit=50", "/tasks?limit=1&status=running"] * (len(per_task) // 8)
    return per_task + lists


def burst(tmp: Path, args: argparse.Namespace, read: bool) -> dict:
    """Queue the tasks, let them drain (with wrk reading in rounds if `read`), then read at rest."""
    tmp.mkdir(parents=True)
    agent = write_agent(tmp / "agent.sh")
    ralph = start_ralph(tmp / "ralph", RALPH_COMMAND_BACKEND=str(agent), RALPH_MAX_CONCURRENT_TASKS=str(args.concurrency))
    try:
        repos = make_repos(ralph.env.workspace_root, 4)
        with httpx.Client(base_url=ralph.url, timeout=30) as client:
            t0 = time.monotonic()
            ids = submit_all(client, repos, args.tasks)
            submitted = time.monotonic() - t0
            drained = threading.Event()
            waiter = threading.Thread(target=lambda: (wait_terminal(client, ids, 3600), drained.set()), daemon=True)
            waiter.start()
            loaded = []
            while read and not drained.is_set():
                loaded.append(hammer(ralph.url, read_paths(ids), args.clients, ROUND_SECONDS))
            waiter.join()
            rest = [hammer(ralph.url, read_paths(ids), args.clients, ROUND_SECONDS) for _ in range(2)] if read else []
            tasks = [client.get(f"/tasks/{i}").json() for i in ids]
            problems = audit(client, ids, ralph.env.workspace_root)
    finally:
        ralph.stop()
    first = min(datetime.fromisoformat(t["created_at"]) for t in tasks)
    last = max(datetime.fromisoformat(t["finished_at"]) for t in tasks)
    return {"submitted": submitted, "drain": (last - first).total_seconds(), "iterations": sum(t["iteration"] for t in tasks),
            "loaded": loaded, "rest": rest, "problems": problems}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        read = burst(Path(d) / "read", args, read=True)
        quiet = burst(Path(d) / "quiet", args, read=False)
    print(f"load benchmark, {args.tasks} tasks × {ITERATIONS} iterations, concurrency {args.concurrency}, "
          f"{args.clients} readers, {commit_line()}")  # fmt: skip
    print(f"  submitted         {args.tasks} tasks in {read['submitted']:.1f} s ({args.tasks / read['submitted']:.0f}/s)")
    for name, run in (("drained, read", read), ("drained, unread", quiet)):
        drain = run["drain"]
        print(f"  {name:17s} in {drain:.1f} s: {args.tasks / drain:.2f} tasks/s, {run['iterations'] / drain:.1f} iterations/s"
              + ("" if run is read else " (anchor: the same burst with no reader)"))  # fmt: skip
    loaded, rest = read["loaded"], read["rest"]
    p99s = [r["p99_ms"] for r in loaded]
    print(f"  reads under load  p99 {statistics.median(p99s):.1f} ms median of {len(loaded)} rounds of {ROUND_SECONDS} s "
          f"(worst {max(p99s):.1f} ms), p50 {statistics.median(r['p50_ms'] for r in loaded):.1f} ms, "
          f"{statistics.median(r['per_second'] for r in loaded):.0f} reads/s")  # fmt: skip
    print(f"  reads at rest     p99 {statistics.median(r['p99_ms'] for r in rest):.1f} ms, "
          f"p50 {statistics.median(r['p50_ms'] for r in rest):.1f} ms, {statistics.median(r['per_second'] for r in rest):.0f} reads/s "
          "(anchor: the same reads once drained)")  # fmt: skip
    problems = read["problems"] + quiet["problems"]
    print(f"  non-2xx answers   {sum(r['errors'] for r in loaded + rest)}; tasks lost or counted twice: {len(problems)}")
    for problem in problems[:10]:
        print(f"    {problem}")


if __name__ == "__main__":
    main()
