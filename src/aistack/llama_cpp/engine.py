"""Where `llama-server` comes from: LLAMA_CPP_SERVER_BIN, else PATH, else a build from source kept in the cache.

The source is the sdist of llama-cpp-python, which carries the whole llama.cpp tree under
`vendor/llama.cpp`. We only use its C++ sources: cmake builds the one `llama-server` target with
llama.cpp's own libraries linked in statically, so the binary can be copied into the cache and run
from there. ggml tunes it for this machine's CPU (`-march=native`), which suits a per-machine cache.
The cache path is keyed by the sdist's sha256, so a new pinned source never reuses an old binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from aistack.config import ConfigError, Settings
from aistack.llama_cpp import SetupError
from aistack.llama_cpp.models import sha256_file
from aistack.llama_cpp.process import file_lock, output_of, usable_cpus

BINARY = "llama-server"
SDIST = "llama-cpp-python==0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz as PyPI serves it; a download that differs is refused.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SOURCE_SUBDIR = Path("vendor/llama.cpp")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that survives being copied
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # offline: do not try to fetch the web UI during the build
)
_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def cached_bin_path(settings: Settings) -> Path:
    return settings.aistack_cache_dir / BINARY / SDIST_SHA256[:16] / BINARY


def find_server_bin(settings: Settings) -> Path | None:
    """The binary to run without building anything, or None."""
    if settings.llama_cpp_server_bin:
        binary = settings.llama_cpp_server_bin
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ConfigError(f"invalid setting LLAMA_CPP_SERVER_BIN='{binary}': not an executable file")
        return binary
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    cached = cached_bin_path(settings)
    return cached if _is_executable(cached) else None


def ensure_server_bin(settings: Settings, progress: bool = True) -> Path:
    """The `llama-server` to run, built from source into the cache the first time if none is found."""
    found = find_server_bin(settings)
    if found:
        return found
    dest = cached_bin_path(settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):  # another process may have built it while we waited
        if not _is_executable(dest):
            build_from_source(dest, progress=progress)
    return dest


def build_from_source(dest: Path, progress: bool = True, jobs: int | None = None) -> Path:
    """Download the pinned sdist, build `llama-server` with cmake, and move it to `dest` atomically."""
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise SetupError(f"building {BINARY} needs {tool} (apt-get install cmake g++), or set LLAMA_CPP_SERVER_BIN")
    jobs = jobs or min(2, usable_cpus())  # more parallel compilers need more RAM than small boxes have
    log_path = dest.parent / "build.log"
    with tempfile.TemporaryDirectory(prefix=".build-", dir=dest.parent) as tmp, log_path.open("w") as log:
        work = Path(tmp)
        with _build_progress(progress) as bar:
            step = bar.add_task("downloading llama.cpp source (pip)", total=None)
            sdist = download_sdist(work / "sdist", log)
            bar.update(step, description="unpacking llama.cpp source")
            source = unpack_source(sdist, work / "src")
            bar.update(step, description="configuring (cmake)")
            _run(["cmake", "-S", str(source), "-B", str(work / "build"), *CMAKE_FLAGS], log, log_path)
            bar.update(step, description=f"building {BINARY} (-j{jobs})", total=100, completed=0)
            build = ["cmake", "--build", str(work / "build"), "--target", BINARY, "-j", str(jobs)]
            _run(build, log, log_path, on_percent=lambda pct: bar.update(step, completed=pct))
        built = work / "build" / "bin" / BINARY
        if not _is_executable(built):
            raise SetupError(f"the build finished without {built.name}; see {log_path}")
        tmp_dest = dest.with_name(f".{BINARY}.{os.getpid()}.tmp")
        shutil.copy2(built, tmp_dest)
        os.replace(tmp_dest, dest)
    return dest


def download_sdist(into: Path, log) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(into), SDIST]
    _run(cmd, log, Path(log.name))
    sdists = list(into.glob("*.tar.gz"))
    if len(sdists) != 1:
        raise SetupError(f"pip did not leave exactly one sdist of {SDIST} in {into}")
    digest = sha256_file(sdists[0])
    if digest != SDIST_SHA256:
        raise SetupError(f"{sdists[0].name}: sha256 {digest} does not match the pinned {SDIST_SHA256}")
    return sdists[0]


def unpack_source(sdist: Path, into: Path) -> Path:
    """Unpack the sdist (with tarfile's safe `data` filter) and return its llama.cpp tree."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SetupError(f"cannot unpack {sdist.name}: {exc}") from None
    tops = [p for p in into.iterdir() if (p / SOURCE_SUBDIR / "CMakeLists.txt").is_file()]
    if not tops:
        raise SetupError(f"{sdist.name} has no {SOURCE_SUBDIR}/CMakeLists.txt")
    return tops[0] / SOURCE_SUBDIR


def server_version(binary: Path) -> str:
    """`llama-server --version`, first line (it prints to stderr)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{binary} --version failed: {exc}") from None
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0] if lines else f"(no output, exit {out.returncode})"


def _run(cmd: list[str], log, log_path: Path, on_percent=None) -> None:
    """Run a build step, its output into the log; cmake's `[ NN%]` lines drive the progress bar."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    last = ""
    with output_of(cmd) as proc:
        for line in proc.stdout:
            log.write(line)
            if line.strip():
                last = line.strip()
            if on_percent and (m := _PERCENT.match(line)):
                on_percent(int(m.group(1)))
    if proc.returncode != 0:
        log.flush()
        raise SetupError(f"`{cmd[0]} {cmd[1]} …` failed (exit {proc.returncode}): {last[:200]} — full log: {log_path}")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)



def _build_progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        disable=not enabled,
    )
