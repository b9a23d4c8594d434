"""Where `llama-server` comes from, and the proof that it runs on this machine.

LLAMA_CPP_SERVER_BIN, else PATH, else a build from source kept in the cache. The source is the
sdist of llama-cpp-python, which carries the whole llama.cpp tree under `vendor/llama.cpp`; cmake
builds the one `llama-server` target with llama.cpp's libraries linked in statically, so the
binary can live in the cache and run from there.

The build names its instruction-set extensions itself (`cpu.cmake_flags`: what this CPU reports,
never AMX) instead of `-march=native`. The cache path is keyed by the sdist, those flags, the
user's LLAMA_CPP_CMAKE_ARGS and, for a native build, the CPU: a copied cache or a changed flag
never picks up a binary built for something else. Whatever binary is chosen must pass its
self-test on this machine (`selftest`) before it serves; a cached build that crashes there is
rebuilt with the portable flags, while a binary the user named is reported and left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import nullcontext
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from aistack.config import ConfigError, Settings
from aistack.files import atomic_file, atomic_write, file_lock
from aistack.llama_cpp import SetupError
from aistack.llama_cpp.cpu import Cpu, Profile, cmake_flags, enabled_extensions, read_cpu, usable_cpus
from aistack.llama_cpp.models import MODELS, check_model_file, ensure_model, is_verified, models_dir, sha256_file
from aistack.llama_cpp.selftest import Verdict, proof_path, record, recorded, run_self_test
from aistack.procgroup import output_of
from aistack.terminal import err_console

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
RETEST = "`aistack engine --check` tests it again"


def build_flags(settings: Settings, cpu: Cpu, profile: Profile) -> tuple[str, ...]:
    """Every cmake flag of a build: ours, the instruction sets for `cpu`, then the user's (which win)."""
    return (*CMAKE_FLAGS, *cmake_flags(cpu, profile), *shlex.split(settings.llama_cpp_cmake_args))


def cached_bin_path(settings: Settings, cpu: Cpu, profile: Profile) -> Path:
    """`<cache>/llama-server/<sdist>/<key>/llama-server`. The key covers every flag, so two
    profiles with the same flags share one binary; and the CPU itself too, unless our flags alone
    name each instruction set (a native build, or the user's own flags, may pick them from the CPU)."""
    flags = build_flags(settings, cpu, profile)
    cpu_specific = bool(settings.llama_cpp_cmake_args.strip()) or "-DGGML_NATIVE=ON" in flags
    key = hashlib.sha256("\n".join([SDIST_SHA256, *flags, cpu.fingerprint() if cpu_specific else ""]).encode()).hexdigest()
    return settings.aistack_cache_dir / BINARY / SDIST_SHA256[:16] / key[:16] / BINARY


def profiles(settings: Settings) -> list[Profile]:
    return [Profile.portable] if settings.llama_cpp_build == "portable" else [Profile.cpu, Profile.portable]


def user_server_bin(settings: Settings) -> Path | None:
    """A binary the user provides (LLAMA_CPP_SERVER_BIN, else one on PATH), or None."""
    if settings.llama_cpp_server_bin:
        binary = settings.llama_cpp_server_bin
        if not _is_executable(binary):
            raise ConfigError(f"invalid setting LLAMA_CPP_SERVER_BIN='{binary}': not an executable file")
        return binary
    on_path = shutil.which(BINARY)
    return Path(on_path) if on_path else None


def ensure_server_bin(settings: Settings, progress: bool = True, recheck: bool = False) -> Path:
    """The `llama-server` to run, proven on this machine. A cached build that crashes in its
    self-test is replaced by the next profile's build; a user's binary that fails raises."""
    if (user := user_server_bin(settings)) is not None:
        return _proven_user_binary(settings, user, progress, recheck)
    cpu = read_cpu()
    builds: dict[Path, Profile] = {}
    for profile in profiles(settings):
        builds.setdefault(cached_bin_path(settings, cpu, profile), profile)  # one per distinct flag set
    for n, (dest, profile) in enumerate(builds.items(), start=1):
        dest.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dest):  # another process may be building or testing it
            if not _is_executable(dest):
                build_from_source(dest, build_flags(settings, cpu, profile), progress=progress)
            verdict, tested_now = prove(settings, dest, progress, recheck)
        if verdict.ok:
            return dest
        if not verdict.crashed:  # not the CPU's fault: another build would fail the same way
            raise SetupError(f"llama-server {verdict.detail} in its self-test (log: {verdict.log}); {RETEST}")
        if tested_now and n < len(builds):  # said once, when it happens; later starts take the build that works
            _say(f"⚠ llama-server built for this CPU ({enabled_extensions(cmake_flags(cpu, profile))}) "
                          f"{verdict.detail} in its self-test; building it with the portable flag set instead")  # fmt: skip
    raise SetupError(f"llama-server {verdict.detail} in its self-test with every flag set (log: {verdict.log}); {RETEST}")


def _proven_user_binary(settings: Settings, binary: Path, progress: bool, recheck: bool) -> Path:
    """A binary the user named is proven like ours, but never replaced: a failure is reported."""
    verdict, _ = prove(settings, binary, progress, recheck)
    if not verdict.ok:
        where = "LLAMA_CPP_SERVER_BIN" if settings.llama_cpp_server_bin else "PATH"
        raise SetupError(
            f"{binary} (from {where}) {verdict.detail} in its self-test; it is left as it is: fix it, or remove it "
            f"from {where} to have aistack build one (log: {verdict.log}); {RETEST}"
        )
    return binary


def prove(settings: Settings, binary: Path, progress: bool = True, recheck: bool = False) -> tuple[Verdict, bool]:
    """The binary's verdict on this machine, and whether it was tested now (else it was recorded).
    Only what says something about the binary on this CPU is recorded (it worked, or it crashed);
    any other failure (a slow start on a busy box, a port taken meanwhile) is tested again next time."""
    proof = proof_path(settings.aistack_cache_dir, binary)
    if not recheck and (known := recorded(proof)) is not None:
        return known, False
    model = self_test_model(settings)
    status = err_console.status(f"self-test: {binary.name} loads {model.name} and generates a token…")
    with status if progress else nullcontext():
        verdict = run_self_test(binary, model, proof.with_suffix(".log"), threads=min(2, usable_cpus()))
    if verdict.ok or verdict.crashed:
        record(proof, binary, verdict)
    return verdict, True


def self_test_model(settings: Settings) -> Path:
    """The smallest bundled model already in the cache, else the user's LLAMA_CPP_MODEL_FILE
    (nothing to fetch offline), else the smallest bundled one, assembled now."""
    smallest_first = sorted(MODELS.values(), key=lambda m: m.size)
    for model in smallest_first:
        if is_verified(model, path := models_dir(settings) / model.file_name):
            return path
    if settings.llama_cpp_model_file:
        return check_model_file(settings.llama_cpp_model_file)
    return ensure_model(settings, smallest_first[0].name)


def build_from_source(dest: Path, flags: tuple[str, ...], progress: bool = True, jobs: int | None = None) -> Path:
    """Download the pinned sdist, build `llama-server` with cmake, and move it to `dest` atomically;
    `build.json` beside it records the flags and the CPU it was built on."""
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
            bar.update(step, description=f"configuring (cmake: {enabled_extensions(flags)})")
            _run(["cmake", "-S", str(source), "-B", str(work / "build"), *flags], log, log_path)
            bar.update(step, description=f"building {BINARY} (-j{jobs})", total=100, completed=0)
            build = ["cmake", "--build", str(work / "build"), "--target", BINARY, "-j", str(jobs)]
            _run(build, log, log_path, on_percent=lambda pct: bar.update(step, completed=pct))
        built = work / "build" / "bin" / BINARY
        if not _is_executable(built):
            raise SetupError(f"the build finished without {built.name}; see {log_path}")
        cpu = read_cpu()
        info = {"sdist": SDIST, "flags": list(flags), "cpu": cpu.model, "cpu_flags": sorted(cpu.flags)}
        atomic_write(dest.parent / "build.json", json.dumps(info, indent=1), mode=0o644)
        with built.open("rb") as binary, atomic_file(dest, mode=0o755) as target:
            shutil.copyfileobj(binary, target)
    return dest


def build_info(binary: Path) -> dict | None:
    """What `build_from_source` recorded beside a cached binary (None for any other binary)."""
    try:
        return json.loads((binary.parent / "build.json").read_text())
    except (OSError, ValueError):
        return None


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
        for line in proc.stdout or ():
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


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True)


def _build_progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        disable=not enabled,
    )
