"""Many processes on one PostgreSQL: an API replica (`--role api`) and workers (`--role worker`),
real processes, real git, the `command` backend. A worker killed with kill -9 mid-iteration
loses only that iteration; a stop sent to the API ends the iteration on the worker; events a
worker writes stream from the API; PostgreSQL going away fails no task and spends no iteration."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from support import ServiceProcess, StackEnv, alive, free_port, git, make_git_repo, new_stack_env, wait_until

pytestmark = pytest.mark.timeout(300)

SLOW_AGENT = '#!/bin/sh\necho $$ >> "{root}/agents"\necho "line $AISTACK_ITERATION" >> notes.txt\nsleep {seconds}\necho done\n'
FOUR_LINES = "test $(wc -l < notes.txt) -ge 4"


@pytest.fixture
def cluster(tmp_path: Path, postgres_server):
    """start(role, worker_id=None) → a ralph-wiggum process on the suite's PostgreSQL, its own port."""
    url = postgres_server.database()
    env = new_stack_env(tmp_path).set(
        AISTACK_DATABASE_URL=url, RALPH_LEASE_SECONDS=3, RALPH_MAX_CONCURRENT_TASKS=2, RALPH_SANDBOX="off"
    )  # fmt: skip - the agents note their pids outside their trees
    started: list[ServiceProcess] = []

    def start(role: str, worker_id: str = "", wait: bool = True) -> ServiceProcess:
        extra = {"RALPH_WIGGUM_PORT": str(free_port()), "RALPH_WORKER_ID": worker_id}
        proc = ServiceProcess("ralph-wiggum", env, extra, args=("--role", role))
        started.append(proc)
        return proc.wait_healthy(60) if wait else proc

    start.env, start.url = env, url  # type: ignore[attr-defined]
    yield start
    for proc in reversed(started):
        proc.stop()


def agent(env: StackEnv, seconds: float) -> None:
    script = env.root / "agent.sh"
    script.write_text(SLOW_AGENT.format(root=env.root, seconds=seconds))
    script.chmod(0o755)
    env.set(RALPH_COMMAND_BACKEND=str(script))


def query(url: str, sql: str, **params) -> list:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            return list(db.execute(text(sql), params))
    finally:
        engine.dispose()


def submit(api: httpx.Client, workspace: str, **body) -> str:
    resp = api.post("/tasks", json={"prompt": "add notes", "backend": "command", "workspace": workspace, **body})
    assert resp.status_code == 202, resp.text
    return resp.json()["task_id"]


def terminal(api: httpx.Client, task_ids: list[str], timeout: float = 120) -> list[dict]:
    tasks: list[dict] = []

    def done() -> bool:
        tasks[:] = [api.get(f"/tasks/{task_id}").json() for task_id in task_ids]
        return all(task["status"] in ("completed", "exhausted", "failed", "stopped") for task in tasks)

    assert wait_until(done, timeout, interval=0.5), tasks
    return tasks


def assert_each_iteration_once_with_its_checkpoint(api: httpx.Client, env: StackEnv, task: dict, n: int) -> None:
    assert task["status"] == "completed" and task["iteration"] == n, task
    assert [it["number"] for it in api.get(f"/tasks/{task['id']}/iterations").json()] == list(range(1, n + 1))
    repo = env.workspace_root / Path(task["workspace"]).name
    branch = f"aistack/{task['id']}"
    assert git(repo, "show", f"{branch}:notes.txt").splitlines() == [f"line {i}" for i in range(1, n + 1)]
    assert len(git(repo, "log", "--format=%H", branch).splitlines()) == n + 1  # a checkpoint per iteration, and the base


def test_a_worker_killed_mid_iteration_loses_only_that_iteration_and_another_takes_over(cluster):
    env = cluster.env
    agent(env, 0.8)
    api_proc, worker_a, _ = cluster("api"), cluster("worker", "a"), cluster("worker", "b")
    api = httpx.Client(base_url=api_proc.url, timeout=10)
    task_ids = [submit(api, make_git_repo(env.workspace_root / f"repo{i}").name, check_command=FOUR_LINES) for i in range(4)]

    def a_is_mid_iteration() -> list[str]:
        held = [
            row[0]
            for row in query(cluster.url, "SELECT task_id FROM leases WHERE worker_id = 'a' AND expires_at > now() AT TIME ZONE 'UTC'")
        ]
        return [task_id for task_id in held
                if any(e["type"] == "iteration_started" and e["data"]["iteration"] == 2
                       for e in api.get(f"/tasks/{task_id}/events.json").json())]  # fmt: skip

    assert wait_until(a_is_mid_iteration, 60, interval=0.2)
    victims = a_is_mid_iteration()
    worker_a.kill9()

    with api.stream("GET", f"/tasks/{victims[0]}/events") as stream:  # written by worker b, streamed by the API replica
        kinds = [line.removeprefix("event: ") for line in stream.iter_lines() if line.startswith("event: ")]
    assert kinds[-1] == "end" and "iteration_finished" in kinds

    for task in terminal(api, task_ids):
        assert_each_iteration_once_with_its_checkpoint(api, env, task, 4)
    for victim in victims:  # the interrupted iteration ran again, on b, as its second attempt
        starts = [e["data"] for e in api.get(f"/tasks/{victim}/events.json").json() if e["type"] == "iteration_started"]
        assert any(s["attempt"] == 2 for s in starts)
    holders = {row[0] for row in query(cluster.url, "SELECT worker_id FROM leases WHERE task_id = ANY(:ids)", ids=victims)}
    assert holders == {"b"}
    api.close()


def test_a_stop_sent_to_the_api_replica_ends_the_iteration_on_the_worker(cluster):
    env = cluster.env
    agent(env, 120)
    api_proc, _ = cluster("api"), cluster("worker", "w")
    api = httpx.Client(base_url=api_proc.url, timeout=10)
    task_id = submit(api, make_git_repo(env.workspace_root / "repo").name)
    assert wait_until(lambda: (env.root / "agents").exists(), 60)
    pid = int((env.root / "agents").read_text().split()[0])
    assert api.post(f"/tasks/{task_id}/stop").status_code == 202
    (task,) = terminal(api, [task_id], timeout=30)
    assert task["status"] == "stopped" and task["iteration"] == 0
    assert wait_until(lambda: not alive(pid), 10)
    api.close()


def test_postgresql_going_away_fails_no_task_and_spends_no_iteration(cluster, postgres_server):
    env = cluster.env
    agent(env, 1.5)
    api_proc, worker = cluster("api"), cluster("worker", "w")
    api = httpx.Client(base_url=api_proc.url, timeout=10)
    task_id = submit(api, make_git_repo(env.workspace_root / "repo").name, check_command=FOUR_LINES)
    assert wait_until(lambda: api.get(f"/tasks/{task_id}").json()["iteration"] >= 1, 60, interval=0.2)
    postgres_server.stop()
    try:
        down = api.get(f"/tasks/{task_id}")
        assert down.status_code == 503 and "database unreachable" in down.json()["detail"], down.text
        time.sleep(4)  # longer than an iteration and the lease: the worker meets the outage mid-task
        assert worker.proc.poll() is None and api_proc.proc.poll() is None
    finally:
        postgres_server.resume()
    (task,) = terminal(api, [task_id])
    assert_each_iteration_once_with_its_checkpoint(api, env, task, 4)
    assert "failed" not in json.dumps(api.get(f"/tasks/{task_id}/events.json").json())
    api.close()


def test_a_worker_started_while_postgresql_is_down_waits_for_it(cluster, postgres_server):
    """It waits with backoff, saying so once, and takes tasks once the database answers; it used
    to exit at once ("cannot open the database"), leaving the loop to whatever restarts it."""
    env = cluster.env
    agent(env, 0.1)
    postgres_server.stop()
    try:
        worker = cluster("worker", "w", wait=False)
        assert wait_until(lambda: "does not answer" in worker.log() or worker.proc.poll() is not None, 60, interval=0.2)
        assert worker.proc.poll() is None, worker.log()  # waiting, not gone
    finally:
        postgres_server.resume()
    worker.wait_healthy(60)
    api = httpx.Client(base_url=cluster("api").url, timeout=10)
    task_id = submit(api, make_git_repo(env.workspace_root / "repo").name, check_command="test -s notes.txt")
    (task,) = terminal(api, [task_id])
    assert task["status"] == "completed" and task["iteration"] == 1
    log = worker.log()
    assert log.count("does not answer") == 1 and "Connection refused" in log and "answered after" in log, log  # one line, not one per try
    assert postgres_server.password not in log
    api.close()


def test_chaos_workers_killed_at_random_lose_nothing(cluster):
    """3 workers, 30 tasks; every few seconds one worker, picked at random, is killed with kill -9
    and a new one (a new RALPH_WORKER_ID, as a restarted process gets) starts, for a bounded time.
    At the end every task is terminal, each has its iterations 1..n exactly once, and its branch
    holds one checkpoint per iteration that changed something."""
    env, rng = cluster.env, random.Random(10)
    agent(env, 0.3)
    repos = [make_git_repo(env.workspace_root / f"repo{i}").name for i in range(3)]
    api_proc = cluster("api")
    workers = [cluster("worker", f"w{i}") for i in range(3)]
    api = httpx.Client(base_url=api_proc.url, timeout=30)
    task_ids = [submit(api, repos[n % 3], check_command="test $(wc -l < notes.txt) -ge 3") for n in range(30)]
    kills, deadline = 0, time.monotonic() + 40
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(2, 5))
        workers.pop(rng.randrange(len(workers))).kill9()  # maybe one still starting: a crash at any time
        kills += 1
        workers.append(cluster("worker", f"w{2 + kills}", wait=False))
    workers[-1].wait_healthy(60)
    tasks = terminal(api, task_ids, timeout=240)
    for task in tasks:
        assert_each_iteration_once_with_its_checkpoint(api, env, task, 3)
        changing = [it for it in api.get(f"/tasks/{task['id']}/iterations").json() if it["checkpoint_commit"]]
        assert len(changing) == 3
    assert kills >= 5
    api.close()
