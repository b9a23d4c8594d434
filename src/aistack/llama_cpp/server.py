"""`aistack serve llama-cpp`: run llama.cpp's `llama-server` as a supervised child process.

The supervisor prepares the model and the binary (proven on this machine by its self-test), then
starts llama-server, which serves the API (and its native `/health`: 503 while loading, 200 when
ready) directly on the configured port. Its log is relayed line by line to our stdout, so that a
crash can be named with the phase it happened in; SIGTERM/SIGINT are forwarded once (llama-server
shuts down gracefully on the first one), and the kernel kills it if the supervisor dies any other way.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aistack.config import ConfigError, Settings
from aistack.llama_cpp import SetupError
from aistack.llama_cpp.cpu import usable_cpus
from aistack.llama_cpp.engine import RETEST, ensure_server_bin
from aistack.llama_cpp.models import ensure_model
from aistack.llama_cpp.selftest import CRASH_SIGNALS
from aistack.procgroup import describe_exit, die_with_parent
from aistack.web import check_bind

# How long llama-server may take to shut down after a forwarded signal before it is killed.
STOP_GRACE_SECONDS = 20.0
LOADED_MARKER = b"model loaded"  # llama-server's log line once the model is loaded and warmed up


def server_command(settings: Settings, binary: Path, model: Path) -> list[str]:
    """The llama-server command line for these settings."""
    threads = settings.llama_cpp_threads or usable_cpus()
    cmd = [
        str(binary),
        "--model", str(model),
        "--alias", settings.llama_cpp_model_alias,
        "--host", settings.aistack_bind_address,
        "--port", str(settings.llama_cpp_port),
        # llama-server splits the context evenly across its slots: give each slot the configured size.
        "--ctx-size", str(settings.llama_cpp_context_size * settings.llama_cpp_parallel),
        "--parallel", str(settings.llama_cpp_parallel),
        "--threads", str(threads),
        "--cache-reuse", str(settings.llama_cpp_cache_reuse),
        # prompts evicted from a slot (e.g. aider's summarizer between two main calls) are kept here
        "--cache-ram", str(settings.llama_cpp_cache_ram),
        "--jinja",  # use the chat template the GGUF carries
    ]  # fmt: skip
    if settings.llama_cpp_metrics:
        cmd.append("--metrics")
    return cmd


def run(settings: Settings) -> int:
    """Prepare model and binary, then run llama-server until it exits; return its exit code."""
    check_bind(settings.aistack_bind_address, settings.api_key)
    _check_key(settings.api_key)
    _check_port_free(settings.aistack_bind_address, settings.llama_cpp_port)
    # Until the child runs, a SIGTERM ends us through SystemExit, so temp files get cleaned up.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        model = ensure_model(settings)
        binary = ensure_server_bin(settings)
    except SetupError as exc:
        print(f"✗ {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    cmd = server_command(settings, binary, model)
    keyed = " (every path but /health needs RALPH_WIGGUM_API_KEY)" if settings.api_key else ""
    print(f"llama-cpp: {shlex.join(cmd)}{keyed}", flush=True)
    return supervise(cmd, api_key=settings.api_key)


def supervise(cmd: list[str], grace: float = STOP_GRACE_SECONDS, api_key: str | None = None) -> int:
    """Run `cmd` as a child whose output we relay to our stdout; forward SIGTERM/SIGINT; return
    its exit code. A child killed by a signal is named, with the phase it died in, in a last
    `✗` line that `aistack up` shows as the reason.

    With `api_key`, llama-server requires it of every request but `/health`. It reads the key
    from a file without a name that it inherits (`--api-key-file /dev/fd/N`): the key is
    neither in its argv, which `ps` shows every user, nor in its environment."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as key_file:  # the child keeps its copy of the descriptor
        if api_key:
            key_file.write(api_key.encode() + b"\n")
            key_file.flush()
            cmd = [*cmd, "--api-key-file", f"/dev/fd/{key_file.fileno()}"]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # llama-server logs to stderr; the service's log is its stdout
            # Own session: a terminal's Ctrl-C reaches only us, and we forward it exactly once.
            start_new_session=True,
            preexec_fn=die_with_parent(),
            pass_fds=(key_file.fileno(),) if api_key else (),
        )
    loaded = threading.Event()
    relay = threading.Thread(target=_relay, args=(proc.stdout, loaded), daemon=True)
    relay.start()
    stop_requested: float | None = None

    def forward(signum: int, _frame) -> None:
        nonlocal stop_requested
        stop_requested = stop_requested or time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signum)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop_requested and time.monotonic() - stop_requested > grace:
                    print(f"llama-cpp: llama-server did not stop within {grace:.0f}s; killing it", flush=True)
                    proc.kill()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        relay.join(timeout=5)
    if code < 0 and not stop_requested:
        phase = "while serving" if loaded.is_set() else "while loading the model"
        hint = f"; {RETEST} on this machine" if -code in CRASH_SIGNALS else ""  # a kill from outside says nothing of the build
        print(f"✗ llama-server {describe_exit(code)} {phase}{hint}", flush=True)
    return code if code >= 0 else 128 - code  # killed by signal N → 128+N, as a shell reports it


def _relay(stream, loaded: threading.Event) -> None:
    """Copy llama-server's output to ours line by line, noting when the model has loaded."""
    writable = True
    for line in iter(stream.readline, b""):
        if not loaded.is_set() and LOADED_MARKER in line:
            loaded.set()
        if writable:
            try:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
            except OSError:  # a full disk, a closed terminal: keep draining, or llama-server blocks on its pipe
                writable = False
    stream.close()


def _check_key(api_key: str | None) -> None:
    """llama-server reads its key file a line at a time and skips lines starting with `#`: such
    a key would leave it open to all, one with a line break would let a part of it in."""
    if api_key and (api_key.startswith("#") or "\n" in api_key):
        raise ConfigError("invalid setting RALPH_WIGGUM_API_KEY: llama-server needs a key on one line that does not start with #")


def _check_port_free(host: str, port: int) -> None:
    """Fail with one line before the (possibly long) set-up if the port is taken."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"invalid setting LLAMA_CPP_PORT={port}: cannot listen on {host}:{port} ({exc.strerror})") from None


def _exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)
