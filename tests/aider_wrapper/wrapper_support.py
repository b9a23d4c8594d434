"""Helpers of the aider-wrapper suites."""

from __future__ import annotations

import os
import time
from pathlib import Path

from aistack.contracts import ExecuteResult, WrapperHealth

HEALTH_FIELDS = {"status": str, "version": str, "aider_available": bool, "workspace": str, "llama_cpp_url": str, "llm_reachable": bool}
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


def processes_in(cwd: Path) -> list[int]:
    """Live processes whose working directory is `cwd` (aider runs in the workspace)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == cwd.resolve():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
