"""Finding and building llama-server, and the command line the supervisor gives it (no binary needed)."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from aistack.config import ConfigError, Settings
from aistack.llama_cpp import SetupError, engine
from aistack.llama_cpp.cpu import Profile, read_cpu
from aistack.llama_cpp.engine import SDIST_SHA256, cached_bin_path, unpack_source, user_server_bin
from aistack.llama_cpp.selftest import Verdict, proof_path, record
from aistack.llama_cpp.server import server_command, supervise


def settings_for(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, aistack_cache_dir=tmp_path / "cache", **values)


def test_server_bin_setting_must_be_an_executable(tmp_path):
    script = tmp_path / "llama-server"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match=r"^invalid setting LLAMA_CPP_SERVER_BIN='.*llama-server': not an executable file"):
        user_server_bin(settings_for(tmp_path, llama_cpp_server_bin=script))
    script.chmod(0o755)
    assert user_server_bin(settings_for(tmp_path, llama_cpp_server_bin=script)) == script


def test_cached_binary_is_found_without_building_once_proven(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # nothing on PATH
    settings = settings_for(tmp_path)
    cached = cached_bin_path(settings, read_cpu(), Profile.cpu)
    assert cached.is_relative_to(tmp_path / "cache" / "llama-server" / SDIST_SHA256[:16])
    assert user_server_bin(settings) is None
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    record(proof_path(settings.aistack_cache_dir, cached), cached, Verdict(True, "generated a token"))
    monkeypatch.setattr(engine, "build_from_source", lambda *a, **k: pytest.fail("must not build"))
    monkeypatch.setattr(engine, "run_self_test", lambda *a, **k: pytest.fail("proven already: no second self-test"))
    assert engine.ensure_server_bin(settings, progress=False) == cached


def test_on_path_wins_over_the_cache(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "llama-server").write_text("#!/bin/sh\n")
    (bindir / "llama-server").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    assert user_server_bin(settings_for(tmp_path)) == bindir / "llama-server"


def test_build_steps_report_cmake_percentages_and_fail_with_the_log(tmp_path):
    log_path = tmp_path / "build.log"
    seen: list[int] = []
    with log_path.open("w") as log:
        engine._run(["sh", "-c", "echo '[  7%] Building a'; echo 'noise'; echo '[100%] Built target llama-server'"],
                    log, log_path, on_percent=seen.append)  # fmt: skip
    assert seen == [7, 100]
    assert "noise" in log_path.read_text()
    with log_path.open("w") as log, pytest.raises(SetupError, match=r"exit 3\): boom — full log: .*build\.log"):
        engine._run(["sh", "-c", "echo boom; exit 3"], log, log_path)


def _tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unpack_source_finds_the_vendored_tree_and_refuses_escaping_paths(tmp_path):
    sdist = _tarball(tmp_path / "src.tar.gz", {"pkg-1/vendor/llama.cpp/CMakeLists.txt": b"project(x)\n"})
    assert unpack_source(sdist, tmp_path / "out") == tmp_path / "out" / "pkg-1" / "vendor" / "llama.cpp"
    evil = _tarball(tmp_path / "evil.tar.gz", {"../escaped.txt": b"x"})
    with pytest.raises(SetupError, match="cannot unpack evil.tar.gz"):
        unpack_source(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()
    empty = _tarball(tmp_path / "empty.tar.gz", {"pkg-1/README": b""})
    with pytest.raises(SetupError, match=r"has no vendor/llama\.cpp/CMakeLists\.txt"):
        unpack_source(empty, tmp_path / "out3")


def test_server_command_follows_the_settings(tmp_path):
    settings = settings_for(
        tmp_path, llama_cpp_port=9123, llama_cpp_context_size=4096, llama_cpp_parallel=3, llama_cpp_threads=0,
        llama_cpp_cache_reuse=128, llama_cpp_model_alias="coder", aistack_bind_address="127.0.0.2",
    )  # fmt: skip
    cmd = server_command(settings, Path("/bin/llama-server"), Path("/m.gguf"))
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=False))  # pairs up to the first bare flag
    assert cmd[0] == "/bin/llama-server"
    assert opts["--model"] == "/m.gguf" and opts["--alias"] == "coder"
    assert opts["--host"] == "127.0.0.2" and opts["--port"] == "9123"
    assert opts["--ctx-size"] == str(4096 * 3) and opts["--parallel"] == "3"  # per-slot context × slots
    assert opts["--threads"] == str(len(os.sched_getaffinity(0))) and opts["--cache-reuse"] == "128"
    assert opts["--cache-ram"] == "2048"
    assert "--jinja" in cmd and "--metrics" in cmd
    no_metrics = server_command(settings.model_copy(update={"llama_cpp_metrics": False, "llama_cpp_threads": 1}), Path("b"), Path("m"))
    assert "--metrics" not in no_metrics and no_metrics[no_metrics.index("--threads") + 1] == "1"


def test_supervise_returns_the_child_exit_code():
    assert supervise([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    assert supervise([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]) == 128 + 9
