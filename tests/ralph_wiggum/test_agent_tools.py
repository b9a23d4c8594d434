"""What the in-process agent's tools may do in a worktree (real files, real git, a real check
process), how a small model's tool call written as text is taken, and what is read back from
mini-swe-agent's trajectory. The backends end to end, on the real model: tests/e2e/test_agent_backends.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from aistack.config import Settings
from aistack.ralph_wiggum.backends import IterationRequest, langchain_graph
from aistack.ralph_wiggum.backends.langchain_agent import LangchainBackend
from aistack.ralph_wiggum.backends.langchain_graph import _as_tool_call
from aistack.ralph_wiggum.backends.llm import LocalLlm
from aistack.ralph_wiggum.backends.mini_swe_agent import MiniSweAgentBackend, _tokens, _transcript
from aistack.ralph_wiggum.backends.worktree_tools import WorktreeTools
from aistack.ralph_wiggum.shell import run_shell
from aistack.sandbox import Sandbox
from support import free_port, git, make_git_repo, missing, wait_until

CHECK = "python3 -c \"import hello; assert hello.hello() == 'hello'\""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", {"README.md": "# sample\n", "src/app.py": "def main():\n    return 'hello'\n"})


def test_tools_read_write_list_and_search_inside_the_worktree(tree):
    tools = WorktreeTools(tree)

    async def scenario():
        wrote = await tools.write_file("pkg/new.py", "VALUE = 42\n")
        return wrote, await tools.read_file("pkg/new.py"), await tools.list_files(), await tools.search("hello|VALUE")

    wrote, read, listed, found = asyncio.run(scenario())
    assert wrote == "wrote 11 characters to pkg/new.py" and (tree / "pkg" / "new.py").read_text() == "VALUE = 42\n"
    assert read == "VALUE = 42\n"
    assert listed.splitlines() == ["README.md", "pkg/new.py", "src/app.py"]  # new files too, .git never
    assert found.splitlines() == ["pkg/new.py:1:VALUE = 42", "src/app.py:2:    return 'hello'"]


def test_tools_refuse_every_path_outside_the_worktree_and_its_git_metadata(tree, tmp_path):
    worktree = tmp_path / "worktree"  # as the runner makes them: `.git` is a file pointing into the repository
    git(tree, "worktree", "add", "-q", "-b", "task", str(worktree))
    pointer = (worktree / ".git").read_text()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    (worktree / "link").symlink_to(tmp_path)  # a way out, by its name inside
    tools = WorktreeTools(worktree)

    async def scenario():
        return [
            await tools.write_file("../outside.txt", "overwritten"),
            await tools.write_file(str(outside), "overwritten"),
            await tools.write_file("link/outside.txt", "overwritten"),
            await tools.write_file(".git", "gitdir: /elsewhere\n"),
            await tools.write_file(str(tree / ".git" / "hooks" / "pre-commit"), "#!/bin/sh\necho owned\n"),
            await tools.read_file("link/outside.txt"),
            await tools.read_file("../outside.txt"),
            await tools.list_files(".."),
            await tools.search("secret", "link"),
        ]

    answers = asyncio.run(scenario())
    assert all(answer.startswith("error: ") for answer in answers), answers
    assert not any("secret" in answer for answer in answers)
    assert outside.read_text() == "secret\n"
    assert (worktree / ".git").read_text() == pointer
    assert not (tree / ".git" / "hooks" / "pre-commit").exists()


def test_tool_errors_are_answers_for_the_model(tree):
    tools = WorktreeTools(tree)
    missing, directory, no_check = asyncio.run(_all(tools.read_file("nope.py"), tools.write_file("src", "x"), tools.run_check()))
    assert missing == "error: nope.py: No such file or directory"
    assert directory == "error: src is a directory"
    assert no_check == "error: this task has no check command"


def test_check_tool_runs_the_check_and_removes_only_what_the_check_left(tree):
    check = "python3 -c \"import app; assert app.main() == 'hi'\""  # fails, and leaves __pycache__ behind

    async def run_check():
        return await run_shell(check, tree / "src", timeout=60)

    tools = WorktreeTools(tree, run_check)

    async def scenario():
        await tools.write_file("src/notes.txt", "mine\n")  # the agent's own new file stays
        return await tools.run_check()

    answer = asyncio.run(scenario())
    assert answer.startswith("the check exited with 1\n") and "AssertionError" in answer
    assert (tree / "src" / "notes.txt").read_text() == "mine\n"
    assert not list(tree.rglob("*.pyc"))
    assert git(tree, "status", "--porcelain", "--untracked-files=all") == "?? src/notes.txt"


def test_a_tool_call_written_as_json_text_becomes_a_tool_call():
    names = {"write_file", "read_file"}
    fenced = AIMessage(content='```json\n{"name": "write_file", "arguments": {"path": "hello.py", "content": "x = 1"}}\n```')
    tagged = AIMessage(content='<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>')
    call = _as_tool_call(fenced, names)
    assert call.content == ""
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("write_file", {"path": "hello.py", "content": "x = 1"})]
    assert [c["name"] for c in _as_tool_call(tagged, names).tool_calls] == ["read_file"]
    for text in ("Done: hello.py now returns 'hello'.", '{"name": "rm_rf", "arguments": {}}', '{"name": "read_file", "arguments": "a.py"}'):
        assert _as_tool_call(AIMessage(content=text), names).tool_calls == []  # prose, an unknown tool, bad arguments


TRAJECTORY = {
    "info": {"exit_status": "Submitted"},
    "messages": [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Please solve this issue: Create hello.py"},
        {
            "role": "assistant",
            "content": "I will write the file.",
            "extra": {
                "actions": [{"command": "printf 'x' > hello.py"}],
                "response": {"usage": {"prompt_tokens": 900, "completion_tokens": 40}},
            },
        },
        {"role": "tool", "content": '{"returncode": 0, "output": ""}'},
        {"role": "user", "content": "Format error", "extra": {"response": {"usage": {"prompt_tokens": 950, "completion_tokens": 12}}}},
        {"role": "exit", "content": "", "extra": {"exit_status": "Submitted"}},
    ],
}


def test_mini_swe_agent_trajectory_gives_tokens_and_transcript():
    tokens = _tokens(TRAJECTORY)
    assert (tokens.prompt, tokens.completion) == (1850, 52)
    assert _transcript(TRAJECTORY).splitlines() == [
        "I will write the file.",
        "$ printf 'x' > hello.py",
        '{"returncode": 0, "output": ""}',
        "Format error",
        "[Submitted]",
    ]
    broken = json.loads(json.dumps({"info": [], "messages": [None, 3, {"role": "assistant", "content": None, "extra": []}]}))
    assert _tokens(broken).prompt == 0 and _transcript(broken) == ""


async def _all(*coroutines):
    return [await c for c in coroutines]


# --- the backends' own behaviour: an LLM that is down, a stop --------------------------------------


def backend_settings(tmp_path: Path) -> Settings:
    """Settings whose llama-cpp port nobody listens on."""
    return Settings(_env_file=None, aistack_data_dir=tmp_path / "data", workspace_root=tmp_path, llama_cpp_host="127.0.0.1",
                    llama_cpp_port=free_port())  # fmt: skip


def request(tree: Path, task_id: str) -> IterationRequest:
    return IterationRequest(task_id=task_id, iteration=1, prompt="Create hello.py", worktree=tree, timeout_seconds=120, check_command=CHECK)


@pytest.mark.parametrize("backend", [LangchainBackend, MiniSweAgentBackend])
def test_an_unreachable_llm_is_a_transient_failure(backend, tree, tmp_path):
    settings = backend_settings(tmp_path)
    agent = backend(settings, Sandbox(settings, tmp_path / ".env"), LocalLlm(settings))
    if not agent.health().available:
        missing(f"{agent.name}: {agent.health().detail}")

    async def scenario():
        try:
            return await agent.run(request(tree, "t1"))
        finally:
            await agent.close()

    result = asyncio.run(scenario())
    assert result.status == "error" and result.transient, result
    assert "LLM unreachable" in (result.error or "")
    assert git(tree, "status", "--porcelain") == ""


class ScriptedModel(GenericFakeChatModel):
    """Replies from a script, tool calls included (the loop logic around it is what is tested)."""

    def bind_tools(self, tools, **kwargs):
        return self


def test_stopping_the_langchain_agent_ends_its_running_check(tree):
    pid_file = tree.parent / "check.pid"
    check = f"sleep 300 & echo $! > {pid_file}; wait"
    model = ScriptedModel(messages=iter([AIMessage(content="", tool_calls=[{"name": "run_check", "args": {}, "id": "call_1"}])]))
    tools = WorktreeTools(tree, lambda: run_shell(check, tree, timeout=600))

    async def scenario():
        drive = asyncio.create_task(langchain_graph.drive(langchain_graph.Transcript(), model, tools, "Create hello.py", check, 4))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.05)
        drive.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drive
        return int(pid_file.read_text())

    sleeper = asyncio.run(scenario())
    assert wait_until(lambda: not Path(f"/proc/{sleeper}").exists() or "Z" in Path(f"/proc/{sleeper}/stat").read_text().split()[2])


def test_the_agent_starts_with_the_files_the_task_names_and_only_those_inside(tree, tmp_path):
    (tmp_path / "secret.txt").write_text("secret\n")
    opening = asyncio.run(langchain_graph.opening("Fix main.", WorktreeTools(tree), ["src/app.py", "../secret.txt"]))
    assert opening.startswith("Fix main.\n\nsrc/app.py:\n```\ndef main():\n    return 'hello'\n")
    assert "../secret.txt:\n```\nerror:" in opening and "secret\n" not in opening.split("../secret.txt:")[1]
    assert asyncio.run(langchain_graph.opening("Fix main.", WorktreeTools(tree), [])) == "Fix main."
