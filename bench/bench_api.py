"""The orchestrator's API under 50 concurrent clients, against a bare FastAPI app (not a test).

    .venv/bin/python bench/bench_api.py [--clients 50] [--seconds 6] [--rounds 3]   (needs `wrk`)

A real `aistack serve ralph-wiggum` (its own SQLite file, the loop disabled so only the API is
measured) and, as the anchor in the same run, a bare FastAPI app on the same uvicorn whose
`GET /tasks/{id}` returns the very JSON ralph returns for the task, and whose `POST /tasks` only
answers. Targets: GET ≥ 0.6× the anchor's requests/s with p99 ≤ 2× the anchor's; POST ≥ 0.3×.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import httpx

from benchlib import commit_line, hammer, start_bare, start_ralph, verdict
from support import make_git_repo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="ralph and bare alternate; each figure is the median")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ralph = start_ralph(tmp / "ralph", RALPH_LOOP_ENABLED="false", RALPH_COMMAND_BACKEND="true")
        rurl = ralph.url
        make_git_repo(ralph.env.workspace_root / "api")
        body = {"prompt": "Add a docstring to every function", "backend": "command", "workspace": "api", "max_iterations": 1}
        task_id = httpx.post(rurl + "/tasks", json=body).json()["task_id"]
        bare, burl = start_bare(tmp, httpx.get(f"{rurl}/tasks/{task_id}").json())
        runs: dict[tuple[str, str], list[dict]] = {}
        try:
            for _ in range(args.rounds):  # alternating, so a drift of the machine's load hits both alike
                for name, path, posted in (("GET /tasks/{id}", f"/tasks/{task_id}", None), ("POST /tasks", "/tasks", body)):
                    for who, url in (("ralph", rurl), ("bare ", burl)):
                        runs.setdefault((name, who), []).append(hammer(url, path, args.clients, args.seconds, posted))
        finally:
            ralph.stop()
            bare.terminate()
            bare.wait(10)
    median = {key: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for key, rs in runs.items()}
    print(f"API benchmark, {args.clients} connections, {args.rounds} rounds of {args.seconds} s, medians, {commit_line()}")
    for (name, who), r in median.items():
        spread = ", ".join(f"{x['p99_ms']:.0f}" for x in runs[(name, who)])
        print(f"  {who} {name:16s} {r['per_second']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
              f"  (p99s {spread}; {sum(x['errors'] for x in runs[(name, who)])} non-2xx)")  # fmt: skip
    get = (median[("GET /tasks/{id}", "ralph")], median[("GET /tasks/{id}", "bare ")])
    post = (median[("POST /tasks", "ralph")], median[("POST /tasks", "bare ")])
    rate = get[0]["per_second"] / get[1]["per_second"]
    p99 = get[0]["p99_ms"] / get[1]["p99_ms"]
    post_rate = post[0]["per_second"] / post[1]["per_second"]
    print(f"  GET  requests/s ratio {rate:5.2f}×  {verdict(rate, 0.6, higher_is_better=True)}")
    print(f"  GET  p99 ratio        {p99:5.2f}×  {verdict(p99, 2.0, higher_is_better=False)}")
    print(f"  POST requests/s ratio {post_rate:5.2f}×  {verdict(post_rate, 0.3, higher_is_better=True)}")


if __name__ == "__main__":
    main()
