"""Soak: tasks without pause for a long while, each service's memory and open files sampled, and
at the end whether anything leaked (not a test: run it for the record, docs/reliability.md).

    .venv/bin/python bench/soak.py [--minutes 30] [--interval 60] [--concurrency 2] [--report FILE]

Services: a real `aistack serve ralph-wiggum` and `aistack serve aider-wrapper`, configured only by
their .env as the tests do. No LLM runs: the wrapper's requests end at its probe of llama-server
("not reachable", a transient error), so aider itself is never started. Tasks, kept
2 × concurrency in flight, in turns:
- 7 of 10: the `command` backend, two iterations (a line each) then the completion promise;
- 1 of 10: the same with a check command;
- 1 of 10: an agent that sleeps with a helper in the background, stopped by the driver once it
  runs (its whole process group must go);
- 1 of 10: the `aider` backend: ralph calls the wrapper, which answers a transient error, until
  RALPH_TRANSIENT_RETRY_SECONDS (3 s here) is spent and the task fails.
Meanwhile four readers read the API (tests/load_support.Readers: lists, tasks, events, SSE
streams dropped mid-way) and the wrapper gets a direct /api/execute now and then.

Every `--interval` seconds: VmRSS, open file descriptors, threads and child processes of each
service, ralph's worktree folders, its running tasks, and its database and WAL sizes. At the end,
with no task left: the checks below, a JSON report and a table.
- memory flat after warm-up: the last third of the samples' mean RSS within 10% of the second
  third's (the first third is the warm-up);
- open files: the last third's mean count no more than FD_SLACK above the second third's (the
  count moves with the connections and pipes of the moment), and once idle again no more than
  FD_SLACK above the count at rest before the first task;
- no leaked processes: no descendant of either service, and no process at all working in the
  data dir or the workspaces;
- no leaked worktrees: no worktree folder and no registered git worktree beyond each repository's
  own, with no task running;
- the database passes `PRAGMA integrity_check`, and every task ended as its kind should.
Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from benchlib import commit_line
from load_support import TERMINAL, Readers, write_agent
from support import ServiceProcess, StackEnv, descendants, git, make_git_repo, new_stack_env, open_fds, rss_kib

MEMORY_TOLERANCE = 0.10
FD_SLACK = 4
REPOS = 3
AGENT = """#!/bin/sh
prompt=$(cat)
case "$prompt" in
  slow*) sleep 300 & wait ;;
esac
echo "line $AISTACK_ITERATION" >> notes.txt
if [ "$AISTACK_ITERATION" -ge 2 ]; then echo "<promise>DONE</promise>"; fi
"""
# kind -> (request body, the status it must end in)
KINDS = {
    "promise": ({"backend": "command", "completion_promise": "DONE", "max_iterations": 3}, "completed"),
    "check": ({"backend": "command", "check_command": "test $(wc -l < notes.txt) -ge 2", "max_iterations": 3}, "completed"),
    "stopped": ({"backend": "command", "max_iterations": 3}, "stopped"),
    "aider": ({"backend": "aider", "max_iterations": 1}, "failed"),
}
TURNS = ["promise"] * 7 + ["check", "stopped", "aider"]


@dataclass
class Sample:
    minute: float
    rss_kib: dict[str, int]
    fds: dict[str, int]
    threads: dict[str, int]
    children: dict[str, int]
    worktrees: int
    running: int
    ended: int
    db_kib: int
    wal_kib: int


@dataclass
class Driver:
    """Keeps tasks in flight, stops the slow ones once they run, and remembers how each ended."""

    client: httpx.Client
    repos: list[str]
    in_flight: int
    ids: list[str] = field(default_factory=list)  # shared with the readers
    kinds: dict[str, str] = field(default_factory=dict)
    ended: dict[str, dict] = field(default_factory=dict)
    _turns: itertools.cycle = field(default_factory=lambda: itertools.cycle(TURNS))

    def step(self, submit: bool) -> None:
        for task_id in [i for i in self.ids if i not in self.ended]:
            task = self.client.get(f"/tasks/{task_id}").json()
            if task["status"] in TERMINAL:
                self.ended[task_id] = task
            elif self.kinds[task_id] == "stopped" and task["status"] == "running":
                self.client.post(f"/tasks/{task_id}/stop")
        while submit and len(self.ids) - len(self.ended) < self.in_flight:
            kind = next(self._turns)
            body = {**KINDS[kind][0], "prompt": f"{'slow' if kind == 'stopped' else 'append'} {len(self.ids)}",
                    "workspace": self.repos[len(self.ids) % len(self.repos)]}  # fmt: skip
            resp = self.client.post("/tasks", json=body)
            resp.raise_for_status()
            self.ids.append(resp.json()["task_id"])
            self.kinds[self.ids[-1]] = kind

    @property
    def pending(self) -> int:
        return len(self.ids) - len(self.ended)

    def wrong_endings(self) -> list[str]:
        wrong = [(i, t) for i, t in self.ended.items() if t["status"] != KINDS[self.kinds[i]][1]]
        return [f"{i} ({self.kinds[i]}): {t['status']}, {t['error']}" for i, t in wrong]


def start(tmp: Path, concurrency: int) -> tuple[StackEnv, dict[str, ServiceProcess]]:
    agent = write_agent(tmp / "agent.sh", AGENT)
    env = new_stack_env(tmp / "stack").set(
        LOG_LEVEL="warning", RALPH_COMMAND_BACKEND=str(agent), RALPH_MAX_CONCURRENT_TASKS=concurrency,
        RALPH_TRANSIENT_RETRY_SECONDS=3,
    )  # fmt: skip
    services: dict[str, ServiceProcess] = {}
    try:
        for name in ("aider-wrapper", "ralph-wiggum"):
            services[name] = ServiceProcess(name, env)
            services[name].wait_healthy()
    except BaseException:
        stop(services)
        raise
    return env, services


def stop(services: dict[str, ServiceProcess]) -> None:
    for proc in services.values():
        proc.stop()


def threads(pid: int) -> int:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Threads:"))
    return int(line.split()[1])


def kib(path: Path) -> int:
    return path.stat().st_size // 1024 if path.exists() else 0


def sample(t0: float, env: StackEnv, services: dict[str, ServiceProcess], client: httpx.Client, ended: int) -> Sample:
    for name, proc in services.items():
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.proc.returncode}:\n{proc.log()[-3000:]}")
    pids = {name: proc.proc.pid for name, proc in services.items()}
    worktrees = env.data_dir / "worktrees"
    return Sample(
        minute=round((time.monotonic() - t0) / 60, 2),
        rss_kib={n: rss_kib(p) for n, p in pids.items()},
        fds={n: open_fds(p) for n, p in pids.items()},
        threads={n: threads(p) for n, p in pids.items()},
        children={n: len(descendants(p)) for n, p in pids.items()},
        worktrees=len(list(worktrees.iterdir())) if worktrees.exists() else 0,
        running=client.get("/tasks", params={"limit": 1, "status": "running"}).json()["total"],
        ended=ended,
        db_kib=kib(env.data_dir / "aistack.db"),
        wal_kib=kib(env.data_dir / "aistack.db-wal"),
    )


def poke_wrapper(url: str, workspace: str, stop_event: threading.Event) -> None:
    """A direct /api/execute every 2 s: validation, the run registry, the LLM probe."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop_event.wait(2):
            client.post("/api/execute", json={"prompt": "soak", "workspace": workspace})


def workers_in(roots: list[Path], own: set[int]) -> list[str]:
    """Processes (other than `own`) whose working directory lies under one of `roots`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        if int(entry.name) not in own and any(cwd.is_relative_to(root) for root in roots):
            found.append(f"{entry.name} in {cwd}: {cmd}")
    return found


def thirds(values: list[float]) -> tuple[list[float], list[float]]:
    n = len(values) // 3
    return values[n : 2 * n], values[2 * n :]


def checks(samples: list[Sample], at_rest: Sample, idle: Sample, env: StackEnv, services, driver: Driver) -> dict[str, str | None]:
    """Each check's name and None when it holds, else what is wrong."""
    found: dict[str, str | None] = {}
    loaded = [s for s in samples if s is not at_rest]
    for name in services:
        second, last = thirds([s.rss_kib[name] for s in loaded])
        ratio = statistics.mean(last) / statistics.mean(second) if second and last else 1.0
        found[f"{name}: memory flat"] = None if ratio <= 1 + MEMORY_TOLERANCE else f"last third {ratio:.2f}× the second third"
        second_fds, last_fds = thirds([s.fds[name] for s in loaded])
        grew = statistics.mean(last_fds) - statistics.mean(second_fds) if second_fds and last_fds else 0.0
        found[f"{name}: open files flat"] = None if grew <= FD_SLACK else f"{grew:.1f} more on average in the last third"
        rest = idle.fds[name] - at_rest.fds[name]
        found[f"{name}: open files back at rest"] = None if rest <= FD_SLACK else f"{rest} more than before the first task"
        left = descendants(services[name].proc.pid)
        found[f"{name}: no process left"] = None if not left else f"descendants {left}"
    own = {p.proc.pid for p in services.values()}
    strays = workers_in([env.data_dir, env.workspace_root], own)
    found["no process in the data dir or workspaces"] = None if not strays else "; ".join(strays[:5])
    registered = sum(len(git(env.workspace_root / f"repo{i}", "worktree", "list", "--porcelain").split("\n\n")) - 1 for i in range(REPOS))
    found["no worktree left"] = None if idle.worktrees == registered == 0 else f"{idle.worktrees} folders, {registered} registered"
    wrong = driver.wrong_endings()
    found["every task ended as its kind should"] = None if not wrong else f"{len(wrong)}: {wrong[:3]}"
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--report", type=Path, default=Path(tempfile.gettempdir()) / f"aistack-soak-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env, services = start(tmp, args.concurrency)
        try:
            repos = [make_git_repo(env.workspace_root / f"repo{i}").name for i in range(REPOS)]
            report = soak(args, env, services, repos)
        finally:
            stop(services)
        with sqlite3.connect(env.data_dir / "aistack.db") as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        report["checks"]["database integrity"] = None if integrity == "ok" else integrity
    report["passed"] = all(v is None for v in report["checks"].values())
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"report: {args.report}")
    return 0 if report["passed"] else 1


def soak(args: argparse.Namespace, env: StackEnv, services: dict[str, ServiceProcess], repos: list[str]) -> dict:
    ralph = services["ralph-wiggum"]
    with httpx.Client(base_url=ralph.url, timeout=30) as client:
        driver = Driver(client, repos, in_flight=2 * args.concurrency)
        t0 = time.monotonic()
        at_rest = sample(t0, env, services, client, 0)
        samples, next_sample = [at_rest], t0 + args.interval
        quiet = threading.Event()
        poker = threading.Thread(target=poke_wrapper, args=(services["aider-wrapper"].url, repos[0], quiet), daemon=True)
        print(HEADER, flush=True)
        with Readers(ralph.url, driver.ids, 4) as readers:
            poker.start()
            while time.monotonic() < t0 + args.minutes * 60:
                driver.step(submit=True)
                if time.monotonic() >= next_sample:
                    samples.append(sample(t0, env, services, client, len(driver.ended)))
                    next_sample += args.interval
                    print(row(samples[-1]), flush=True)
                time.sleep(0.2)
            quiet.set()
            deadline = time.monotonic() + 120
            while driver.pending and time.monotonic() < deadline:
                driver.step(submit=False)
                time.sleep(0.2)
        poker.join(30)
        time.sleep(2)  # the last releases (worktree removal) finish after the status is written
        idle = sample(t0, env, services, client, len(driver.ended))
        found = checks(samples, at_rest, idle, env, services, driver)
    found["no reader saw a server error"] = None if not readers.failures else "; ".join(readers.failures[:3])
    found["every task ended"] = None if not driver.pending else f"{driver.pending} still open"
    return {
        "commit": commit_line(),
        "minutes": args.minutes,
        "interval_seconds": args.interval,
        "concurrency": args.concurrency,
        "tasks": {
            "submitted": len(driver.ids),
            "by_kind": _count(driver.kinds.values()),
            "by_status": _count(t["status"] for t in driver.ended.values()),
            "iterations": sum(t["iteration"] for t in driver.ended.values()),
        },  # fmt: skip
        "reads": dict(readers.statuses),
        "rss_slope_kib_per_minute": slopes(samples[1:]),
        "samples": [asdict(s) for s in samples],
        "idle": asdict(idle),
        "checks": found,
    }


def slopes(loaded: list[Sample]) -> dict[str, float | None]:
    """Each service's RSS trend after the warm-up (least squares), for the record; the check is
    `memory flat`."""
    after = loaded[len(loaded) // 3 :]
    if len(after) < 2:
        return {name: None for name in loaded[0].rss_kib} if loaded else {}
    minutes = [s.minute for s in after]
    return {name: round(statistics.linear_regression(minutes, [s.rss_kib[name] for s in after]).slope, 1) for name in after[0].rss_kib}


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


HEADER = "minute  ralph RSS MiB  fds  thr  kids | wrapper RSS MiB  fds  thr | worktrees running  ended  db KiB  wal KiB"


def row(s: Sample) -> str:
    r, w = "ralph-wiggum", "aider-wrapper"
    return (f"{s.minute:6.1f}  {s.rss_kib[r] / 1024:12.1f} {s.fds[r]:4d} {s.threads[r]:4d} {s.children[r]:5d} | "
            f"{s.rss_kib[w] / 1024:15.1f} {s.fds[w]:4d} {s.threads[w]:4d} | {s.worktrees:9d} {s.running:7d} {s.ended:6d} "
            f"{s.db_kib:7d} {s.wal_kib:8d}")  # fmt: skip


def print_table(report: dict) -> None:
    print(f"\nsoak, {report['minutes']} min, samples every {report['interval_seconds']} s, {report['commit']}")
    print(HEADER)
    for s in [*report["samples"], report["idle"]]:
        print(row(Sample(**s)))
    print(f"tasks: {report['tasks']}")
    print(f"RSS after warm-up, KiB per minute: {report['rss_slope_kib_per_minute']}")
    for name, problem in report["checks"].items():
        print(f"  {'ok  ' if problem is None else 'FAIL'} {name}{'' if problem is None else ': ' + problem}")


if __name__ == "__main__":
    sys.exit(main())
