"""The engine's self-test and what follows from its verdict, with binaries that crash on purpose.

The real llama-server does not crash on this machine, so a crash is injected: small programs that
take llama-server's command line and kill themselves with SIGSEGV at a chosen moment. The real
binary's own self-test runs in `test_llama_service.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from aistack.config import Settings
from aistack.llama_cpp import SetupError, engine
from aistack.llama_cpp.cpu import Cpu, Profile
from aistack.llama_cpp.selftest import proof_path, recorded, run_self_test
from aistack.llama_cpp.server import supervise

# A stand-in llama-server: /health answers 200, /completion answers one token, unless told to crash.
FAKE_SERVER = """#!{python}
import http.server, json, os, signal, sys
CRASH = {crash!r}
if CRASH == "load":
    print("llama_model_loader: loading model", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
if CRASH == "exit":
    print("error: unknown argument", flush=True)
    sys.exit(1)
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self._send({{"status": "ok"}})
    def do_POST(self):
        if CRASH == "generate":
            os.kill(os.getpid(), signal.SIGSEGV)
        self._send({{"content": " return"}})
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""
AMX_CPU = Cpu("x86_64", "Intel(R) Xeon(R) Platinum 8480+",
              frozenset({"avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw",
                         "amx_tile", "amx_int8"}))  # fmt: skip


def fake_server(path: Path, crash: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_SERVER.format(python=sys.executable, crash=crash))
    path.chmod(0o755)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def settings(tmp_path: Path, model: Path, monkeypatch) -> Settings:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no llama-server on PATH
    monkeypatch.setattr(engine, "self_test_model", lambda _settings: model)
    return Settings(_env_file=None, aistack_cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("crash", "ok", "crashed", "detail"),
    [
        (None, True, False, r"^loaded tiny\.gguf and generated a token in \d+\.\d s$"),
        ("load", False, True, r"^was killed by SIGSEGV \(signal 11\) while loading the model$"),
        ("generate", False, True, r"^was killed by SIGSEGV \(signal 11\) while generating a token$"),
        ("exit", False, False, r"^exited with status 1 while loading the model$"),
    ],
)
def test_the_self_test_names_how_and_when_a_binary_failed(tmp_path, model, crash, ok, crashed, detail):
    binary = fake_server(tmp_path / "bin" / "llama-server", crash)
    verdict = run_self_test(binary, model, tmp_path / "self-test.log", threads=1)
    assert (verdict.ok, verdict.crashed) == (ok, crashed)
    assert re.match(detail, verdict.detail), verdict.detail
    if crash == "load":
        assert "llama_model_loader" in Path(verdict.log).read_text()


def test_a_users_binary_that_crashes_is_reported_and_left_alone(tmp_path, settings, monkeypatch):
    binary = fake_server(tmp_path / "opt" / "llama-server", "load")
    before = binary.read_bytes()
    monkeypatch.setattr(engine, "build_from_source", lambda *a, **k: pytest.fail("a user's binary is never replaced"))
    user = settings.model_copy(update={"llama_cpp_server_bin": binary})
    with pytest.raises(SetupError) as failed:
        engine.ensure_server_bin(user, progress=False)
    message = str(failed.value)
    assert "was killed by SIGSEGV (signal 11) while loading the model in its self-test" in message
    assert "LLAMA_CPP_SERVER_BIN" in message and "left as it is" in message and "\n" not in message
    assert "`aistack engine --check` tests it again" in message
    assert binary.read_bytes() == before
    # a crash is remembered for this binary on this machine; a fixed binary (a new file) is tested again
    fake_server(binary, None)
    assert engine.ensure_server_bin(user, progress=False) == binary


def test_a_cached_build_that_crashes_is_rebuilt_with_portable_flags(settings, monkeypatch, capfd):
    monkeypatch.setattr(engine, "read_cpu", lambda: AMX_CPU)
    built: list[tuple[str, ...]] = []

    def build(dest: Path, flags: tuple[str, ...], progress: bool = True) -> Path:
        built.append(flags)
        return fake_server(dest, "load" if "-DGGML_AVX512=ON" in flags else None)  # the AVX-512 build crashes

    monkeypatch.setattr(engine, "build_from_source", build)
    chosen = engine.ensure_server_bin(settings, progress=False)
    notes = capfd.readouterr().err.splitlines()
    assert chosen == engine.cached_bin_path(settings, AMX_CPU, Profile.portable)
    assert len(built) == 2 and "-DGGML_AVX512=ON" in built[0] and "-DGGML_AVX512=OFF" in built[1]
    assert all("-DGGML_AMX_INT8=OFF" in flags for flags in built)
    assert len(notes) == 1 and "AVX512" in notes[0] and "was killed by SIGSEGV (signal 11) while loading the model" in notes[0]
    assert "portable" in notes[0]
    crashed = recorded(proof_path(settings.aistack_cache_dir, engine.cached_bin_path(settings, AMX_CPU, Profile.cpu)))
    assert crashed is not None and crashed.crashed and not crashed.ok

    # Next time: both verdicts are known, nothing is built or tested again.
    monkeypatch.setattr(engine, "build_from_source", lambda *a, **k: pytest.fail("must not build again"))
    monkeypatch.setattr(engine, "run_self_test", lambda *a, **k: pytest.fail("must not test again"))
    assert engine.ensure_server_bin(settings, progress=False) == chosen
    assert capfd.readouterr().err == ""


def test_a_build_that_fails_without_crashing_is_not_rebuilt(settings, monkeypatch):
    monkeypatch.setattr(engine, "read_cpu", lambda: AMX_CPU)
    built = []
    monkeypatch.setattr(engine, "build_from_source", lambda dest, flags, progress=True: built.append(dest) or fake_server(dest, "exit"))
    with pytest.raises(SetupError, match=r"exited with status 1 while loading the model in its self-test \(log: "):
        engine.ensure_server_bin(settings, progress=False)
    assert len(built) == 1  # another flag set would fail the same way


def test_a_crash_while_serving_is_named_with_its_phase(capfd):
    code = supervise(["sh", "-c", "echo 'llama_model_loader: loading'; kill -SEGV $$"])
    out = capfd.readouterr().out
    assert code == 128 + 11
    assert "llama_model_loader: loading" in out  # the child's log is relayed
    assert "✗ llama-server was killed by SIGSEGV (signal 11) while loading the model" in out
    assert supervise(["sh", "-c", "echo 'main: model loaded'; kill -ILL $$"]) == 128 + 4
    assert "✗ llama-server was killed by SIGILL (signal 4) while serving" in capfd.readouterr().out


def test_a_failure_that_is_not_a_crash_is_tested_again_next_time(tmp_path, settings, monkeypatch):
    """A slow start on a busy machine, a port taken meanwhile: nothing about the binary, so nothing
    is remembered — the next start tests it again."""
    binary = fake_server(tmp_path / "opt" / "llama-server", "exit")
    user = settings.model_copy(update={"llama_cpp_server_bin": binary})
    runs = []
    real = engine.run_self_test
    monkeypatch.setattr(engine, "run_self_test", lambda *a, **k: runs.append(1) or real(*a, **k))
    for _ in range(2):
        with pytest.raises(SetupError, match=r"exited with status 1 while loading the model in its self-test"):
            engine.ensure_server_bin(user, progress=False)
    assert len(runs) == 2


def test_a_cpu_with_nothing_beyond_avx2_builds_once(settings, monkeypatch, capfd):
    haswell = Cpu("x86_64", "Intel(R) Xeon(R) CPU E5-2680 v3", frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}))
    monkeypatch.setattr(engine, "read_cpu", lambda: haswell)
    built = []
    monkeypatch.setattr(engine, "build_from_source", lambda dest, flags, progress=True: built.append(flags) or fake_server(dest, "load"))
    with pytest.raises(SetupError, match="with every flag set"):
        engine.ensure_server_bin(settings, progress=False)
    assert len(built) == 1 and capfd.readouterr().err == ""  # cpu and portable builds are one binary: no second build, no "instead"
