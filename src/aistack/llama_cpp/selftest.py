"""Prove a llama-server binary on the machine it runs on: load a small model, generate one token.

A binary that works where it was built can crash elsewhere: a copied cache, a PATH install, a
cloud VM whose CPU has AMX (llama.cpp #20824 segfaults at the first decode there). So before a
binary serves on a machine for the first time, it runs once on loopback with a small model. The
verdict is recorded per binary (path, size, mtime) and machine (CPU, kernel, machine id), so the
test costs a few seconds once, and a binary replaced on disk or moved to another machine is
tested again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from aistack import health
from aistack.files import atomic_write
from aistack.health import Health
from aistack.llama_cpp.cpu import read_cpu
from aistack.procgroup import describe_exit, die_with_parent

READY_TIMEOUT_SECONDS = 180.0  # loading a small model takes a second; a busy 2-core box is slow
GENERATE_TIMEOUT_SECONDS = 120.0
# Signals that mean "this code does not run on this CPU": an illegal instruction, a bad memory
# access in a kernel (llama.cpp #20824). An abort (a failed ggml assertion, bad_alloc under memory
# pressure) or a kill from outside says nothing about the build.
CRASH_SIGNALS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS})


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # one line: "loaded … and generated a token in 1.9 s" / "was killed by SIGSEGV (signal 11) while loading the model"
    crashed: bool = False  # died of a crash signal: this build does not fit this CPU
    log: str = ""  # the test's llama-server log


@functools.cache  # a process runs on one machine
def machine_fingerprint() -> str:
    """This machine as far as a native binary can tell: the CPU, the kernel (it enables AMX
    state per process), and the machine id where there is one."""
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    text = "\n".join([read_cpu().fingerprint(), platform.release(), machine_id])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def proof_path(cache_dir: Path, binary: Path) -> Path:
    """Where the verdict for this binary on this machine is kept."""
    real = binary.resolve()
    st = real.stat()
    key = f"{real}\n{st.st_size}\n{st.st_mtime_ns}\n{machine_fingerprint()}"
    return cache_dir / "llama-server" / "proofs" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def recorded(proof: Path) -> Verdict | None:
    """The verdict kept at `proof` (a `proof_path`), if any."""
    try:
        data = json.loads(proof.read_text())
        return Verdict(**{name: data[name] for name in Verdict.__dataclass_fields__})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def record(proof: Path, binary: Path, verdict: Verdict) -> None:
    atomic_write(proof, json.dumps({**asdict(verdict), "binary": str(binary.resolve()), "tested_at": time.time()}))


def run_self_test(binary: Path, model: Path, log_path: Path, threads: int) -> Verdict:
    """Start `binary` on a free loopback port with `model`, wait for /health, generate one token."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--ctx-size", "512", "--parallel", "1", "--threads", str(threads)]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log_path.open("wb") as log, httpx.Client(base_url=url, trust_env=False) as client:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(),
        )  # fmt: skip

        def exited() -> Health | None:  # its exit status is read by `_ended`
            return Health("exited", "") if proc.poll() is not None else None

        try:
            phase = "while loading the model"
            if not health.wait_ready(f"{url}/health", time.monotonic() + READY_TIMEOUT_SECONDS, 0.1, exited).ready:
                return _ended(proc, phase, log_path, f"not ready {READY_TIMEOUT_SECONDS:.0f} s after it started")
            phase = "while generating a token"
            try:
                reply = client.post("/completion", json={"prompt": "def add(a, b):", "n_predict": 1, "temperature": 0},
                                    timeout=GENERATE_TIMEOUT_SECONDS)  # fmt: skip
            except httpx.HTTPError as exc:
                return _ended(proc, phase, log_path, f"no answer ({type(exc).__name__})")
            if reply.status_code != 200 or not _generated(reply):
                return _ended(proc, phase, log_path, f"answered {reply.status_code}: {reply.text[:200]}")
            return Verdict(True, f"loaded {model.name} and generated a token in {time.monotonic() - t0:.1f} s", log=str(log_path))
        finally:
            _stop(proc)


def _generated(reply: httpx.Response) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("content"), str)


def _ended(proc: subprocess.Popen, phase: str, log_path: Path, otherwise: str) -> Verdict:
    """The verdict on a test that went wrong: how the process ended, if it did."""
    try:
        code = proc.wait(timeout=5)  # a crash mid-request closes the connection a moment before the exit
    except subprocess.TimeoutExpired:
        return Verdict(False, f"{otherwise} {phase}", log=str(log_path))
    crashed = code < 0 and -code in CRASH_SIGNALS
    return Verdict(False, f"{describe_exit(code)} {phase}", crashed=crashed, log=str(log_path))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
