"""The instruction sets a llama-server build is given, and the cache key that follows from them (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistack.config import ConfigError, Settings, load_settings
from aistack.llama_cpp.cpu import Cpu, Profile, cmake_flags, enabled_extensions, read_cpu
from aistack.llama_cpp.engine import SDIST_SHA256, build_flags, cached_bin_path, profiles

AVX512_BASE = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
SAPPHIRE_RAPIDS = Cpu(
    "x86_64",
    "Intel(R) Xeon(R) Platinum 8480+",
    frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", *AVX512_BASE, "avx512vbmi",
               "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}),
)  # fmt: skip
HASWELL = Cpu("x86_64", "Intel(R) Xeon(R) CPU E5-2680 v3", frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}))
ARM = Cpu("aarch64", "unknown", frozenset({"fp", "asimd", "sve"}))


def options(flags: tuple[str, ...]) -> dict[str, str]:
    return dict(f.removeprefix("-D").split("=", 1) for f in flags if f.startswith("-D"))


def settings_for(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, aistack_cache_dir=tmp_path / "cache", **values)


def test_an_amx_cpu_gets_every_extension_it_has_but_amx():
    opts = options(cmake_flags(SAPPHIRE_RAPIDS, Profile.cpu))
    assert opts["GGML_NATIVE"] == "OFF"  # -march=native would switch AMX on
    assert {k: v for k, v in opts.items() if "AMX" in k} == {"GGML_AMX_TILE": "OFF", "GGML_AMX_INT8": "OFF", "GGML_AMX_BF16": "OFF"}
    for kept in ("AVX2", "FMA", "F16C", "BMI2", "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"):
        assert opts[f"GGML_{kept}"] == "ON", kept


def test_the_portable_profile_stops_at_avx2():
    opts = options(cmake_flags(SAPPHIRE_RAPIDS, Profile.portable))
    assert opts["GGML_NATIVE"] == "OFF" and opts["GGML_AVX2"] == "ON" and opts["GGML_FMA"] == "ON"
    assert all(opts[k] == "OFF" for k in opts if "AVX512" in k or "AMX" in k or k == "GGML_AVX_VNNI")


def test_only_what_the_cpu_reports_is_switched_on():
    opts = options(cmake_flags(HASWELL, Profile.cpu))
    assert opts["GGML_AVX2"] == "ON" and opts["GGML_AVX512"] == "OFF" and opts["GGML_AVX_VNNI"] == "OFF"
    assert cmake_flags(HASWELL, Profile.cpu) == cmake_flags(HASWELL, Profile.portable)  # nothing beyond v3 to drop
    # AVX-512 extensions need the AVX-512 base the build compiles them with
    partial = Cpu("x86_64", "odd", frozenset({"avx2", "avx512_vnni", "avx512f"}))
    assert options(cmake_flags(partial, Profile.cpu))["GGML_AVX512_VNNI"] == "OFF"


def test_other_architectures_build_natively_or_generically():
    assert cmake_flags(ARM, Profile.cpu) == ("-DGGML_NATIVE=ON",)
    assert cmake_flags(ARM, Profile.portable) == ("-DGGML_NATIVE=OFF",)


def test_this_machines_cpu_is_read_and_never_gets_amx():
    cpu = read_cpu()
    assert cpu.flags, "no CPU flags read from /proc/cpuinfo"
    flags = cmake_flags(cpu, Profile.cpu)
    assert not [f for f in flags if "AMX" in f and f.endswith("=ON")]
    if cpu.is_x86:
        assert "-DGGML_NATIVE=OFF" in flags and ("-DGGML_AVX2=ON" in flags) == ("avx2" in cpu.flags)


def test_user_flags_come_last_and_are_reported(tmp_path):
    settings = settings_for(tmp_path, llama_cpp_cmake_args="-DGGML_CUDA=ON '-DCMAKE_CUDA_ARCHITECTURES=90'")
    flags = build_flags(settings, HASWELL, Profile.cpu)
    assert flags[-2:] == ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90")
    assert "CUDA" in enabled_extensions(flags).split()
    assert enabled_extensions(cmake_flags(ARM, Profile.cpu)) == "native"


def test_the_cache_key_follows_the_flags_and_the_cpu_where_it_decides(tmp_path):
    plain = settings_for(tmp_path)
    key = cached_bin_path(plain, SAPPHIRE_RAPIDS, Profile.cpu)
    assert key == cached_bin_path(plain, SAPPHIRE_RAPIDS, Profile.cpu)  # stable
    assert key.name == "llama-server" and key.parent.parent.name == SDIST_SHA256[:16]
    sandy_bridge = Cpu("x86_64", "Intel(R) Xeon(R) CPU E5-2670", frozenset({"sse4_2", "avx"}))
    others = {
        cached_bin_path(plain, SAPPHIRE_RAPIDS, Profile.portable),
        cached_bin_path(plain, sandy_bridge, Profile.cpu),
        cached_bin_path(settings_for(tmp_path, llama_cpp_cmake_args="-DGGML_CUDA=ON"), SAPPHIRE_RAPIDS, Profile.cpu),
    }
    assert key not in others and len(others) == 3
    # The same flags are one binary: a CPU with nothing beyond AVX2 builds once for both profiles,
    # and that is the portable build of a bigger CPU.
    assert cached_bin_path(plain, HASWELL, Profile.cpu) == cached_bin_path(plain, HASWELL, Profile.portable)
    assert cached_bin_path(plain, HASWELL, Profile.cpu) == cached_bin_path(plain, SAPPHIRE_RAPIDS, Profile.portable)
    # Same flags from a CPU with an unrelated extra flag: the same binary serves both...
    same_isa = Cpu("x86_64", "another model name", SAPPHIRE_RAPIDS.flags | {"hypervisor"})
    assert cached_bin_path(plain, same_isa, Profile.cpu) == key
    # ...but where the compiler picks the extensions (a native build, or flags of the user's own,
    # however they spell it) the CPU itself is part of the key.
    other_arm = Cpu("aarch64", "unknown", frozenset({"fp", "asimd"}))
    assert cached_bin_path(plain, ARM, Profile.cpu) != cached_bin_path(plain, other_arm, Profile.cpu)
    for own in ("-DGGML_NATIVE:BOOL=on", "-DCMAKE_C_FLAGS=-march=native"):
        user = settings_for(tmp_path, llama_cpp_cmake_args=own)
        assert cached_bin_path(user, SAPPHIRE_RAPIDS, Profile.cpu) != cached_bin_path(user, same_isa, Profile.cpu), own


def test_the_build_setting_chooses_the_profiles(tmp_path):
    assert profiles(settings_for(tmp_path)) == [Profile.cpu, Profile.portable]
    assert profiles(settings_for(tmp_path, llama_cpp_build="portable")) == [Profile.portable]


def test_bad_cmake_args_are_a_one_line_config_error(tmp_path):
    env = tmp_path / ".env"
    env.write_text('LLAMA_CPP_CMAKE_ARGS="-DGGML_CUDA=ON \'-DX=unterminated"\n')
    with pytest.raises(ConfigError, match=r"^invalid setting LLAMA_CPP_CMAKE_ARGS="):
        load_settings(env)
