"""What the benchmarks share: free ports, a real orchestrator process, `wrk`, and the report line.

Every figure is printed beside an anchor measured in the same run on the same machine (a plain
shell loop, a bare FastAPI app), because on a shared 2-core box only the ratio is comparable
from one run to the next.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STACK_PREFIXES = ("RALPH_", "AIDER_", "LLAMA_CPP_", "AISTACK_", "WORKSPACE_", "DASHBOARD_", "STARTUP_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "init")
    return path


def clean_environ(**extra: str) -> dict[str, str]:
    """The caller's environment without stack settings: only the benchmark's .env configures a service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STACK_PREFIXES) or k == "AISTACK_CACHE_DIR"}
    return {**env, **extra}


def start_ralph(tmp: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """A real `aistack serve ralph-wiggum` with its own data dir, on a free port."""
    port = free_port()
    values = {
        "AISTACK_DATA_DIR": str(tmp / f"data-{port}"),
        "WORKSPACE_ROOT": str(tmp / "ws"),
        "RALPH_WIGGUM_PORT": str(port),
        "AIDER_WRAPPER_PORT": str(free_port()),
        "STARTUP_DEPENDENCY_CHECK": "false",
        "LOG_LEVEL": "warning",
        **settings,
    }
    env_file = tmp / f"{port}.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    proc = subprocess.Popen([sys.executable, "-m", "aistack", "serve", "ralph-wiggum"],
                            env=clean_environ(AISTACK_ENV_FILE=str(env_file)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def start_bare(tmp: Path, task: dict) -> tuple[subprocess.Popen, str]:
    """The anchor: a bare FastAPI app on the same uvicorn, answering a task of the same size."""
    port = free_port()
    (tmp / "bare_app.py").write_text(
        "from fastapi import FastAPI\n"
        "app = FastAPI()\n"
        f"TASK = {json.dumps(task)!r}\n"
        "import json; TASK = json.loads(TASK)\n"
        "@app.get('/health')\n"
        "def health():\n    return {'status': 'ok'}\n"
        "@app.get('/tasks/{task_id}')\n"
        "async def task(task_id: str):\n    return TASK\n"
        "@app.post('/tasks', status_code=202)\n"
        "async def submit(body: dict):\n    return {'task_id': 'x', 'status': 'queued', 'message': 'queued'}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--log-level", "warning"],
                            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def hammer(url: str, path: str, clients: int, seconds: int, body: dict | None = None) -> dict:
    """`wrk` (C, Debian's package) with `clients` connections for `seconds`: latency percentiles
    and throughput. A load generator in Python would eat the cores it measures."""
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", url + path]
    if body is not None:
        script = Path(tempfile.mkdtemp()) / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{json.dumps(body)}]]\n')
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


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    met = ratio >= target if higher_is_better else ratio <= target
    return f"{'met' if met else 'NOT met'} (target {'≥' if higher_is_better else '≤'} {target:g}×)"


def commit_line() -> str:
    """Which code the figures are true for."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    return (
        f"commit {head or '?'}{' (with uncommitted changes)' if dirty.strip() else ''}, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, load {load:.1f}"
    )
