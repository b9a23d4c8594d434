"""Benchmark of the stack lifecycle (process runtime), on real services.

    .venv/bin/python bench/bench_lifecycle.py [--runs 3] [--model qwen2.5-coder-1.5b]

Measures, in an isolated data dir with free ports:
- `aistack up` of the whole stack until every service answers /health 200 (model already cached);
- `aistack deploy ralph-wiggum` of a good release (validate → build → swap → healthy);
- `aistack rollback ralph-wiggum`;
- a deploy whose /health never turns 200: time from the failed health check until the previous
  release is healthy again (`restore_s` in the deploy history).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT
from support import StackEnv, child_env, new_stack_env

SRC = ROOT / "src"

SICK_HEALTH = """
_real_serve = serve

def serve(app, host, port, log_level="info"):
    @app.middleware("http")
    async def _sick(request, call_next):  # /health never turns 200
        if request.url.path == "/health":
            return JSONResponse({"status": "starting"}, status_code=503)
        return await call_next(request)

    _real_serve(app, host, port, log_level)
"""


def run(env: StackEnv, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "aistack", *args], env=child_env(env), capture_output=True, text=True, timeout=900)
    return time.monotonic() - started, proc


def must(step: str, result: tuple[float, subprocess.CompletedProcess], ok: bool = True) -> float:
    took, proc = result
    if (proc.returncode == 0) != ok:
        sys.exit(f"{step}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return took


def source_copy(dest: Path, inject: str = "") -> Path:
    shutil.copytree(SRC / "aistack", dest / "src" / "aistack", ignore=shutil.ignore_patterns("__pycache__"))
    if inject:
        web = dest / "src" / "aistack" / "web.py"
        web.write_text(web.read_text() + inject)
    return dest


def last_deploy(env: StackEnv) -> dict:
    return json.loads((env.data_dir / "deploys.jsonl").read_text().splitlines()[-1])


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--health-timeout", default="10", help="for the failing deploy")
    parser.add_argument("--podman", action="store_true", help="also deploy ralph-wiggum as a container")
    parser.add_argument("--base-image", default="localhost/aistack-base:bookworm")
    args = parser.parse_args()

    ups, deploys, rollbacks, restores, failed_total = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        root = Path(tmp)
        env = new_stack_env(root).set(LLAMA_CPP_MODEL=args.model, STARTUP_DEPENDENCY_CHECK=True)  # as a user's stack
        try:
            for _ in range(args.runs):
                took, proc = run(env, "up")
                ups.append(must("up", (took, proc)))
                up_table = proc.stdout  # per service: how long until its /health said 200
                must("down", run(env, "down"))
            must("up", run(env, "up"))
            for i in range(args.runs):
                must("deploy", run(env, "deploy", "ralph-wiggum", "--source", str(source_copy(root / f"good{i}"))))
                deploys.append(last_deploy(env)["duration_s"])
                must("rollback", run(env, "rollback", "ralph-wiggum"))
                rollbacks.append(last_deploy(env)["duration_s"])
                sick = source_copy(root / f"sick{i}", SICK_HEALTH)
                must(
                    "failing deploy",
                    run(env, "deploy", "ralph-wiggum", "--source", str(sick), "--health-timeout", args.health_timeout),
                    ok=False,
                )
                entry = last_deploy(env)
                restores.append(entry["restore_s"])
                failed_total.append(entry["duration_s"])
            if args.podman:
                podman_rows = bench_podman(env, root, args)
        finally:
            run(env, "down")

    print(up_table)
    print(f"| `aistack up`, whole stack until all healthy ({args.model} cached) | {fmt(ups)} | ≤ 10 s |")
    print(f"| `aistack deploy ralph-wiggum`, good release | {fmt(deploys)} | — |")
    print(f"| `aistack rollback ralph-wiggum` | {fmt(rollbacks)} | — |")
    print(f"| failed deploy (/health never 200): failed check → previous release healthy | {fmt(restores)} | ≤ 15 s |")
    print(f"| failed deploy, whole command (health timeout {args.health_timeout} s) | {fmt(failed_total)} | — |")
    if args.podman:
        print(*podman_rows, sep="\n")


def bench_podman(env: StackEnv, root: Path, args) -> list[str]:
    """ralph-wiggum as the container local-ai-ralph-wiggum: deploys (image build with cached
    dependency layer), rollback, and the restore after a failed health check."""
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))
    # the other services run as processes on the host, not on the container network
    env.set(RALPH_WIGGUM_API_KEY="bench-key", STARTUP_DEPENDENCY_CHECK=False)
    podman = ["--runtime", "podman"]
    base = ["--base-image", args.base_image]
    run(env, "down", "ralph-wiggum")  # the process runtime's instance would hold the port
    deploys, rollbacks, restores = [], [], []
    try:
        for i in range(args.runs):
            must("podman deploy", run(env, "deploy", "ralph-wiggum", *podman, *base, "--source", str(source_copy(root / f"pgood{i}"))))
            deploys.append(last_deploy(env)["duration_s"])
            if i:
                must("podman rollback", run(env, "rollback", "ralph-wiggum", *podman))
                rollbacks.append(last_deploy(env)["duration_s"])
            sick = source_copy(root / f"psick{i}", SICK_HEALTH)
            must(
                "podman failing deploy",
                run(env, "deploy", "ralph-wiggum", *podman, *base, "--source", str(sick), "--health-timeout", args.health_timeout),
                ok=False,
            )
            restores.append(last_deploy(env)["restore_s"])
    finally:
        for name in ("local-ai-ralph-wiggum", "local-ai-ralph-wiggum-backup"):  # one at a time: a missing one fails the call
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    rows = [f"| podman: `aistack deploy ralph-wiggum --runtime podman` (image build, dependency layer cached) | {fmt(deploys)} | — |"]
    if rollbacks:
        rows.append(f"| podman: `aistack rollback ralph-wiggum --runtime podman` | {fmt(rollbacks)} | — |")
    rows.append(f"| podman: failed deploy, failed check → backup container healthy | {fmt(restores)} | ≤ 15 s |")
    return rows


if __name__ == "__main__":
    main()
