"""aider's command line, environment and model files, derived from Settings."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aistack.aider_wrapper import invocation
from aistack.config import Settings
from aistack.contracts import Sampling


def settings_for(tmp_path: Path, **values) -> Settings:
    return Settings(aistack_data_dir=tmp_path / "data", workspace_root=tmp_path / "ws", llama_cpp_host="127.0.0.1", **values)


def test_model_files_describe_the_served_model(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, llama_cpp_model_alias="my-coder", llama_cpp_context_size=8192)
    files = invocation.write_model_files(cfg)
    [entry] = json.loads(files.model_settings.read_text())
    assert entry["name"] == "openai/my-coder"
    assert entry["edit_format"] == "whole"  # auto → whole for small local models
    assert entry["weak_model_name"] == "openai/my-coder"  # no second model is ever called
    assert entry["use_repo_map"] is False  # 8k context: no repo map
    assert entry["extra_params"] == {"max_tokens": 2048}
    meta = json.loads(files.model_metadata.read_text())["openai/my-coder"]
    assert meta["max_output_tokens"] == 2048
    assert meta["max_input_tokens"] + meta["max_output_tokens"] == 8192
    assert meta["input_cost_per_token"] == meta["output_cost_per_token"] == 0
    assert files.model_settings.parent == cfg.aistack_data_dir / "aider"
    assert files.home.is_dir() and files.runs.is_dir()


@pytest.mark.parametrize(("configured", "used"), [("auto", "whole"), ("diff", "diff"), ("udiff", "udiff")])
def test_edit_format_is_configurable(tmp_path: Path, configured: str, used: str) -> None:
    cfg = settings_for(tmp_path, aider_edit_format=configured)
    assert json.loads(invocation.write_model_files(cfg).model_settings.read_text())[0]["edit_format"] == used


def test_large_context_gets_a_repo_map_and_capped_output(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, llama_cpp_context_size=32768)
    [entry] = json.loads(invocation.write_model_files(cfg).model_settings.read_text())
    assert entry["use_repo_map"] is True
    assert entry["extra_params"]["max_tokens"] == invocation.MAX_OUTPUT_TOKENS
    assert invocation.map_tokens(cfg) > 0


def test_command_line_keeps_aider_offline_and_out_of_the_workspace(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, llama_cpp_port=8123)
    files = invocation.write_model_files(cfg)
    run = invocation.RunFiles(files.runs / "r1")
    ws = tmp_path / "ws" / "repo"
    cmd = invocation.aider_command(cfg, Path("/opt/aider"), files, run, [str(ws / "a.py")], [str(ws / "doc.md")], 60, cfg.llm_urls[0])
    assert cmd[0] == "/opt/aider"
    assert cmd[cmd.index("--model") + 1] == "openai/local-coder"
    assert cmd[cmd.index("--openai-api-base") + 1] == "http://127.0.0.1:8123/v1"
    assert cmd[cmd.index("--message-file") + 1] == str(run.message)
    for flag in ("--yes-always", "--no-auto-commits", "--no-gitignore", "--no-check-update", "--analytics-disable",
                 "--no-suggest-shell-commands", "--no-detect-urls", "--no-stream"):  # fmt: skip
        assert flag in cmd
    for flag in ("--input-history-file", "--chat-history-file", "--llm-history-file", "--analytics-log"):
        assert Path(cmd[cmd.index(flag) + 1]).parent == run.folder
    assert cmd[cmd.index("--read") + 1] == str(ws / "doc.md")
    assert cmd[-1] == str(ws / "a.py")
    assert "--openai-api-key" not in cmd  # a key in argv is there for `ps` to show: it goes in the environment
    assert "--auto-test" not in cmd and "--test-cmd" not in cmd  # aider tests its edits only when asked


def test_a_test_command_makes_aider_test_and_reflect(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path)
    files = invocation.write_model_files(cfg)
    ws = tmp_path / "ws" / "repo"
    test = "timeout 60 python3 -m pytest -q -x test_a.py"
    cmd = invocation.aider_command(
        cfg, Path("/opt/aider"), files, invocation.RunFiles(files.runs / "r1"), [str(ws / "a.py")], [], 60, cfg.llm_urls[0], test
    )
    assert "--auto-test" in cmd and cmd[cmd.index("--test-cmd") + 1] == invocation.auto_test_command(test)  # one argument
    assert cmd[-1] == str(ws / "a.py")


def test_the_test_command_prints_for_a_plain_pipe_in_aiders_environment(tmp_path: Path) -> None:
    """aider runs its test command with `/bin/sh -c` in its own environment, whose COLUMNS keeps
    aider's lines whole; the failing test's output is what the model is shown next, so pytest must
    draw its rules as wide as for any pipe, not 10,000 characters."""
    cfg = settings_for(tmp_path)
    env = invocation.aider_env(cfg, invocation.write_model_files(cfg))
    (tmp_path / "test_a.py").write_text("def test_a():\n    assert 1 + 1 == 3\n")
    test = f"{shlex.quote(sys.executable)} -m pytest -q -x -p no:cacheprovider test_a.py"
    done = subprocess.run(invocation.auto_test_command(test), shell=True, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "assert (1 + 1) == 3" in done.stdout
    assert max(map(len, done.stdout.splitlines())) <= 200
    assert env["COLUMNS"] == "10000"  # aider's own lines stay whole


def test_a_run_with_its_own_sampling_gets_model_settings_of_its_own(tmp_path: Path) -> None:
    cfg = settings_for(tmp_path, llama_cpp_context_size=8192)
    files = invocation.write_model_files(cfg)
    run = invocation.RunFiles(files.runs / "r1")
    run.folder.mkdir()
    own = invocation.write_run_model_settings(cfg, run, Sampling(temperature=0.7, seed=3))
    [entry] = json.loads(own.read_text())
    assert own.parent == run.folder
    assert entry["use_temperature"] == 0.7 and entry["extra_params"] == {"max_tokens": 2048, "seed": 3}
    [shared] = json.loads(files.model_settings.read_text())
    assert shared["use_temperature"] is True and shared == {**entry, "use_temperature": True, "extra_params": {"max_tokens": 2048}}
    cmd = invocation.aider_command(cfg, Path("/opt/aider"), files, run, [], [], 60, cfg.llm_urls[0], model_settings=own)
    assert cmd[cmd.index("--model-settings-file") + 1] == str(own)
    assert "--restore-chat-history" not in cmd  # no run carries an earlier run's chat: each starts from its prompt


def test_environment_hides_our_settings_and_secrets_from_aider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDER_EDIT_FORMAT", "diff")  # aider would read this as --edit-format
    for name in ("OPENAI_API_KEY", "GITHUB_TOKEN", "UNLISTED"):
        monkeypatch.setenv(name, "secret")
    monkeypatch.setenv("RALPH_WIGGUM_API_KEY", "stack-key")  # the stack's key: aider gets it only to reach llama-server
    monkeypatch.setenv("AISTACK_ENV_FILE", "/home/me/.config/aistack/.env")
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    monkeypatch.setenv("MY_CA_BUNDLE", "/etc/ca.pem")
    cfg = settings_for(tmp_path, ralph_agent_env_passthrough="MY_CA_BUNDLE")
    files = invocation.write_model_files(cfg)
    env = invocation.aider_env(cfg, files)
    assert not [k for k in env if k.startswith(("AIDER_", "OPENAI_", "GIT_", "AISTACK_", "RALPH_")) and k != "OPENAI_API_KEY"]
    assert env["OPENAI_API_KEY"] == "stack-key"  # the key llama-server requires, not the caller's OPENAI_API_KEY
    assert "secret" not in env.values() and "UNLISTED" not in env and "GITHUB_TOKEN" not in env
    assert env["MY_CA_BUNDLE"] == "/etc/ca.pem"
    assert env["HOME"] == str(files.home)
    assert "127.0.0.1" in env["NO_PROXY"]
    # Without a key llama-server takes any; aider still needs one to send.
    monkeypatch.delenv("RALPH_WIGGUM_API_KEY")
    assert invocation.aider_env(settings_for(tmp_path), files)["OPENAI_API_KEY"] == invocation.DUMMY_API_KEY


def test_find_aider_prefers_the_configured_binary(tmp_path: Path) -> None:
    assert invocation.find_aider(settings_for(tmp_path, aider_bin="/nonexistent/aider")) == Path("/nonexistent/aider")
