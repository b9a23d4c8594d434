"""Orchestrator benchmark (not a test): loop overhead per iteration and API latency under load.

    .venv/bin/python bench/bench_orchestrator.py [--iterations 100] [--clients 50] [--seconds 10]   (needs `wrk`)

1. A 100-iteration task whose agent is a no-op that appends a line, with a check command:
   wall time per iteration (agent + check + checkpoint commit + database), from the iterations'
   recorded durations and from the task's start/finish.
2. `GET /tasks/{id}` p50/p99 and `POST /tasks` throughput with 50 concurrent clients, against a
   bare FastAPI endpoint served the same way in the same run (the ratio is what matters on a
   shared machine). The loop is disabled for this part so only the API is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True, capture_output=True)


def start_ralph(tmp: Path, **extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    values = {
        "AISTACK_DATA_DIR": str(tmp / f"data-{port}"),
        "WORKSPACE_ROOT": str(tmp / "ws"),
        "RALPH_WIGGUM_PORT": str(port),
        "AIDER_WRAPPER_PORT": str(free_port()),
        "STARTUP_DEPENDENCY_CHECK": "false",
        "LOG_LEVEL": "warning",
        **extra,
    }
    env_file = tmp / f"{port}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RALPH_", "AISTACK_", "WORKSPACE_"))}
    env["AISTACK_ENV_FILE"] = str(env_file)
    proc = subprocess.Popen([sys.executable, "-m", "aistack", "serve", "ralph-wiggum"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def start_bare(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    app = tmp / "bare_app.py"
    app.write_text(textwrap.dedent("""
        from fastapi import FastAPI
        app = FastAPI()
        @app.get("/health")
        def health():
            return {"status": "ok"}
        @app.get("/tasks/{task_id}")
        def task(task_id: str):
            return {"id": task_id, "status": "queued", "iteration": 0}
        @app.post("/tasks", status_code=202)
        def submit(body: dict):
            return {"task_id": "x", "status": "queued"}
    """))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level", "warning"],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def loop_overhead(tmp: Path, iterations: int) -> dict:
    repo = tmp / "ws" / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "init")
    agent = tmp / "noop.sh"
    agent.write_text("#!/bin/sh\necho x >> log.txt\n")
    agent.chmod(0o755)
    proc, url = start_ralph(tmp, RALPH_COMMAND_BACKEND=str(agent), RALPH_MAX_ITERATIONS_CAP=str(iterations))
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            task_id = c.post("/tasks", json={"prompt": "append", "backend": "command", "workspace": "repo",
                                             "check_command": f"test $(wc -l < log.txt) -ge {iterations}",
                                             "max_iterations": iterations}).json()["task_id"]
            while (task := c.get(f"/tasks/{task_id}").json())["status"] not in ("exhausted", "completed", "failed"):
                time.sleep(0.2)
            its = c.get(f"/tasks/{task_id}/iterations").json()
    finally:
        proc.terminate()
        proc.wait(10)
    from datetime import datetime

    wall = (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])).total_seconds()
    durations = [it["duration_seconds"] * 1000 for it in its]
    return {
        "status": task["status"],
        "iterations": len(its),
        "checkpoints": sum(1 for it in its if it["checkpoint_commit"]),
        "per_iteration_ms_wall": wall * 1000 / len(its),
        "per_iteration_ms_p50": statistics.median(durations),
        "per_iteration_ms_p99": sorted(durations)[int(0.99 * (len(durations) - 1))],
    }


def hammer(url: str, path: str, clients: int, seconds: int, body: dict | None = None) -> dict:
    """`wrk` (C, from Debian's package) with `clients` connections for `seconds`: latency
    percentiles and throughput. A load generator in Python would eat the cores it measures."""
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", url + path]
    if body is not None:
        script = Path(tempfile.mkdtemp()) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(body)}]]\n"
        )
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "per_second": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
    }


def api_latency(tmp: Path, clients: int, seconds: int) -> dict:
    (tmp / "ws" / "api").mkdir(parents=True, exist_ok=True)
    repo = tmp / "ws" / "api"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "init")
    ralph, rurl = start_ralph(tmp, RALPH_LOOP_ENABLED="false", RALPH_COMMAND_BACKEND="true")
    bare, burl = start_bare(tmp)
    body = {"prompt": "p", "backend": "command", "workspace": "api", "max_iterations": 1}
    try:
        task_id = httpx.post(rurl + "/tasks", json=body).json()["task_id"]
        results = {
            "ralph GET /tasks/{id}": hammer(rurl, f"/tasks/{task_id}", clients, seconds),
            "bare GET /tasks/{id}": hammer(burl, f"/tasks/{task_id}", clients, seconds),
            "ralph POST /tasks": hammer(rurl, "/tasks", clients, seconds, body),
            "bare POST /tasks": hammer(burl, "/tasks", clients, seconds, body),
        }
    finally:
        for p in (ralph, bare):
            p.terminate()
            p.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        loop = loop_overhead(tmp, args.iterations)
        print(f"loop: {loop['iterations']} iterations ({loop['status']}, {loop['checkpoints']} checkpoints): "
              f"{loop['per_iteration_ms_wall']:.1f} ms/iteration wall, "
              f"p50 {loop['per_iteration_ms_p50']:.1f} ms, p99 {loop['per_iteration_ms_p99']:.1f} ms (target ≤ 40 ms)")
        api = api_latency(tmp, args.clients, args.seconds)
        for name, r in api.items():
            print(f"{name:24s} p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  {r['per_second']:7.0f} req/s"
                  f"  ({r['errors']} non-2xx)")
        ratio = api["ralph GET /tasks/{id}"]["p99_ms"] / api["bare GET /tasks/{id}"]["p99_ms"]
        print(f"GET p99 ratio ralph/bare: {ratio:.2f} (target p99 ≤ 25 ms)")


if __name__ == "__main__":
    main()
