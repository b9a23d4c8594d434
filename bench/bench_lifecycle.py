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

from benchlib import clean_environ, free_port

ROOT = Path(__file__).resolve().parents[1]
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


def write_env(root: Path, model: str) -> Path:
    values = {
        "AISTACK_DATA_DIR": root / "data",
        "WORKSPACE_ROOT": root / "workspaces",
        "LLAMA_CPP_MODEL": model,
        **{f"{s}_HOST": "127.0.0.1" for s in ("LLAMA_CPP", "AIDER_WRAPPER", "RALPH_WIGGUM", "DASHBOARD")},
        **{f"{s}_PORT": free_port() for s in ("LLAMA_CPP", "AIDER_WRAPPER", "RALPH_WIGGUM", "DASHBOARD")},
    }
    (root / "workspaces").mkdir(parents=True, exist_ok=True)
    env_file = root / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env_file


def run(env_file: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = clean_environ()
    env["AISTACK_ENV_FILE"] = str(env_file)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "aistack", *args], env=env, capture_output=True, text=True, timeout=900)
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


def last_deploy(env_file: Path) -> dict:
    data_dir = Path(next(line.split("=", 1)[1] for line in env_file.read_text().splitlines() if line.startswith("AISTACK_DATA_DIR")))
    return json.loads((data_dir / "deploys.jsonl").read_text().splitlines()[-1])


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
        env_file = write_env(root, args.model)
        try:
            for _ in range(args.runs):
                took, proc = run(env_file, "up")
                ups.append(must("up", (took, proc)))
                up_table = proc.stdout  # per service: how long until its /health said 200
                must("down", run(env_file, "down"))
            must("up", run(env_file, "up"))
            for i in range(args.runs):
                must("deploy", run(env_file, "deploy", "ralph-wiggum", "--source", str(source_copy(root / f"good{i}"))))
                deploys.append(last_deploy(env_file)["duration_s"])
                must("rollback", run(env_file, "rollback", "ralph-wiggum"))
                rollbacks.append(last_deploy(env_file)["duration_s"])
                sick = source_copy(root / f"sick{i}", SICK_HEALTH)
                must(
                    "failing deploy",
                    run(env_file, "deploy", "ralph-wiggum", "--source", str(sick), "--health-timeout", args.health_timeout),
                    ok=False,
                )
                entry = last_deploy(env_file)
                restores.append(entry["restore_s"])
                failed_total.append(entry["duration_s"])
            if args.podman:
                podman_rows = bench_podman(env_file, root, args)
        finally:
            run(env_file, "down")

    print(up_table)
    print(f"| `aistack up`, whole stack until all healthy ({args.model} cached) | {fmt(ups)} | ≤ 10 s |")
    print(f"| `aistack deploy ralph-wiggum`, good release | {fmt(deploys)} | — |")
    print(f"| `aistack rollback ralph-wiggum` | {fmt(rollbacks)} | — |")
    print(f"| failed deploy (/health never 200): failed check → previous release healthy | {fmt(restores)} | ≤ 15 s |")
    print(f"| failed deploy, whole command (health timeout {args.health_timeout} s) | {fmt(failed_total)} | — |")
    if args.podman:
        print(*podman_rows, sep="\n")


def bench_podman(env_file: Path, root: Path, args) -> list[str]:
    """ralph-wiggum as the container local-ai-ralph-wiggum: deploys (image build with cached
    dependency layer), rollback, and the restore after a failed health check."""
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))
    with env_file.open("a") as f:
        # the other services run as processes on the host, not on the container network
        f.write("RALPH_WIGGUM_API_KEY=bench-key\nSTARTUP_DEPENDENCY_CHECK=false\n")
    podman = ["--runtime", "podman"]
    base = ["--base-image", args.base_image]
    run(env_file, "down", "ralph-wiggum")  # the process runtime's instance would hold the port
    deploys, rollbacks, restores = [], [], []
    try:
        for i in range(args.runs):
            must("podman deploy", run(env_file, "deploy", "ralph-wiggum", *podman, *base, "--source", str(source_copy(root / f"pgood{i}"))))
            deploys.append(last_deploy(env_file)["duration_s"])
            if i:
                must("podman rollback", run(env_file, "rollback", "ralph-wiggum", *podman))
                rollbacks.append(last_deploy(env_file)["duration_s"])
            sick = source_copy(root / f"psick{i}", SICK_HEALTH)
            must(
                "podman failing deploy",
                run(env_file, "deploy", "ralph-wiggum", *podman, *base, "--source", str(sick), "--health-timeout", args.health_timeout),
                ok=False,
            )
            restores.append(last_deploy(env_file)["restore_s"])
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
