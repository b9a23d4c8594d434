"""Throughput with more workers on one PostgreSQL (not a test).

    .venv/bin/python bench/bench_scale.py [--tasks 200] [--iterations 5] [--workers 1,2,4] [--sleep 1]

A real PostgreSQL (Debian's package, started in a temp dir as the tests do), one API replica
(`aistack serve ralph-wiggum --role api`) and W workers (`--role worker`, 2 task slots each),
real processes. Tasks run the `command` backend: the agent appends a line and sleeps (it stands
in for a model call, so the figure measures coordination: claims, leases, checkpoints, records,
not the cores), the check passes at the last iteration. Figures: tasks a minute, from the first
submission to the last task's end, and the p99 latency of the API (a task's view and a page of
the list, asked in a loop) under that load.

Anchor, same run: 1 worker. Target: 4 workers ≥ 3× the tasks a minute of 1.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchlib import commit_line, verdict
from postgres import PostgresServer, bindir
from support import ServiceProcess, free_port, make_git_repo, new_stack_env, wait_until

TERMINAL = {"completed", "exhausted", "failed", "stopped", "rejected"}


def run_round(server: PostgresServer, root: Path, workers: int, tasks: int, iterations: int, sleep: float) -> dict:
    env = new_stack_env(root).set(AISTACK_DATABASE_URL=server.database(), RALPH_MAX_CONCURRENT_TASKS=2, LOG_LEVEL="warning",
                                  RALPH_SANDBOX="off", RALPH_MAX_ITERATIONS_CAP=max(iterations, 10))  # fmt: skip
    agent = root / "agent.sh"
    agent.write_text(f'#!/bin/sh\necho "line $AISTACK_ITERATION" >> notes.txt\nsleep {sleep}\n')
    agent.chmod(0o755)
    env.set(RALPH_COMMAND_BACKEND=str(agent))
    repos = [make_git_repo(env.workspace_root / f"repo{i}").name for i in range(10)]
    procs = []

    def start(role: str, worker_id: str = "") -> ServiceProcess:
        proc = ServiceProcess("ralph-wiggum", env, {"RALPH_WIGGUM_PORT": str(free_port()), "RALPH_WORKER_ID": worker_id},
                              args=("--role", role))  # fmt: skip
        procs.append(proc)
        return proc

    try:
        api_proc = start("api").wait_healthy(120)
        for proc in [start("worker", f"w{i}") for i in range(workers)]:
            proc.wait_healthy(120)
        api = httpx.Client(base_url=api_proc.url, timeout=30)
        latencies: list[float] = []
        done = threading.Event()
        t0 = time.monotonic()
        ids = [api.post("/tasks", json={"prompt": "add a line", "backend": "command", "workspace": repos[n % len(repos)],
                                        "max_iterations": iterations,
                                        "check_command": f"test $(wc -l < notes.txt) -ge {iterations}"}).json()["task_id"]
               for n in range(tasks)]  # fmt: skip

        def probe() -> None:
            with httpx.Client(base_url=api_proc.url, timeout=30) as client:
                n = 0
                while not done.is_set():
                    path = f"/tasks/{ids[n % len(ids)]}" if n % 2 else "/tasks?limit=20"
                    start_at = time.monotonic()
                    client.get(path).raise_for_status()
                    latencies.append(time.monotonic() - start_at)
                    n += 1
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()

        def all_ended() -> bool:
            page = api.get("/tasks", params={"limit": 1, "status": "completed"}).json()
            return page["total"] == tasks

        ended = wait_until(all_ended, timeout=3600, interval=1)
        seconds = time.monotonic() - t0
        done.set()
        prober.join(10)
        statuses = [api.get(f"/tasks/{task_id}").json()["status"] for task_id in ids]
        api.close()
        return {
            "ended": ended and all(status == "completed" for status in statuses),
            "tasks_per_minute": tasks / seconds * 60,
            "seconds": seconds,
            "p99_ms": statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) >= 2 else float("nan"),
        }
    finally:
        for proc in reversed(procs):
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds the agent sleeps per iteration")
    args = parser.parse_args()
    found = bindir()
    if found is None:
        raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/setup.sh --test does)")
    server = PostgresServer(found).start()
    results = {}
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            with tempfile.TemporaryDirectory(prefix="aistack-scale-") as tmp:
                results[workers] = run_round(server, Path(tmp), workers, args.tasks, args.iterations, args.sleep)
            r = results[workers]
            print(f"{workers} worker(s): {r['tasks_per_minute']:.1f} tasks/min ({args.tasks} tasks in {r['seconds']:.0f} s), "
                  f"API p99 {r['p99_ms']:.0f} ms{'' if r['ended'] else ', NOT every task completed'}", flush=True)  # fmt: skip
    finally:
        server.stop()
        server.remove()
    if 1 in results and len(results) > 1:
        most = max(results)
        ratio = results[most]["tasks_per_minute"] / results[1]["tasks_per_minute"]
        print(f"{most} workers / 1: {ratio:.2f}× — {verdict(ratio, 3.0, higher_is_better=True)}")
    print(commit_line())


if __name__ == "__main__":
    main()
