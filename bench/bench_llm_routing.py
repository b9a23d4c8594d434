"""Several LLM servers: what routing each task to one server buys, and what a second server adds.

Two real llama-servers (the bundled SmolLM2-135M by default: any model shows the token counts)
serve several loop-shaped "tasks": each iteration sends the task's prompt, which is a shared
system prompt, the task's own repo map (~600 tokens in all by default) and its request, plus one more check output per
iteration — a prefix that grows like a real loop's. Each completion's `timings` say how many
prompt tokens the server evaluated (`prompt_n`) and how many it took from its cache (`cache_n`).

  cache       4 tasks × 4 iterations at once, routed by `aistack.llm_routing.Router` (affinity)
              and at random: prompt tokens evaluated in iterations ≥ 2 (the ones a cache could
              spare). Exact counts, whatever the machine's load.
  throughput  4 tasks × 3 iterations at once, 32 generated tokens each: two servers (routed by
              the Router) against one server, each server with `--threads` threads.

On a 2-core machine two 1-thread servers use the two cores as two 1-core hosts would, and a
busy machine's other processes share them too: the throughput ratio says what a second server's
own core adds, not what a second host would.

    .venv/bin/python bench/bench_llm_routing.py [--model smollm2-135m] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aistack.config import Settings
from aistack.llama_cpp.engine import ensure_server_bin, server_version
from aistack.llama_cpp.models import ensure_model
from aistack.llama_cpp.server import server_command
from aistack.llm_routing import Router
from aistack.procgroup import die_with_parent
from bench_llama_cache import SYSTEM, repo_map
from benchlib import commit_line
from support import free_port, wait_until

CHECK_OUTPUT = (
    "FAILED tests/test_module_{task}.py::test_handler_{n} - AssertionError: expected status 200, got {code}\n"
    "    def test_handler_{n}(client):\n        response = client.get('/items/{n}?limit={n}')\n"
    ">       assert response.status_code == 200\nE       assert {code} == 200\n"
)


class LlamaServer:
    """A real llama-server on a free port, started as llama-cpp starts it (`server_command`)."""

    def __init__(self, base: Settings, binary: Path, model: Path, threads: int, log: Path) -> None:
        settings = base.model_copy(update={"llama_cpp_port": free_port(), "llama_cpp_threads": threads})
        self.url = f"http://127.0.0.1:{settings.llama_cpp_port}"
        self._log = log.open("w")
        cmd = server_command(settings, binary, model)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
        if not wait_until(self._ready, 300, 0.2):
            self.close()
            raise SystemExit(f"llama-server did not become healthy; see {log}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"llama-server exited {self.proc.returncode}; see {self._log.name}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


@dataclass
class Tally:
    evaluated_later: int = 0  # prompt tokens evaluated in iterations >= 2
    prompt_later: int = 0  # prompt tokens of iterations >= 2, cached or not
    moves: int = 0  # iterations >= 2 sent to another server than the one before
    generated: int = 0
    calls: list[tuple[str, int, str, int, int]] = field(default_factory=list)  # task, iteration, server, prompt_n, cache_n


def prompt(task: int, iteration: int, map_lines: int) -> list[dict]:
    """The task's messages in its `iteration`: the same head, one check output more each time."""
    head = f"Task {task}: make the tests in tests/test_module_{task}.py pass.\n\n"
    checks = "".join(f"\n# check output after iteration {i}\n" + CHECK_OUTPUT.format(task=task, n=i, code=400 + i)
                     for i in range(1, iteration))  # fmt: skip
    project = repo_map(map_lines).replace("handler_", f"t{task}_handler_")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": project + "\n\n" + head + checks}]


async def drive(
    urls: list[str], router: Router | None, tasks: int, iterations: int, max_tokens: int, map_lines: int, seed: int, tag: str
) -> Tally:
    """`tasks` loops at once, each `iterations` completions in turn, routed by `router` or at random."""
    tally, rng = Tally(), random.Random(seed)
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:

        async def loop(task: int) -> None:
            last = None
            for iteration in range(1, iterations + 1):
                body = {"messages": prompt(task, iteration, map_lines), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
                if router is None:
                    url = rng.choice(urls)
                    reply = (await client.post(url + "/v1/chat/completions", json=body)).json()
                else:
                    with router.route(f"{tag}-{task}") as routed:
                        assert routed is not None, router.problem()
                        url = routed
                        reply = (await client.post(url + "/v1/chat/completions", json=body)).json()
                timings = reply["timings"]
                tally.generated += timings["predicted_n"]
                tally.calls.append((f"{tag}-{task}", iteration, url, timings["prompt_n"], timings["cache_n"]))
                if iteration >= 2:
                    tally.evaluated_later += timings["prompt_n"]
                    tally.prompt_later += timings["prompt_n"] + timings["cache_n"]
                    tally.moves += url != last
                last = url

        await asyncio.gather(*(loop(task) for task in range(tasks)))
    return tally


async def routed(urls: list[str], *args) -> Tally:
    router = Router(urls, poll_seconds=1.0)
    await router.poll()
    router.start()
    try:
        return await drive(urls, router, *args)
    finally:
        await router.close()


GENERATED = 32


def throughput(urls: list[str], args: argparse.Namespace) -> tuple[float, Tally]:
    started = time.monotonic()
    tally = asyncio.run(routed(urls, args.tasks, 3, GENERATED, args.map_lines, 2, f"throughput{len(urls)}"))
    return time.monotonic() - started, tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1, help="Threads per server (two servers: twice this in all).")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--map-lines", type=int, default=12, help="Repo-map lines per task (~30 tokens each).")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()

    base = Settings(_env_file=None, llama_cpp_model=args.model, llama_cpp_context_size=8192, llama_cpp_parallel=2)
    model, binary = ensure_model(base), ensure_server_bin(base)
    print(f"model {args.model}, {server_version(binary)}, {commit_line()}")
    print(f"llama-server: --parallel 2, --ctx-size 8192 per slot, --cache-ram {base.llama_cpp_cache_ram}, --threads {args.threads}")

    two = [LlamaServer(base, binary, model, args.threads, args.log_dir / f"bench_llm_routing.{i}.log") for i in range(2)]
    urls = [s.url for s in two]
    try:
        print(f"\n## cache: {args.tasks} tasks × {args.iterations} iterations on two servers, 4 generated tokens each\n")
        print("| routing | prompt tokens, iterations ≥ 2 | evaluated | cached | moves to another server | seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, seed in (("affinity (Router)", 0), ("random", 1)):
            started = time.monotonic()
            shape = (args.tasks, args.iterations, 4, args.map_lines, seed, name.split()[0])
            tally = asyncio.run(routed(urls, *shape) if name.startswith("affinity") else drive(urls, None, *shape))
            seconds = time.monotonic() - started
            cached = tally.prompt_later - tally.evaluated_later
            print(f"| {name} | {tally.prompt_later} | {tally.evaluated_later} | {cached} | {tally.moves} | {seconds:.1f} |")

        print(f"\n## throughput: {args.tasks} tasks × 3 iterations at once, {GENERATED} generated tokens each\n")
        print("| servers | threads each | seconds | iterations/min | generated tok/s |")
        print("|---|---:|---:|---:|---:|")
        two_s, tally = throughput(urls, args)
        print(f"| two (Router) | {args.threads} | {two_s:.1f} | {args.tasks * 3 * 60 / two_s:.1f} | {tally.generated / two_s:.1f} |")
        homes = Counter(url for _, _, url, _, _ in tally.calls)
        print(f"\n(requests per server with two: {sorted(homes.values())}, tasks moved: {tally.moves})\n")
    finally:
        for server in two:
            server.close()
    one = LlamaServer(base, binary, model, args.threads, args.log_dir / "bench_llm_routing.one.log")
    try:
        one_s, tally = throughput([one.url], args)
    finally:
        one.close()
    print(f"| one | {args.threads} | {one_s:.1f} | {args.tasks * 3 * 60 / one_s:.1f} | {tally.generated / one_s:.1f} |")
    print(f"\ntwo servers: {one_s / two_s:.2f}× the throughput of one")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # each table row as soon as it is measured
    main()
