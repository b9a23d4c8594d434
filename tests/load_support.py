"""A burst of tasks against a real orchestrator while clients read its API, and what a process
holds: shared by the load test (ralph_wiggum/test_load.py), bench/bench_load.py and bench/soak.py.

Every task runs AGENT with the `command` backend: one line per iteration, and the completion
promise after the second, so a task that ran as it should is `completed` after exactly
ITERATIONS iterations, with ITERATIONS checkpoints on its branch.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from support import git, make_git_repo

ITERATIONS = 2
PROMISE = "DONE"
AGENT = f"""#!/bin/sh
echo "line $AISTACK_ITERATION" >> notes.txt
if [ "$AISTACK_ITERATION" -ge {ITERATIONS} ]; then echo "<promise>{PROMISE}</promise>"; fi
"""
TERMINAL = frozenset({"completed", "exhausted", "failed", "stopped", "rejected"})


def write_agent(path: Path, text: str = AGENT) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_repos(workspace_root: Path, count: int) -> list[str]:
    """`count` repositories under the workspace root; tasks share them, as a team's would."""
    names = [f"repo{i}" for i in range(count)]
    for name in names:
        make_git_repo(workspace_root / name)
    return names


def submit_all(client: httpx.Client, repos: list[str], count: int) -> list[str]:
    """Queue `count` tasks as fast as one client can, spread over `repos`; their ids."""
    ids = []
    for i in range(count):
        body = {"prompt": f"load task {i}", "backend": "command", "workspace": repos[i % len(repos)],
                "completion_promise": PROMISE, "max_iterations": ITERATIONS + 1}  # fmt: skip
        resp = client.post("/tasks", json=body)
        resp.raise_for_status()
        ids.append(resp.json()["task_id"])
    return ids


def wait_terminal(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict]:
    """Every task, once none is queued or running any more (two counts per poll, not a read per task)."""
    deadline = time.monotonic() + timeout

    def still(status: str) -> int:
        return client.get("/tasks", params={"limit": 1, "status": status}).json()["total"]

    while time.monotonic() < deadline and still("queued") + still("running"):
        time.sleep(0.5)
    tasks = {i: client.get(f"/tasks/{i}").json() for i in ids}
    late = {i: t["status"] for i, t in tasks.items() if t["status"] not in TERMINAL}
    if late:
        raise AssertionError(f"{len(late)} tasks not ended after {timeout:.0f} s: {dict(list(late.items())[:5])}")
    return tasks


class Readers:
    """`count` threads reading the API until stopped, each with its own connection: the task
    list, a task, its iterations, its events (JSON, and now and then the SSE stream, followed for
    a moment and dropped), the running count, each thread waiting `pause` seconds between reads.
    Every answer's status is counted and its time kept (SSE aside); 5xx answers and failed
    connections are kept with what they said."""

    def __init__(self, url: str, ids: list[str], count: int = 20, pause: float = 0.0):
        self.url, self.ids, self.count, self.pause = url, ids, count, pause
        self.statuses: Counter[int] = Counter()
        self.seconds: list[float] = []  # how long each answer took, SSE streams aside
        self.failures: list[str] = []  # 5xx answers and transport errors
        self.most_running = 0  # the largest number of `running` tasks any read saw
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def reads(self) -> int:
        return sum(self.statuses.values())

    def _read(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(30, read=30)) as client:
            while not self._stop.is_set():
                task = f"/tasks/{rng.choice(self.ids)}" if self.ids else None
                kind = rng.random()
                try:
                    if task is None or kind < 0.2:
                        self._note("GET /tasks", client.get("/tasks", params={"limit": 50}))
                    elif kind < 0.45:
                        self._note("GET task", client.get(task))
                    elif kind < 0.65:
                        self._note("GET iterations", client.get(task + "/iterations"))
                    elif kind < 0.85:
                        self._note("GET events.json", client.get(task + "/events.json"))
                    elif kind < 0.95:
                        resp = client.get("/tasks", params={"limit": 1, "status": "running"})
                        if self._note("GET running", resp):
                            with self._lock:
                                self.most_running = max(self.most_running, resp.json()["total"])
                    else:
                        self._follow(client, task + "/events")
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(f"{task}: {type(exc).__name__}: {exc}")
                self._stop.wait(self.pause)

    def _follow(self, client: httpx.Client, path: str) -> None:
        """The task's SSE stream for up to 2 s (to its `end` if it comes first), then hang up."""
        deadline = time.monotonic() + 2
        try:
            with client.stream("GET", path, timeout=httpx.Timeout(5, read=2)) as resp:
                self._note("GET events (SSE)", resp)
                for line in resp.iter_lines():
                    if line == "event: end" or time.monotonic() > deadline:
                        break
        except httpx.ReadTimeout:
            pass  # no event within 2 s: hanging up is the point

    def _note(self, what: str, resp: httpx.Response) -> bool:
        with self._lock:
            self.statuses[resp.status_code] += 1
            if what != "GET events (SSE)":
                self.seconds.append(resp.elapsed.total_seconds())
            if resp.status_code >= 500:
                self.failures.append(f"{what} {resp.request.url.path}: {resp.status_code} {resp.read()[:300]!r}")
        return resp.status_code < 400


def audit(client: httpx.Client, ids: list[str], workspace_root: Path) -> list[str]:
    """What is wrong with the ended tasks, checked against the API and git: each one completed
    after exactly ITERATIONS iterations, numbered 1..n once each (records, start and finish
    events), its branch holding one line per iteration, its worktree gone."""
    problems, expected = [], list(range(1, ITERATIONS + 1))
    total = client.get("/tasks", params={"limit": 1}).json()["total"]
    if total != len(ids):
        problems.append(f"the API lists {total} tasks, {len(ids)} were submitted")
    for task_id in ids:
        task = client.get(f"/tasks/{task_id}").json()
        numbers = [it["number"] for it in client.get(f"/tasks/{task_id}/iterations").json()]
        events = client.get(f"/tasks/{task_id}/events.json").json()
        started = [e["data"]["iteration"] for e in events if e["type"] == "iteration_started"]
        finished = [e["data"]["iteration"] for e in events if e["type"] == "iteration_finished"]
        if (task["status"], task["iteration"]) != ("completed", ITERATIONS):
            problems.append(f"{task_id}: {task['status']} after {task['iteration']} iterations ({task['error']})")
        for what, seen in (("iterations", numbers), ("iteration_started", started), ("iteration_finished", finished)):
            if seen != expected:
                problems.append(f"{task_id}: {what} {seen}, expected {expected}")
        branch = f"aistack/{task_id}:notes.txt"
        lines = git(workspace_root / Path(task["workspace"]).name, "show", branch).splitlines()
        if lines != [f"line {n}" for n in expected]:
            problems.append(f"{task_id}: notes.txt on its branch is {lines}")
        if task["worktree"] and Path(task["worktree"]).exists():
            problems.append(f"{task_id}: worktree {task['worktree']} left behind")
    return problems
