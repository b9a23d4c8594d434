"""The API's read latency while a burst of tasks drains, and the time to drain it (not a test).

    .venv/bin/python bench/bench_load.py [--tasks 200] [--clients 20] [--concurrency 4]   (needs `wrk`)

A real `aistack serve ralph-wiggum` (`command` backend, RALPH_MAX_CONCURRENT_TASKS=concurrency)
gets `--tasks` tasks queued at once, spread over four repositories; each runs two iterations of
an agent that appends a line (tests/load_support.py, as the load test runs them). The burst runs
three times, on a fresh server each time:
- read by `wrk` with `--clients` connections without pause, in rounds of a few seconds, each
  request one of: the task list, a task, its iterations, its events, the running count; then the
  same reads at rest, once drained (the anchor of the reads);
- read by `--clients` paced readers (tests/load_support.Readers: the same mix plus SSE streams,
  each reader pausing PACED_PAUSE s between reads, as a dashboard polls);
- not read at all (the anchor of the drain).

Figures: the drain time (first task created to last task finished, by the server's clocks) of
each, and the reads' p50/p99. That nothing was lost is the load test's job; this script only
says so if it saw otherwise.
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
from load_support import ITERATIONS, Readers, audit, make_repos, submit_all, wait_terminal, write_agent

ROUND_SECONDS = 5
PACED_PAUSE = 0.5  # a dashboard-like reader: two reads a second at most


def read_paths(ids: list[str]) -> list[str]:
    """The read mix, as the load test's readers weigh it (SSE aside: wrk reads whole answers)."""
    per_task = [p for i in ids for p in (f"/tasks/{i}", f"/tasks/{i}/iterations", f"/tasks/{i}/events.json")]
    lists = ["/tasks?limit=50", "/tasks?limit=1&status=running"] * (len(per_task) // 8)
    return per_task + lists


def burst(tmp: Path, args: argparse.Namespace, read: str | None) -> dict:
    """Queue the tasks and let them drain, read by wrk in rounds (`read="wrk"`, then at rest
    too), by paced readers (`read="paced"`), or not at all."""
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

            def drain() -> None:
                try:
                    wait_terminal(client, ids, 3600)
                finally:  # a drain that fails must still end the wrk rounds below
                    drained.set()

            waiter = threading.Thread(target=drain, daemon=True)
            waiter.start()
            loaded, paced = [], []
            if read == "paced":
                with Readers(ralph.url, ids, args.clients, pause=PACED_PAUSE) as readers:
                    waiter.join()
                paced = readers.seconds
            while read == "wrk" and not drained.is_set():
                loaded.append(hammer(ralph.url, read_paths(ids), args.clients, ROUND_SECONDS))
            waiter.join()
            rest = [hammer(ralph.url, read_paths(ids), args.clients, ROUND_SECONDS) for _ in range(2)] if read == "wrk" else []
            tasks = [client.get(f"/tasks/{i}").json() for i in ids]
            problems = audit(client, ids, ralph.env.workspace_root)
    finally:
        ralph.stop()
    first = min(datetime.fromisoformat(t["created_at"]) for t in tasks)
    last = max(datetime.fromisoformat(t["finished_at"]) for t in tasks)
    return {"submitted": submitted, "drain": (last - first).total_seconds(), "iterations": sum(t["iteration"] for t in tasks),
            "loaded": loaded, "rest": rest, "paced": paced, "problems": problems}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        read = burst(Path(d) / "read", args, read="wrk")
        paced = burst(Path(d) / "paced", args, read="paced")
        quiet = burst(Path(d) / "quiet", args, read=None)
    print(f"load benchmark, {args.tasks} tasks × {ITERATIONS} iterations, concurrency {args.concurrency}, "
          f"{args.clients} readers, {commit_line()}")  # fmt: skip
    print(f"  submitted         {args.tasks} tasks in {read['submitted']:.1f} s ({args.tasks / read['submitted']:.0f}/s)")
    for name, run, note in (("drained, wrk", read, f"{args.clients} wrk connections reading without pause"),
                            ("drained, paced", paced, f"{args.clients} readers, each pausing {PACED_PAUSE} s between reads"),
                            ("drained, unread", quiet, "anchor: the same burst with no reader")):  # fmt: skip
        drain = run["drain"]
        print(f"  {name:17s} in {drain:.1f} s: {args.tasks / drain:.2f} tasks/s, {run['iterations'] / drain:.1f} iterations/s ({note})")
    loaded, rest = read["loaded"], read["rest"]
    p99s = [r["p99_ms"] for r in loaded]
    print(f"  reads under load  p99 {statistics.median(p99s):.1f} ms median of {len(loaded)} rounds of {ROUND_SECONDS} s "
          f"(worst {max(p99s):.1f} ms), p50 {statistics.median(r['p50_ms'] for r in loaded):.1f} ms, "
          f"{statistics.median(r['per_second'] for r in loaded):.0f} reads/s")  # fmt: skip
    print(f"  reads at rest     p99 {statistics.median(r['p99_ms'] for r in rest):.1f} ms, "
          f"p50 {statistics.median(r['p50_ms'] for r in rest):.1f} ms, {statistics.median(r['per_second'] for r in rest):.0f} reads/s "
          "(anchor: the same reads once drained)")  # fmt: skip
    times = sorted(paced["paced"])
    print(f"  reads, paced      p99 {1000 * times[int(0.99 * (len(times) - 1))]:.1f} ms, p50 {1000 * statistics.median(times):.1f} ms, "
          f"{len(times) / paced['drain']:.0f} reads/s ({len(times)} reads, timed by the client)")  # fmt: skip
    problems = read["problems"] + paced["problems"] + quiet["problems"]
    print(f"  non-2xx answers   {sum(r['errors'] for r in loaded + rest)}; tasks lost or counted twice: {len(problems)}")
    for problem in problems[:10]:
        print(f"    {problem}")


if __name__ == "__main__":
    main()
