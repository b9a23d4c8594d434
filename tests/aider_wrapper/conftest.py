"""Fixtures of the aider-wrapper suites: a real llama-server (through `aistack serve llama-cpp`)
shared by a module's tests, and wrappers pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wrapper_support import CODER, SMOL

from support import ServiceProcess, StackEnv, new_stack_env


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
