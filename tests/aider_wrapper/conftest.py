"""Fixtures of the aider-wrapper suites: a real llama-server (through `aistack serve llama-cpp`)
shared by a module's tests, and wrappers pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wrapper_support import CODER, SMOL

from support import StackEnv, serving_llama


@pytest.fixture(scope="module")
def smol_llama(tmp_path_factory) -> Iterator[StackEnv]:
    yield from serving_llama(tmp_path_factory, SMOL)


@pytest.fixture(scope="module")
def coder_llama(tmp_path_factory) -> Iterator[StackEnv]:
    yield from serving_llama(tmp_path_factory, CODER)
