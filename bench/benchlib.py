"""What the benchmarks share: a real orchestrator process (started as the tests start services),
the bare anchor app, `wrk`, and the report line.

Every figure is printed beside an anchor measured in the same run on the same machine (a plain
shell loop, a bare FastAPI app), because on a shared 2-core box only the ratio is comparable
from one run to the next.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the benchmarks start services as the tests do: `support`

from support import ServiceProcess, free_port, new_stack_env, wait_until  # noqa: E402


def start_ralph(root: Path, **settings: str) -> ServiceProcess:
    """A real `aistack serve ralph-wiggum` with its own data dir and workspace root under `root`,
    on free ports, configured only by its .env (its log is kept: a crash at start says why)."""
    ralph = ServiceProcess("ralph-wiggum", new_stack_env(root).set(LOG_LEVEL="warning", **settings))
    try:
        return ralph.wait_healthy()
    except BaseException:
        ralph.stop()
        raise


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
    if not wait_until(lambda: _answers(url), 60):
        raise SystemExit(f"the bare app at {url} did not come up (exit {proc.poll()})")
    return proc, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def hammer(url: str, path: str | list[str], clients: int, seconds: int, body: dict | None = None) -> dict:
    """`wrk` (C, Debian's package) with `clients` connections for `seconds`: latency percentiles
    and throughput. A load generator in Python would eat the cores it measures. Given a list of
    paths, each request takes one of them at random."""
    cmd = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", url + (path if isinstance(path, str) else "/")]
    with tempfile.TemporaryDirectory() as tmp:
        lua = ""
        if body is not None:
            lua += f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{json.dumps(body)}]]\n'
        if not isinstance(path, str):
            lua += f"paths = {{{', '.join(json.dumps(p) for p in path)}}}\n"
            lua += "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n"
        if lua:
            script = Path(tmp) / "requests.lua"
            script.write_text(lua)
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
