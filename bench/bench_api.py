"""The orchestrator's API under 50 concurrent clients, against a bare FastAPI app (not a test).

    .venv/bin/python bench/bench_api.py [--clients 50] [--seconds 8]   (needs `wrk`)

A real `aistack serve ralph-wiggum` (its own SQLite file, the loop disabled so only the API is
measured) and, as the anchor in the same run, a bare FastAPI app on the same uvicorn whose
`GET /tasks/{id}` returns the very JSON ralph returns for the task, and whose `POST /tasks` only
answers. Targets: GET ≥ 0.6× the anchor's requests/s with p99 ≤ 2× the anchor's; POST ≥ 0.3×.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from benchlib import commit_line, hammer, new_repo, start_bare, start_ralph, stop, verdict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        new_repo(tmp / "ws" / "api")
        ralph, rurl = start_ralph(tmp, RALPH_LOOP_ENABLED="false", RALPH_COMMAND_BACKEND="true")
        body = {"prompt": "Add a docstring to every function", "backend": "command", "workspace": "api", "max_iterations": 1}
        task_id = httpx.post(rurl + "/tasks", json=body).json()["task_id"]
        bare, burl = start_bare(tmp, httpx.get(f"{rurl}/tasks/{task_id}").json())
        try:
            runs = {
                "GET /tasks/{id}": (hammer(rurl, f"/tasks/{task_id}", args.clients, args.seconds),
                                    hammer(burl, f"/tasks/{task_id}", args.clients, args.seconds)),
                "POST /tasks": (hammer(rurl, "/tasks", args.clients, args.seconds, body),
                                hammer(burl, "/tasks", args.clients, args.seconds, body)),
            }  # fmt: skip
        finally:
            stop(ralph, bare)
    print(f"API benchmark, {args.clients} connections, {args.seconds} s each, {commit_line()}")
    for name, (ours, anchor) in runs.items():
        for who, r in (("ralph", ours), ("bare ", anchor)):
            print(
                f"  {who} {name:16s} {r['per_second']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
                f"  ({r['errors']} non-2xx)"
            )
    get, post = runs["GET /tasks/{id}"], runs["POST /tasks"]
    rate = get[0]["per_second"] / get[1]["per_second"]
    p99 = get[0]["p99_ms"] / get[1]["p99_ms"]
    post_rate = post[0]["per_second"] / post[1]["per_second"]
    print(f"  GET  requests/s ratio {rate:5.2f}×  {verdict(rate, 0.6, higher_is_better=True)}")
    print(f"  GET  p99 ratio        {p99:5.2f}×  {verdict(p99, 2.0, higher_is_better=False)}")
    print(f"  POST requests/s ratio {post_rate:5.2f}×  {verdict(post_rate, 0.3, higher_is_better=True)}")


if __name__ == "__main__":
    main()
