"""Benchmark of the dashboard, on a real orchestrator (command backend) and a real dashboard.

    .venv/bin/python bench/bench_dashboard.py [--requests 40] [--tasks 30]

Measures, in an isolated data dir with free ports:
- server time of each page (GET, HTML complete), which includes the dashboard's own calls to the
  orchestrator, next to the orchestrator's bare JSON answer for the same data;
- the SSE relay: for every event of a running task, when it arrives through the dashboard's
  same-origin relay minus when it arrives on a direct stream from the orchestrator.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import ServiceProcess, make_git_repo, new_stack_env  # noqa: E402

AGENT = "#!/bin/sh\nsleep 0.2\necho line >> notes.txt\necho wrote a line\n"


def timed_gets(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as http:
        http.get(url).raise_for_status()  # warm-up
        for _ in range(n):
            t0 = time.perf_counter()
            http.get(url).raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def row(name: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    return f"| {name} | {statistics.median(samples):.1f} | {p95:.1f} | {len(samples)} |"


def arrivals(url: str, out: dict[int, float], done: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=60)) as response:
        for line in response.iter_lines():
            if line.startswith("id:"):
                out[int(line[3:].strip())] = time.perf_counter()
            if line.startswith("event: end"):
                break
    done.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--tasks", type=int, default=30, help="tasks stored before the page timings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = new_stack_env(root)
        script = root / "agent.sh"
        script.write_text(AGENT)
        script.chmod(0o755)
        make_git_repo(env.workspace_root / "repo")
        env.set(RALPH_COMMAND_BACKEND=script, RALPH_MAX_CONCURRENT_TASKS=4, LOG_LEVEL="warning")
        procs = [ServiceProcess("ralph-wiggum", env).wait_healthy(), ServiceProcess("dashboard", env).wait_healthy()]
        ralph, dash = env.url("ralph-wiggum"), env.url("dashboard")
        try:
            body = {"prompt": "write a line", "backend": "command", "workspace": "repo", "check_command": "test -s notes.txt"}
            ids = [httpx.post(ralph + "/tasks", json=body, timeout=10).json()["task_id"] for _ in range(args.tasks)]
            deadline = time.monotonic() + 120
            while httpx.get(ralph + "/stats", timeout=10).json()["by_status"].get("completed", 0) < args.tasks:
                if time.monotonic() > deadline:
                    raise SystemExit("tasks did not complete in 120 s")
                time.sleep(0.5)
            task = ids[-1]
            lines = [
                "| request | median ms | p95 ms | n |",
                "|---|---|---|---|",
                row("orchestrator `GET /tasks/{id}` (JSON)", timed_gets(f"{ralph}/tasks/{task}", args.requests)),
                row("orchestrator `GET /tasks?limit=20` (JSON)", timed_gets(f"{ralph}/tasks?limit=20", args.requests)),
                row("dashboard Overview `/` (4 health probes + /stats)", timed_gets(dash + "/", args.requests)),
                row("dashboard Tasks `/tasks` (20 rows)", timed_gets(dash + "/tasks", args.requests)),
                row("dashboard Task page `/tasks/{id}`", timed_gets(f"{dash}/tasks/{task}", args.requests)),
                row("dashboard task fragment (each live update)", timed_gets(f"{dash}/fragments/tasks/{task}", args.requests)),
                row("dashboard Config editor `/config`", timed_gets(dash + "/config", args.requests)),
            ]
            # Relay overhead: a task watched through both streams at once. It waits for approval
            # before each iteration, so both streams are connected before anything happens;
            # only events created after that are counted.
            watched = dict(body, check_command="test $(wc -l < notes.txt) -ge 5", max_iterations=5, require_approval=True)
            task = httpx.post(ralph + "/tasks", json=watched, timeout=10).json()["task_id"]
            direct: dict[int, float] = {}
            relayed: dict[int, float] = {}
            finished = [threading.Event(), threading.Event()]
            threads = [
                threading.Thread(target=arrivals, args=(f"{ralph}/tasks/{task}/events", direct, finished[0])),
                threading.Thread(target=arrivals, args=(f"{dash}/tasks/{task}/events", relayed, finished[1])),
            ]
            for t in threads:
                t.start()
            time.sleep(1.0)
            baseline = max(e["id"] for e in httpx.get(f"{ralph}/tasks/{task}/events.json", timeout=10).json())
            while not all(f.is_set() for f in finished):
                view = httpx.get(f"{ralph}/tasks/{task}", timeout=10).json()
                if view["status"] == "awaiting_approval":
                    httpx.post(f"{ralph}/tasks/{task}/approve", json={"approved": True}, timeout=10)
                time.sleep(0.05)
            for t in threads:
                t.join(120)
            deltas = [(relayed[i] - direct[i]) * 1000 for i in direct if i in relayed and i > baseline]
            lines.append(row("SSE event via dashboard relay minus direct", deltas))
            print("\n".join(lines))
        finally:
            for p in reversed(procs):
                p.stop()


if __name__ == "__main__":
    main()
