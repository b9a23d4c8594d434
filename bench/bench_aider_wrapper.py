"""Seconds per real aider run through the aider-wrapper, per bundled model.

Starts `aistack serve llama-cpp` (the chosen model) and `aistack serve aider-wrapper` on free
ports with their own data dir and workspace root, then sends small coding tasks, each into a
fresh git repository, and checks the result by running the produced code:

  hello   create hello.py with hello() -> 'hello'
  add     create calc.py with add(a, b)
  edit    change greet() in an existing greet.py (passed in `files`)

    .venv/bin/python bench/bench_aider_wrapper.py [--model qwen2.5-coder-1.5b] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import benchlib  # noqa: F401  (puts tests/ on the path: the services start as the tests start them)
from support import ServiceProcess, make_git_repo, new_stack_env

TASKS = {
    "hello": ("Create hello.py with a function hello() that returns 'hello'", {}, [], "import hello; assert hello.hello() == 'hello'"),
    "add": ("Create calc.py with a function add(a, b) that returns the sum of a and b", {}, [], "import calc; assert calc.add(2, 3) == 5"),
    "edit": (
        "In greet.py, change greet(name) so it returns 'Hi ' + name instead of 'Hello ' + name",
        {"greet.py": "def greet(name):\n    return 'Hello ' + name\n"},
        ["greet.py"],
        "import greet; assert greet.greet('Bob') == 'Hi Bob'",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) must still stop the services this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-aider-") as tmp_name:
        tmp = Path(tmp_name)
        env = new_stack_env(tmp).set(LLAMA_CPP_MODEL=args.model, LLAMA_CPP_PARALLEL=1)
        wrapper = env.url("aider-wrapper")
        procs = []
        try:
            for name, timeout in (("llama-cpp", 600), ("aider-wrapper", 120)):
                procs.append(ServiceProcess(name, env))
                procs[-1].wait_healthy(timeout)
            print(f"model {args.model}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print("| task | passed | seconds (wrapper) | seconds (client) | prompt tokens | completion tokens |")
            print("|---|---|---|---|---|---|")
            for run in range(args.runs):
                for name, (prompt, files, edit, check) in TASKS.items():
                    repo = make_git_repo(env.workspace_root / f"{name}-{run}", files)
                    started = time.monotonic()
                    body = {"prompt": prompt, "workspace": repo.name, "files": edit}
                    result = httpx.post(wrapper + "/api/execute", json=body, timeout=900).json()
                    wall = time.monotonic() - started
                    ok = (
                        result["status"] == "success"
                        and subprocess.run([sys.executable, "-B", "-c", check], cwd=repo, capture_output=True).returncode == 0
                    )
                    print(f"| {name} | {'yes' if ok else 'no'} | {result['duration_seconds']:.1f} | {wall:.1f} | "
                          f"{result['tokens']['prompt']} | {result['tokens']['completion']} |", flush=True)  # fmt: skip
        finally:
            for service in reversed(procs):
                service.stop(30)


if __name__ == "__main__":
    main()
