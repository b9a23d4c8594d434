"""Property-based API fuzzing of the aider-wrapper from its own OpenAPI document (see `fuzzing`):
whatever the input, a real server answers as its document says, never with a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from schemathesis import Case

from aistack.aider_wrapper.app import create_app
from aistack.config import load_settings
from fuzzing import documented_errors, fuzz_operations, load
from support import StackEnv, git, make_git_repo

EXAMPLES = 350  # per operation and mode: about 1,050 requests in all
# aider as far as the wrapper can tell (`--version`), which changes nothing: a valid request runs
# the whole path (probe, snapshots, run, result) in milliseconds, never a model.
AIDER = '#!/bin/sh\n[ "$1" = --version ] && echo "aider 0.86.2"\nexit 0\n'


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def llm_ready(stack_env: StackEnv) -> Iterator[None]:
    """llama-cpp's /health answering 200 on its port: the wrapper's probe passes and every valid
    request goes on to run aider (no completion is ever asked of it)."""
    server = ThreadingHTTPServer(("127.0.0.1", int(stack_env.values["LLAMA_CPP_PORT"])), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()
    thread.join()


def in_repo(case: Case) -> Case:
    if case.operation.label == "POST /api/execute" and isinstance(case.body, dict):
        case.body["workspace"] = "repo"
    return case


def test_no_input_makes_a_server_error_or_an_answer_unlike_the_document(stack_env, services, llm_ready):
    aider = stack_env.root / "aider"
    aider.write_text(AIDER)
    aider.chmod(0o755)
    repo = make_git_repo(stack_env.workspace_root / "repo", {"a.py": "a = 1\n"})
    stack_env.set(AIDER_BIN=aider, RALPH_WIGGUM_API_KEY="fuzz-key")
    proc = services("aider-wrapper", stack_env)
    key = {"X-API-Key": "fuzz-key"}
    schema = load(proc.url + "/openapi.json", base_url=proc.url, headers=key)

    calls = fuzz_operations(schema, EXAMPLES, valid=in_repo)

    assert {label for label, _ in calls} == {"GET /health", "POST /api/execute", "POST /api/runs/{run_id}/cancel"}
    assert sum(calls.values()) >= 1_000
    assert calls["POST /api/execute", 200] > 0 and calls["POST /api/execute", 422] > 0  # runs, and refusals
    assert git(repo, "status", "--porcelain") == ""  # aider changed nothing, and neither did the wrapper


def test_every_error_answer_is_documented_as_it_is_sent(stack_env):
    """Found by the fuzzer: the document promised FastAPI's 422 (a list of pydantic errors), which
    the wrapper never sends, and none of its other refusals."""
    document = create_app(load_settings(stack_env.env_file)).openapi()
    errors = documented_errors(document)
    assert errors["POST /api/execute"] == dict.fromkeys(("400", "401", "409", "422", "503"), "ErrorBody")
    assert errors["POST /api/runs/{run_id}/cancel"] == dict.fromkeys(("401", "404", "422"), "ErrorBody")
