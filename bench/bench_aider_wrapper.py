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

from benchlib import free_port

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


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def repo_with(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "# bench\n"}).items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "-m", "init")
    return path


def serve(name: str, env: dict[str, str], log: Path, url: str, timeout: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "aistack", "serve", name], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} not healthy after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) must still stop the services this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bench-aider-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ws").mkdir()
        llama_port, wrapper_port = free_port(), free_port()
        values = {
            "AISTACK_DATA_DIR": str(tmp / "data"), "WORKSPACE_ROOT": str(tmp / "ws"), "LLAMA_CPP_HOST": "127.0.0.1",
            "LLAMA_CPP_PORT": str(llama_port), "AIDER_WRAPPER_PORT": str(wrapper_port), "LLAMA_CPP_MODEL": args.model,
            "LLAMA_CPP_PARALLEL": "1", "STARTUP_DEPENDENCY_CHECK": "false",
        }  # fmt: skip
        (tmp / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "LLAMA_CPP_", "AISTACK_", "RALPH_", "WORKSPACE_"))}
        env["AISTACK_ENV_FILE"] = str(tmp / ".env")
        procs = []
        try:
            procs.append(serve("llama-cpp", env, tmp / "llama.log", f"http://127.0.0.1:{llama_port}", 600))
            wrapper = f"http://127.0.0.1:{wrapper_port}"
            procs.append(serve("aider-wrapper", env, tmp / "wrapper.log", wrapper, 120))
            print(f"model {args.model}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print("| task | passed | seconds (wrapper) | seconds (client) | prompt tokens | completion tokens |")
            print("|---|---|---|---|---|---|")
            for run in range(args.runs):
                for name, (prompt, files, edit, check) in TASKS.items():
                    repo = repo_with(tmp / "ws" / f"{name}-{run}", files)
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
            for proc in reversed(procs):
                os.killpg(proc.pid, 15)
                proc.wait(30)


if __name__ == "__main__":
    main()
