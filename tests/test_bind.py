"""Every service refuses to listen beyond loopback without the API key, before doing anything else."""

from __future__ import annotations

import subprocess

import pytest

from aistack import services
from support import AISTACK, child_env


@pytest.mark.parametrize("service", services.NAMES)
def test_non_loopback_bind_without_key_is_refused(stack_env, service):
    stack_env.set(AISTACK_BIND_ADDRESS="0.0.0.0")
    done = subprocess.run([*AISTACK, "serve", service], env=child_env(stack_env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "✗ invalid setting AISTACK_BIND_ADDRESS='0.0.0.0': binding beyond loopback needs RALPH_WIGGUM_API_KEY set"
    ]
    assert not stack_env.data_dir.exists()  # refused before it prepared anything
