"""Fixtures of the lifecycle suites: an isolated stack whose background services are always stopped."""

from __future__ import annotations

import pytest
from lifecycle_support import SMALL_LLAMA, aistack

from support import StackEnv


@pytest.fixture
def stack(stack_env: StackEnv):
    """`stack_env` with small start-up timeouts; `aistack down` runs at the end whatever happened."""
    stack_env.set(STARTUP_TIMEOUT_SECONDS=3, **SMALL_LLAMA)
    yield stack_env
    aistack(stack_env, "down", "--timeout", "5")
