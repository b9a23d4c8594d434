"""The CLI agents' backends without a model: what each is told (its HOME's configuration, its
LLM endpoint), when it is available, and the token counts read from what it printed."""

from __future__ import annotations

import json

import httpx
import pytest

from aistack.config import Settings
from aistack.ralph_wiggum.backends.agents import NPM_PACKAGES, cli_agents, opencode_tokens, qwen_tokens
from aistack.ralph_wiggum.backends.command import not_on_path, program
from support import make_git_repo, missing, wait_until

# `opencode run --format json` against llama-server with the bundled model (1.18.33), as printed.
OPENCODE_OUTPUT = """\
{"type":"step_start","timestamp":1795974945649,"sessionID":"ses_1","part":{"id":"prt_1","messageID":"msg_1","sessionID":"ses_1","type":"step-start"}}
{"type":"text","timestamp":1795975109102,"sessionID":"ses_1","part":{"id":"prt_2","messageID":"msg_1","sessionID":"ses_1","type":"text","text":"done"}}
{"type":"step_finish","timestamp":1795975109278,"sessionID":"ses_1","part":{"id":"prt_3","reason":"stop","messageID":"msg_1","sessionID":"ses_1","type":"step-finish","tokens":{"total":1459,"input":1418,"output":35,"reasoning":0,"cache":{"write":0,"read":6}},"cost":0}}
"""


def settings(tmp_path, **values) -> Settings:
    return Settings(aistack_cache_dir=tmp_path / "cache", aistack_data_dir=tmp_path / "data", llama_cpp_host="127.0.0.1", **values)


def test_token_counts_are_read_from_what_the_agents_print():
    assert opencode_tokens(OPENCODE_OUTPUT).model_dump() == {"prompt": 1418, "completion": 35}
    assert opencode_tokens(OPENCODE_OUTPUT * 2).model_dump() == {"prompt": 2836, "completion": 70}  # one step per model call
    result = [{"type": "system"}, {"type": "result", "usage": {"input_tokens": 2710, "output_tokens": 41, "total_tokens": 2751}}]
    assert qwen_tokens(json.dumps(result)).model_dump() == {"prompt": 2710, "completion": 41}
    assert opencode_tokens("Error: no model\n").model_dump() == qwen_tokens("{not json").model_dump() == {"prompt": 0, "completion": 0}


def test_continue_counts_come_from_the_session_it_saved_in_its_home(tmp_path):
    [agent] = [a for a in cli_agents(settings(tmp_path)) if a.name == "continue"]
    sessions = tmp_path / ".continue" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "0-earlier.json").write_text('{"usage": {"promptTokens": 9, "completionTokens": 9}}')
    assert agent.configure and agent.tokens
    agent.configure(tmp_path)  # before a run: the last run's session goes
    sessions.mkdir()
    # what cn 1.5.47 saved after a run against llama-server (its session list beside it)
    usage = {"totalCost": 0.002112, "promptTokens": 2040, "completionTokens": 36, "promptTokensDetails": {"cachedTokens": 0}}
    (sessions / "239472d0-d8ed-46fa-b3cb-8c938bc4a2de.json").write_text(json.dumps({"sessionId": "2394", "history": [], "usage": usage}))
    (sessions / "sessions.json").write_text('[{"sessionId": "2394"}]')
    assert agent.tokens('{"status":"success"}', tmp_path).model_dump() == {"prompt": 2040, "completion": 36}


def test_an_agent_missing_from_the_prefix_is_unavailable_naming_how_to_install_it(tmp_path):
    agents = {agent.name: agent for agent in cli_agents(settings(tmp_path))}
    assert list(agents) == ["continue", "opencode", "qwen-code", "goose", "autogpt"]
    for name in ("continue", "opencode", "qwen-code"):
        assert agents[name].missing == (
            f"not installed: scripts/setup.sh installs it (npm install --prefix {tmp_path / 'cache' / 'npm'} {NPM_PACKAGES[name]})"
        )
    installed = tmp_path / "cache" / "npm" / "node_modules" / ".bin"
    installed.mkdir(parents=True)
    (installed / "opencode").write_text("")
    assert {a.name: a.missing for a in cli_agents(settings(tmp_path))}["opencode"] is None


def test_each_agent_is_pointed_at_llama_server_with_the_key_and_no_telemetry(tmp_path):
    agents = {agent.name: agent for agent in cli_agents(settings(tmp_path, llama_cpp_port=8181, ralph_wiggum_api_key="k3y"))}
    for name, agent in agents.items():
        home = tmp_path / name
        if agent.configure:
            agent.configure(home)
        written = "".join(p.read_text() for p in home.rglob("*") if p.is_file()) if home.exists() else ""
        told = " ".join(agent.environ.values()) + written
        assert "http://127.0.0.1:8181" in told, name
        assert "k3y" in told or name in ("goose", "autogpt"), name  # the presets get the key in OPENAI_API_KEY
        assert agent.environ.get("OPENAI_API_KEY", "k3y") == "k3y"
    assert agents["continue"].environ["CONTINUE_CLI_ENABLE_TELEMETRY"] == "0"
    assert agents["opencode"].environ["OPENCODE_DISABLE_AUTOUPDATE"] == agents["opencode"].environ["OPENCODE_DISABLE_SHARE"] == "1"
    qwen = json.loads((tmp_path / "qwen-code" / ".qwen" / "settings.json").read_text())
    assert qwen["privacy"]["usageStatisticsEnabled"] is False and qwen["telemetry"]["enabled"] is False
    assert oct((tmp_path / "continue" / ".continue" / "config.yaml").stat().st_mode)[-3:] == "600"  # it holds the key


def test_a_preset_is_available_once_its_program_is_on_path(tmp_path, monkeypatch):
    assert program('GOOSE_MODEL="$X" OPENAI_HOST=a/b goose run -i "$F"') == "goose"
    assert not_on_path("goose run", "get it") == "not installed: 'goose' is not on PATH (get it)"
    (tmp_path / "goose").write_text("#!/bin/sh\n")
    (tmp_path / "goose").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert not_on_path("GOOSE_PROVIDER=openai goose run", "get it") is None


@pytest.mark.parametrize("backend", ["continue", "qwen-code"])
def test_an_unreachable_llm_is_a_transient_failure_that_spends_no_iteration(stack_env, services, backend):
    """The real agent, run by a real orchestrator, against a port where no llama-server listens."""
    stack_env.set(RALPH_TRANSIENT_RETRY_SECONDS=1)
    make_git_repo(stack_env.workspace_root / "repo")
    with httpx.Client(base_url=services("ralph-wiggum", stack_env).url, timeout=10) as client:
        health = {b["name"]: b for b in client.get("/health").json()["backends"]}[backend]
        if not health["available"]:
            missing(f"{backend}: {health['detail']}")
        resp = client.post("/tasks", json={"prompt": "Create hello.py", "backend": backend, "workspace": "repo", "max_iterations": 2})
        task_id = resp.json()["task_id"]
        assert wait_until(lambda: client.get(f"/tasks/{task_id}").json()["status"] == "failed", timeout=180)
        task = client.get(f"/tasks/{task_id}").json()
    assert task["error"].startswith(f"{backend} could not reach the LLM — gave up after 1 s of retries"), task
    assert task["iteration"] == 0
