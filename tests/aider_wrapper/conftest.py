"""Fixtures of the aider-wrapper suites: a real llama-server (through `aistack serve llama-cpp`)
shared by a module's tests, and wrappers pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import ServiceProcess, StackEnv, new_stack_env

# SmolLM2-135M: quick to load and fast enough on two cores to exercise real runs of aider.
SMOL = {"LLAMA_CPP_MODEL": "smollm2-135m", "LLAMA_CPP_CONTEXT_SIZE": "4096", "LLAMA_CPP_PARALLEL": "2"}
# The stack's default coder model, for a run that must actually succeed.
CODER = {"LLAMA_CPP_MODEL": "qwen2.5-coder-1.5b", "LLAMA_CPP_CONTEXT_SIZE": "8192", "LLAMA_CPP_PARALLEL": "1"}


def _llama(tmp_path_factory: pytest.TempPathFactory, values: dict[str, str]) -> Iterator[StackEnv]:
    env = new_stack_env(tmp_path_factory.mktemp("llama")).set(**values)
    proc = ServiceProcess("llama-cpp", env)
    try:
        proc.wait_healthy(timeout=300)
        yield env
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def smol_llama(tmp_path_factory) -> Iterator[StackEnv]:
    yield from _llama(tmp_path_factory, SMOL)


@pytest.fixture(scope="module")
def coder_llama(tmp_path_factory) -> Iterator[StackEnv]:
    yield from _llama(tmp_path_factory, CODER)


def point_at(env: StackEnv, llama: StackEnv) -> StackEnv:
    """Make `env`'s wrapper use `llama`'s server and model settings."""
    keys = ("LLAMA_CPP_PORT", "LLAMA_CPP_MODEL", "LLAMA_CPP_CONTEXT_SIZE", "LLAMA_CPP_MODEL_ALIAS")
    return env.set(**{k: v for k, v in llama.values.items() if k in keys})
