"""Whole-stack benchmark (not a test): the loop on the real model, measured at llama-server.

    .venv/bin/python bench/bench_stack.py [--model qwen2.5-coder-1.5b]

Starts llama-cpp, aider-wrapper and ralph-wiggum on free ports and runs the demo task
("Create hello.py …") for two iterations: the check fails once on purpose (a marker file outside
the worktree), so iteration 2 sends nearly the same prompt as iteration 1. The task waits for
approval before each iteration, which lets the script read llama-server's /metrics counters
between iterations and attribute prompt processing and generation to each one.

Reports:
- generation tok/s through the stack (aider → llama-server) against a direct
  /v1/chat/completions call with a prompt of the same length (target ≥ 0.97×);
- prompt-processing seconds of iteration 2 against iteration 1 (target ≤ 0.3×, prefix cache);
- seconds and tokens per iteration.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import httpx

import benchlib  # noqa: F401  (puts tests/ on the path: the services start as the tests start them)
from support import ServiceProcess, make_git_repo, new_stack_env

COUNTERS = ("prompt_tokens_total", "prompt_seconds_total", "tokens_predicted_total", "tokens_predicted_seconds_total")


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for name in COUNTERS:
        m = re.search(rf"^llamacpp:{name}\s+([0-9.e+-]+)$", text, re.MULTILINE)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in COUNTERS}


def direct_generation(llm: str, prompt_tokens: int) -> float:
    """Generation tok/s of one direct request whose prompt is about `prompt_tokens` long."""
    filler = "def f(x):\n    return x\n" * max(1, prompt_tokens // 10)
    body = {
        "model": "local-coder",
        "messages": [
            {"role": "system", "content": "You are a coding assistant."},
            {"role": "user", "content": filler + "\nWrite a Python function that reverses a string, with a docstring."},
        ],
        "max_tokens": 200,
        "temperature": 0,
    }
    timings = httpx.post(llm + "/v1/chat/completions", json=body, timeout=600).json()["timings"]
    return timings["predicted_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = new_stack_env(tmp).set(LLAMA_CPP_MODEL=args.model, LOG_LEVEL="warning")
        make_git_repo(env.workspace_root / "demo")
        llm, ralph = env.url("llama-cpp"), env.url("ralph-wiggum")
        procs: list[ServiceProcess] = []
        try:
            for name, timeout in (("llama-cpp", 600), ("aider-wrapper", 60), ("ralph-wiggum", 60)):
                procs.append(ServiceProcess(name, env))
                procs[-1].wait_healthy(timeout)
            marker = tmp / "first-check-done"
            check = (
                f"if [ -f {marker} ]; then python3 -c \"import hello; assert hello.hello() == 'hello'\"; "
                f"else touch {marker}; echo 'first check fails on purpose'; exit 1; fi"
            )
            c = httpx.Client(base_url=ralph, timeout=30)
            task_id = c.post(
                "/tasks",
                json={
                    "prompt": "Create hello.py with a function hello() that returns 'hello'",
                    "workspace": "demo",
                    "check_command": check,
                    "max_iterations": 3,
                    "require_approval": True,
                },
            ).json()["task_id"]
            per_iteration = []
            while True:
                task = c.get(f"/tasks/{task_id}").json()
                if task["status"] in ("completed", "exhausted", "failed", "stopped"):
                    break
                if task["status"] == "awaiting_approval":
                    before = metrics(llm)
                    done = task["iteration"]
                    c.post(f"/tasks/{task_id}/approve", json={"approved": True})
                    while (t := c.get(f"/tasks/{task_id}").json())["iteration"] == done and t["status"] not in ("failed", "stopped"):
                        time.sleep(0.3)
                    per_iteration.append(delta(metrics(llm), before))
                time.sleep(0.3)
            iterations = c.get(f"/tasks/{task_id}/iterations").json()
            print(f"task {task['status']} after {task['iteration']} iterations ({args.model})")
            for it, m in zip(iterations, per_iteration, strict=True):
                pp = m["prompt_seconds_total"]
                print(
                    f"  iteration {it['number']}: {it['duration_seconds']:.1f} s wall, tokens {it['tokens']['prompt']}+"
                    f"{it['tokens']['completion']} (aider), llama-server processed {m['prompt_tokens_total']:.0f} prompt tokens "
                    f"in {pp:.2f} s, generated {m['tokens_predicted_total']:.0f} in {m['tokens_predicted_seconds_total']:.2f} s"
                )
            if len(per_iteration) >= 2 and per_iteration[0]["prompt_seconds_total"] > 0:
                ratio = per_iteration[1]["prompt_seconds_total"] / per_iteration[0]["prompt_seconds_total"]
                print(f"prompt processing, iteration 2 / iteration 1: {ratio:.2f} (target ≤ 0.3)")
            gen_tokens = sum(m["tokens_predicted_total"] for m in per_iteration)
            gen_seconds = sum(m["tokens_predicted_seconds_total"] for m in per_iteration)
            stack_tps = gen_tokens / gen_seconds if gen_seconds else 0.0
            prompt_len = int(max(it["tokens"]["prompt"] for it in iterations)) if iterations else 1000
            direct_tps = direct_generation(llm, prompt_len)
            print(
                f"generation: through the stack {stack_tps:.1f} tok/s, direct {direct_tps:.1f} tok/s "
                f"(ratio {stack_tps / direct_tps:.2f}, target ≥ 0.97)"
            )
        finally:
            for service in reversed(procs):
                service.stop(20)


if __name__ == "__main__":
    main()
