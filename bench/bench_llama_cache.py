"""Does llama-server's prompt cache pay for prompts that share a long prefix?

The loop (and aider inside it) sends nearly the same prompt every call: the same system prompt and
repo map, a different last message. This script runs the real llama-server with a bundled model
and sends such a sequence, reading `timings.prompt_n` (prompt tokens evaluated) and
`timings.cache_n` (tokens reused from the slot's KV cache) from each response and the serving slot
from `/slots`:

  cold        system + ~2k-token repo map + user message A (nothing cached yet)
  next        same prefix, different user message B
  reflection  the `next` conversation + the model's reply + a "fix the errors" user message
              (what aider sends when it reflects lint/test errors back)
  other       a different system prompt (aider's chat-history summarizer, which runs in a
              background thread with the same model, interleaved with the main calls)
  after       main prefix + user message C, right after `other`
  edited      the repo map with one line changed in the middle
  removed     the same line removed instead (what `--cache-reuse` can recover by shifting the KV cache)

under three server set-ups: one slot and no host-memory prompt cache (one KV state, like
llama-cpp-python's server), one slot with llama-server's host prompt cache (`--cache-ram`), and
aistack's default (two slots, slot chosen by prompt similarity). It also measures generation speed.

    .venv/bin/python bench/bench_llama_cache.py [--model qwen2.5-coder-1.5b] [--prefix-tokens 2000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

import benchlib  # noqa: F401  (puts tests/ on the path)
from aistack.config import Settings
from aistack.llama_cpp.engine import ensure_server_bin, server_version
from aistack.llama_cpp.models import ensure_model
from aistack.llama_cpp.server import server_command
from aistack.procgroup import die_with_parent
from support import free_port

SYSTEM = (
    "Act as an expert software developer. Always use best practices when coding. Respect and use existing "
    "conventions, libraries, etc that are already present in the code base. Take requests for changes to the "
    "supplied code. If the request is ambiguous, ask questions. Once you understand the request you MUST: "
    "1. Decide if you need to propose edits to any files that haven't been added to the chat. "
    "2. Think step-by-step and explain the needed changes in a few short sentences. "
    "3. Describe each change with a *SEARCH/REPLACE block*. Only create SEARCH/REPLACE blocks for files that "
    "the user has added to the chat. Keep SEARCH/REPLACE blocks concise."
)
SUMMARIZER = (
    "*Briefly* summarize this partial conversation about programming. Include less detail about older parts "
    "and more detail about the most recent messages. Write *as* the user, in the first person."
)


def repo_map(lines: int, edited_line: int | None = None, removed_line: int | None = None) -> str:
    """A deterministic aider-style repo map: files with their function signatures."""
    out = ["Here are summaries of some files present in my git repository."]
    for i in range(lines):
        if i % 6 == 0:
            out.append(f"\nsrc/pkg/module_{i // 6}.py:")
        if i == removed_line:
            continue
        name = f"renamed_{i}" if i == edited_line else f"handler_{i}"
        out.append(f"│def {name}(request_{i % 7}: Request, limit: int = {i % 50}) -> Response{i % 5}:")
    return "\n".join(out)


@dataclass
class Call:
    label: str
    prompt_tokens: int
    evaluated: int
    reused: int
    prompt_ms: float
    slot: int | None


class Server:
    def __init__(self, settings: Settings, binary: Path, model: Path, extra: list[str], log: Path):
        self.url = f"http://127.0.0.1:{settings.llama_cpp_port}"
        cmd = server_command(settings, binary, model) + extra
        self._log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
        self.http = httpx.Client(base_url=self.url, timeout=600)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited {self.proc.returncode}; see {log}")
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("llama-server did not become healthy")

    def tokens(self, text: str) -> int:
        return len(self.http.post("/tokenize", json={"content": text}).json()["tokens"])

    def chat(self, label: str, messages: list[dict], max_tokens: int = 16) -> tuple[Call, str]:
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "seed": 1}
        reply = self.http.post("/v1/chat/completions", json=body).json()
        t = reply["timings"]
        slots = self.http.get("/slots").json()
        served = max((s for s in slots if "id_task" in s), key=lambda s: s["id_task"], default=None)
        call = Call(label, t["prompt_n"] + t["cache_n"], t["prompt_n"], t["cache_n"], t["prompt_ms"], served and served["id"])
        return call, reply["choices"][0]["message"]["content"]

    def generate(self, tokens: int) -> float:
        body = {
            "messages": [{"role": "user", "content": "Write a long Python module with many small functions."}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
        }  # fmt: skip
        return self.http.post("/v1/chat/completions", json=body).json()["timings"]["predicted_per_second"]

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


def sequence(server: Server, prefix_lines: int) -> list[Call]:
    head = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": repo_map(prefix_lines)},
            {"role": "assistant", "content": "Ok, I won't try and edit those files without asking first."}]  # fmt: skip
    calls = []
    call, _ = server.chat("cold", head + [{"role": "user", "content": "Add input validation to handler_3."}])
    calls.append(call)
    msgs = head + [{"role": "user", "content": "Rename handler_5 to handle_login and update its callers."}]
    call, reply = server.chat("next", msgs)
    calls.append(call)
    msgs += [{"role": "assistant", "content": reply},
             {"role": "user", "content": "# Fix any errors below, if possible.\n\n"
                                         "src/pkg/module_0.py:3:1: F821 undefined name 'Request'"}]  # fmt: skip
    calls.append(server.chat("reflection", msgs)[0])
    history = "\n".join(f"# USER\nPlease change handler_{i}.\n# ASSISTANT\nDone, handler_{i} now checks its limit." for i in range(40))
    calls.append(server.chat("other", [{"role": "system", "content": SUMMARIZER}, {"role": "user", "content": history}])[0])
    calls.append(server.chat("after", head + [{"role": "user", "content": "Add logging to handler_9."}])[0])
    middle = prefix_lines // 2
    ask = [{"role": "user", "content": "Add logging to handler_9."}]
    edited = [head[0], {"role": "user", "content": repo_map(prefix_lines, edited_line=middle)}, head[2]]
    calls.append(server.chat("edited", edited + ask)[0])
    removed = [head[0], {"role": "user", "content": repo_map(prefix_lines, removed_line=middle)}, head[2]]
    calls.append(server.chat("removed", removed + ask)[0])
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--prefix-tokens", type=int, default=2000, help="Size of system prompt + repo map.")
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--generation-only", action="store_true", help="Only measure generation speed (2 slots).")
    args = parser.parse_args()

    base = Settings(_env_file=None, llama_cpp_model=args.model, llama_cpp_context_size=8192, llama_cpp_threads=0)
    model, binary = ensure_model(base), ensure_server_bin(base)
    setups = [
        ("1 slot, no host prompt cache (--cache-ram 0)", 1, ["--cache-ram", "0"]),
        ("1 slot, host prompt cache (--cache-ram default)", 1, []),
        ("2 slots (aistack default)", 2, []),
    ]
    print(f"model {args.model}, {server_version(binary)}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    if args.generation_only:
        settings = base.model_copy(update={"llama_cpp_parallel": 2, "llama_cpp_port": free_port()})
        server = Server(settings, binary, model, [], args.log_dir / "bench_llama_cache.gen.log")
        try:
            for _ in range(3):
                print(f"generation: {server.generate(args.gen_tokens):.1f} tok/s ({args.gen_tokens} tokens, one request)")
        finally:
            server.close()
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    for title, parallel, extra in setups:
        settings = base.model_copy(update={"llama_cpp_parallel": parallel, "llama_cpp_port": free_port()})
        server = Server(settings, binary, model, extra, args.log_dir / f"bench_llama_cache.{parallel}{len(extra)}.log")
        try:
            # Grow the repo map until system prompt + map reach the wanted size.
            lines = 40
            while server.tokens(SYSTEM + repo_map(lines)) < args.prefix_tokens:
                lines += 20
            calls = sequence(server, lines)
            gen = server.generate(args.gen_tokens) if parallel == 2 else None
        finally:
            server.close()
        print(f"\n### {title}\n")
        print("| request | prompt tokens | evaluated (`prompt_n`) | reused (`cache_n`) | prompt ms | slot |")
        print("|---|---:|---:|---:|---:|---:|")
        for c in calls:
            print(f"| {c.label} | {c.prompt_tokens} | {c.evaluated} | {c.reused} | {c.prompt_ms:,.0f} | {c.slot} |")
        if gen:
            print(f"\ngeneration: {gen:.1f} tok/s ({args.gen_tokens} tokens, one request)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
