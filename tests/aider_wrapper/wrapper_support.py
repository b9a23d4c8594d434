"""Helpers of the aider-wrapper suites."""

from __future__ import annotations

import httpx

from aistack.contracts import ExecuteResult, WrapperHealth
from support import StackEnv

HEALTH_FIELDS = {
    "status": str, "version": str, "aider_available": bool, "workspace": str, "llama_cpp_url": str, "llm_reachable": bool,
    "llm_endpoints": list, "isolation": dict, "uptime_seconds": float,
}  # fmt: skip
RESULT_FIELDS = {
    "status": str, "output": str, "error": (str, type(None)), "files_modified": list, "duration_seconds": float,
    "exit_code": (int, type(None)), "completed": bool, "transient": bool, "tokens": dict,
}  # fmt: skip


def check_health(body: dict) -> WrapperHealth:
    assert set(body) == set(HEALTH_FIELDS), body
    for name, kind in HEALTH_FIELDS.items():
        assert isinstance(body[name], kind), (name, body[name])
    return WrapperHealth.model_validate(body)


def check_result(body: dict) -> ExecuteResult:
    """Every field present with its JSON type, and the model accepts it."""
    assert set(body) == set(RESULT_FIELDS), body
    for name, kind in RESULT_FIELDS.items():
        assert isinstance(body[name], kind), (name, body[name])
    assert set(body["tokens"]) == {"prompt", "completion"}
    assert all(isinstance(v, int) and v >= 0 for v in body["tokens"].values())
    assert all(isinstance(p, str) for p in body["files_modified"])
    assert body["status"] in ("success", "error")
    assert (body["error"] is None) == (body["status"] == "success")
    return ExecuteResult.model_validate(body)


def llm_busy(llama: StackEnv) -> bool:
    """llama-server is working on a request (a slot is processing): aider is in its LLM call."""
    try:
        slots = httpx.get(llama.url("llama-cpp") + "/slots", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return any(isinstance(slot, dict) and slot.get("is_processing") for slot in slots)


# SmolLM2-135M: quick to load and fast enough on two cores to exercise real runs of aider.
SMOL = {"LLAMA_CPP_MODEL": "smollm2-135m", "LLAMA_CPP_CONTEXT_SIZE": "4096", "LLAMA_CPP_PARALLEL": "2"}
# The stack's default coder model, for a run that must actually succeed.
CODER = {"LLAMA_CPP_MODEL": "qwen2.5-coder-1.5b", "LLAMA_CPP_CONTEXT_SIZE": "8192", "LLAMA_CPP_PARALLEL": "1"}


def point_at(env: StackEnv, llama: StackEnv) -> StackEnv:
    """Make `env`'s wrapper use `llama`'s server and model settings."""
    keys = ("LLAMA_CPP_PORT", "LLAMA_CPP_MODEL", "LLAMA_CPP_CONTEXT_SIZE", "LLAMA_CPP_MODEL_ALIAS")
    return env.set(**{k: v for k, v in llama.values.items() if k in keys})
