"""The loop's own cost per iteration, against a plain shell loop doing the same work (not a test).

    .venv/bin/python bench/bench_loop.py [--iterations 100] [--sandbox auto|bwrap|off]

With RALPH_SANDBOX=auto (the default) the agent and the check run under bwrap where it works: each
costs a sandbox's start more.

aistack: a real `aistack serve ralph-wiggum` runs one task of N iterations with the `command`
backend; the agent appends a line to a file, the check counts the lines. Each iteration runs the
agent, stages and commits a checkpoint, runs the check, undoes what the check left, and stores the
iteration and its events. Wall time = the task's start to finish, divided by N.

Anchor, same run: a `sh` loop in a fresh repository doing the same work per iteration (the same
agent script, `git add -A`, `git commit`, the same check through `sh -c`), and nothing else.
Target: aistack ≤ 2× the anchor, and ≤ 40 ms per iteration.

Stop: a task whose agent sleeps (with a helper of its own in the background) is stopped mid
iteration; the figure is the time from `POST /stop` to the task `stopped` with the agent's whole
process group gone. Target: ≤ 2 s.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from benchlib import commit_line, start_ralph, verdict
from support import make_git_repo

AGENT = "#!/bin/sh\necho x >> log.txt\n"


def check_command(iterations: int) -> str:
    return f"test $(wc -l < log.txt) -ge {iterations}"


def aistack_loop(tmp: Path, iterations: int, sandbox: str) -> dict:
    agent = tmp / "agent.sh"
    agent.write_text(AGENT)
    agent.chmod(0o755)
    ralph = start_ralph(tmp / "loop", RALPH_COMMAND_BACKEND=str(agent), RALPH_MAX_ITERATIONS_CAP=str(iterations), RALPH_SANDBOX=sandbox)
    make_git_repo(ralph.env.workspace_root / "repo")
    try:
        with httpx.Client(base_url=ralph.url, timeout=30) as c:
            isolation = c.get("/health").json()["isolation"]["sandbox"]
            body = {"prompt": "append", "backend": "command", "workspace": "repo",
                    "check_command": check_command(iterations), "max_iterations": iterations}  # fmt: skip
            task_id = c.post("/tasks", json=body).json()["task_id"]
            while (task := c.get(f"/tasks/{task_id}").json())["status"] not in ("exhausted", "completed", "failed"):
                time.sleep(0.2)
            its = c.get(f"/tasks/{task_id}/iterations").json()
    finally:
        ralph.stop()
    wall = datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])
    durations = sorted(it["duration_seconds"] * 1000 for it in its)
    return {
        "status": task["status"],
        "sandbox": isolation,
        "iterations": len(its),
        "checkpoints": sum(1 for it in its if it["checkpoint_commit"]),
        "ms": wall.total_seconds() * 1000 / len(its),
        "p50": statistics.median(durations),
        "p99": durations[int(0.99 * (len(durations) - 1))],
    }


def stop_latency(tmp: Path, sandbox: str, runs: int = 3) -> list[float]:
    """Seconds from POST /stop until the task is `stopped` and the agent's helper has died."""
    tmp.mkdir(parents=True, exist_ok=True)
    mark = f"300.{secrets.randbelow(10**8):08d}"  # the helper's argument: how it is found, inside a sandbox too
    agent = tmp / "sleeper.sh"
    agent.write_text(f"#!/bin/sh\nsleep {mark} &\nwait\n")
    agent.chmod(0o755)
    ralph = start_ralph(tmp / "ralph", RALPH_COMMAND_BACKEND=str(agent), RALPH_SANDBOX=sandbox)
    make_git_repo(ralph.env.workspace_root / "stop")
    took = []
    try:
        with httpx.Client(base_url=ralph.url, timeout=30) as c:
            for _ in range(runs):
                task_id = c.post("/tasks", json={"prompt": "sleep", "backend": "command", "workspace": "stop"}).json()["task_id"]
                while (helper := _running("sleep", mark)) is None:
                    time.sleep(0.01)
                t0 = time.monotonic()
                c.post(f"/tasks/{task_id}/stop")
                while c.get(f"/tasks/{task_id}").json()["status"] != "stopped" or _alive(helper):
                    time.sleep(0.005)
                took.append(time.monotonic() - t0)
    finally:
        ralph.stop()
    return took


def _running(*argv: str) -> int | None:
    """The pid, as this machine numbers it, of a process running exactly `argv`."""
    wanted = "".join(f"{arg}\0" for arg in argv).encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "cmdline").read_bytes() == wanted:
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


def _alive(pid: int) -> bool:
    """Running, not a zombie (dead, waiting for init to reap it: slow in some sandboxes)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def shell_loop(tmp: Path, iterations: int) -> float:
    """Milliseconds per iteration of the same work done by a plain shell loop."""
    repo = make_git_repo(tmp / "plain")
    (tmp / "plain-agent.sh").write_text(AGENT)
    script = (
        f'i=0; while [ "$i" -lt {iterations} ]; do\n'
        f"  sh {tmp / 'plain-agent.sh'}\n"
        "  git add -A\n"
        '  git -c user.name=b -c user.email=b@b commit -q --no-verify -m "iteration $i"\n'
        f"  sh -c '{check_command(iterations)}'\n"
        "  i=$((i + 1))\n"
        "done\n"
    )
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", script], cwd=repo, check=False, capture_output=True)
    return (time.monotonic() - t0) * 1000 / iterations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "off"], default="auto", help="RALPH_SANDBOX of the orchestrator")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = shell_loop(tmp, args.iterations)
        loop = aistack_loop(tmp, args.iterations, args.sandbox)
        plain = min(plain, shell_loop(tmp / "again", args.iterations))  # best of two: the anchor's floor
        stops = stop_latency(tmp / "stop", args.sandbox)
    ratio = loop["ms"] / plain
    print(f"loop benchmark, {commit_line()}")
    print(
        f"  aistack loop      {loop['ms']:6.1f} ms/iteration  (p50 {loop['p50']:.1f}, p99 {loop['p99']:.1f} ms recorded; "
        f"{loop['iterations']} iterations, {loop['checkpoints']} checkpoints, {loop['status']}; sandbox {loop['sandbox']})"
    )
    print(f"  plain shell loop  {plain:6.1f} ms/iteration  (anchor)")
    print(
        f"  ratio             {ratio:6.2f}×  {verdict(ratio, 2.0, higher_is_better=False)}; "
        f"absolute {'met' if loop['ms'] <= 40 else 'NOT met'} (target ≤ 40 ms)"
    )
    print(
        f"  stop mid-iteration {statistics.median(stops):5.2f} s median of {len(stops)} (max {max(stops):.2f} s) to "
        f"`stopped` and the helper dead; {'met' if max(stops) <= 2 else 'NOT met'} (target ≤ 2 s)"
    )


if __name__ == "__main__":
    main()
