"""Which instruction-set extensions a llama-server build may use, as ggml's cmake options.

ggml's own default (`GGML_NATIVE=ON`, i.e. `-march=native`) compiles in whatever the build
machine has, AMX included. llama.cpp's AMX kernels crash at the first decode on some machines
(upstream llama.cpp #20824: SIGSEGV in `ggml_backend_amx_mul_mat`, no fix), so on x86 the build
names every extension itself: those the CPU reports in /proc/cpuinfo, and never AMX.

Two profiles:
- `cpu`: every extension this CPU reports (AVX-512 and VNNI included): the speed of a native build.
- `portable`: at most x86-64-v3 (AVX2, FMA, F16C, BMI2): what to fall back to when the `cpu`
  build crashes in its self-test.

Everything here is a pure function of a `Cpu` record, so it is tested with made-up CPUs.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

_AVX512_BASE = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})  # what GGML_AVX512 compiles for

# ggml option → the /proc/cpuinfo flags it needs, in ggml's own order.
X86_OPTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("GGML_SSE42", frozenset({"sse4_2"})),
    ("GGML_AVX", frozenset({"avx"})),
    ("GGML_AVX2", frozenset({"avx2"})),
    ("GGML_FMA", frozenset({"fma"})),
    ("GGML_F16C", frozenset({"f16c"})),
    ("GGML_BMI2", frozenset({"bmi2"})),
    ("GGML_AVX_VNNI", frozenset({"avx_vnni"})),
    ("GGML_AVX512", _AVX512_BASE),
    ("GGML_AVX512_VBMI", _AVX512_BASE | {"avx512vbmi"}),
    ("GGML_AVX512_VNNI", _AVX512_BASE | {"avx512_vnni"}),
    ("GGML_AVX512_BF16", _AVX512_BASE | {"avx512_bf16"}),
)
PORTABLE_OPTIONS = frozenset({"GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"})
NEVER_OPTIONS = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")  # llama.cpp #20824
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})


class Profile(str, Enum):
    cpu = "cpu"
    portable = "portable"


@dataclass(frozen=True)
class Cpu:
    machine: str  # platform.machine(): x86_64, aarch64, …
    model: str  # "Intel(R) Xeon(R) Platinum 8480+", for people
    flags: frozenset[str]  # x86 "flags" / Arm "Features" of /proc/cpuinfo

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in X86_MACHINES

    def fingerprint(self) -> str:
        """Names this CPU as a build target and as a place a binary was proven on."""
        text = "\n".join([self.machine, self.model, *sorted(self.flags)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """This machine's CPU as the kernel describes it (the first processor's entry)."""
    model, flags = "", frozenset[str]()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return Cpu(platform.machine() or "unknown", model or "unknown", flags)


def cmake_flags(cpu: Cpu, profile: Profile) -> tuple[str, ...]:
    """ggml's instruction-set options for this CPU and profile; AMX is always off."""
    if not cpu.is_x86:  # no AMX elsewhere: a native build is safe, a generic one is the fallback
        return ("-DGGML_NATIVE=ON",) if profile is Profile.cpu else ("-DGGML_NATIVE=OFF",)
    flags = ["-DGGML_NATIVE=OFF"]
    for option, needs in X86_OPTIONS:
        on = needs <= cpu.flags and (profile is Profile.cpu or option in PORTABLE_OPTIONS)
        flags.append(f"-D{option}={'ON' if on else 'OFF'}")
    flags += [f"-D{option}=OFF" for option in NEVER_OPTIONS]
    return tuple(flags)


def enabled_extensions(flags: tuple[str, ...]) -> str:
    """`AVX2 FMA AVX512 …` for people, from cmake flags; `native` for a native build."""
    if "-DGGML_NATIVE=ON" in flags:
        return "native"
    names = [f.removeprefix("-DGGML_").removesuffix("=ON") for f in flags if f.startswith("-DGGML_") and f.endswith("=ON")]
    return " ".join(names) or "none beyond the baseline"


def usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
