"""Agents and checks get no secret of the service, run under resource limits, and, where bwrap
works, in a sandbox: a real `aistack serve ralph-wiggum`, real shell agents, real git, and the
task's work read back through the API, as a user (or an attacker) would read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from aistack.config import Settings
from aistack.contracts import PROMPT_MAX_CHARS
from aistack.sandbox import Sandbox, bwrap_problem
from support import StackEnv, git, make_git_repo, missing, wait_until

# What deploy/compose.yaml and a developer's shell put in the service's environment.
SECRETS = {"OPENAI_API_KEY": "sk-openai-0f1e2d", "GITHUB_TOKEN": "ghp-github-3c4b5a", "RALPH_WIGGUM_API_KEY": "ralph-key-9a8b7c"}
ENDED = {"completed", "exhausted", "failed"}


def needs(sandbox: str) -> None:
    if sandbox == "bwrap" and (problem := bwrap_problem()):
        missing(f"the bwrap sandbox cannot be tested: {problem}")


def start(stack_env: StackEnv, services, agent: str, extra_env: dict[str, str] | None = None, **settings) -> httpx.Client:
    script = stack_env.root / "agent.sh"
    script.write_text(agent)
    script.chmod(0o755)
    stack_env.set(RALPH_COMMAND_BACKEND=script, **settings)
    proc = services("ralph-wiggum", stack_env, extra_env)
    key = (extra_env or {}).get("RALPH_WIGGUM_API_KEY")
    return httpx.Client(base_url=proc.url, timeout=10, headers={"X-API-Key": key} if key else {})


def run_task(client: httpx.Client, **body) -> tuple[dict, list[dict]]:
    """Submit a command-backend task on `repo`, wait for its end; the task and its iterations."""
    resp = client.post("/tasks", json={"backend": "command", "workspace": "repo", "prompt": "go", "max_iterations": 1, **body})
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    deadline = time.monotonic() + 60
    while (task := client.get(f"/tasks/{task_id}").json())["status"] not in ENDED:
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
    return task, client.get(f"/tasks/{task_id}/iterations").json()


@pytest.mark.parametrize("sandbox", ["off", "bwrap"])
def test_agent_and_check_see_only_allowed_variables(stack_env, services, sandbox):
    """The agent commits its whole environment and the check prints its own: neither holds a
    secret of the service, though both hold the task variables and what the user passed on."""
    needs(sandbox)
    extra = {**SECRETS, "MY_TOOL_SETTING": "passed-on", "UNLISTED_SETTING": "kept-back"}
    client = start(stack_env, services, "#!/bin/sh\nenv > agent-env.txt\n", extra, RALPH_SANDBOX=sandbox,
                   RALPH_AGENT_ENV_PASSTHROUGH="MY_TOOL_SETTING, LC_ALL")  # fmt: skip
    make_git_repo(stack_env.workspace_root / "repo")

    task, [iteration] = run_task(client, check_command="env")

    assert task["status"] == "completed", task
    diff = client.get(f"/tasks/{task['id']}/diff").json()["diff"]
    agent_env = dict(line[1:].split("=", 1) for line in diff.splitlines() if line.startswith("+") and "=" in line)
    check_env = dict(line.split("=", 1) for line in iteration["check_output"].splitlines() if "=" in line)
    for env in (agent_env, check_env):
        assert env["AISTACK_TASK_ID"] == task["id"] and env["AISTACK_ITERATION"] == "1"
        assert env["MY_TOOL_SETTING"] == "passed-on" and env["PATH"]
        assert not set(env) & {*SECRETS, "UNLISTED_SETTING", "AISTACK_ENV_FILE", "AISTACK_PROMPT"}
        assert env["HOME"] != str(Path.home()) and Path(env["HOME"]).is_relative_to(stack_env.data_dir / "agents")
    shown = diff + iteration["check_output"]
    assert not [value for value in SECRETS.values() if value in shown]
    assert agent_env["HOME"] == check_env["HOME"]  # the task's own home
    assert wait_until(lambda: not Path(agent_env["HOME"]).exists())  # given back with the task's worktree


def test_a_prompt_longer_than_exec_allows_reaches_the_agent(stack_env, services):
    """A variable holds at most 128 KiB (MAX_ARG_STRLEN): the prompt comes on stdin and in a file
    outside the worktree, so the longest prompt the API takes, in two-byte characters, arrives whole."""
    client = start(stack_env, services, '#!/bin/sh\nwc -c < "$AISTACK_PROMPT_FILE" > file.txt\nwc -c > stdin.txt\n')
    make_git_repo(stack_env.workspace_root / "repo")
    prompt = "é" * PROMPT_MAX_CHARS  # 131,072 bytes: over MAX_ARG_STRLEN as a variable

    task, [iteration] = run_task(client, prompt=prompt)

    assert task["status"] == "completed", (task, iteration["output_excerpt"])
    assert iteration["files_modified"] == ["file.txt", "stdin.txt"]  # the prompt file itself is never committed
    branch = f"aistack/{task['id']}"
    for name in ("file.txt", "stdin.txt"):
        assert int(git(stack_env.workspace_root / "repo", "show", f"{branch}:{name}")) == len(prompt.encode())


def test_the_sandbox_hides_the_service_and_keeps_writes_in_the_worktree(stack_env, services):
    """What an agent tries, and what it may do, under bwrap: it reads no database, `.env`, git
    credentials or other task's worktree, changes nothing outside its worktree and home (not the repository's git
    config, not the `.git` file that points at it), and its task still completes."""
    needs("bwrap")
    repo = make_git_repo(stack_env.workspace_root / "repo")
    data = stack_env.data_dir
    (data / "worktrees" / "other-task").mkdir(parents=True)
    (data / "worktrees" / "other-task" / "work.txt").write_text("another task's work\n")
    disk = Path(tempfile.mkdtemp(dir="/var/tmp"))  # the machine's disk, not /tmp (a sandbox has its own)
    credentials = Path(tempfile.mkdtemp(dir="/var/tmp")) / "git-credentials"  # as a mounted secret lies: outside /tmp
    credentials.write_text("https://bot:s3cr3t@git.example.com\n")
    probes = {
        "read the database": f"test -s {data / 'aistack.db'}",
        "read the .env": f"grep -q RALPH_COMMAND_BACKEND {stack_env.env_file}",
        "read the git credentials": f"grep -q s3cr3t {credentials}",
        "see another task": f"test -e {data / 'worktrees' / 'other-task' / 'work.txt'}",
        "write to the disk": f"echo x > {disk / 'agent.txt'}",
        "plant a git hook": f"git config core.fsmonitor 'touch {stack_env.root / 'pwned'}'",
        "redirect .git": "echo 'gitdir: /elsewhere' > .git",
        "write its home": 'echo x > "$HOME/.agentrc"',
        "read its prompt": 'test -s "$AISTACK_PROMPT_FILE"',
        "read git history": "git log --oneline -1",
    }
    lines = "".join(
        f'if ( {probe} ) >/dev/null 2>&1; then echo "{what}: yes"; else echo "{what}: no"; fi\n' for what, probe in probes.items()
    )
    # The checkout and the test's directory lie under /tmp here: written there, they land in the private /tmp.
    lines += f"echo x > {repo / 'escaped.txt'}; echo x > {stack_env.root / 'outside.txt'}\n"
    agent = f"#!/bin/sh\n{{\n{lines}}} > report.txt 2>&1\n"
    client = start(stack_env, services, agent, RALPH_SANDBOX="auto", RALPH_GIT_CREDENTIALS_FILE=credentials)
    assert client.get("/health").json()["isolation"]["sandbox"] == "bwrap"

    try:
        check = f"test -s report.txt && ! test -e {data / 'aistack.db'} && ! echo x > {disk / 'check.txt'}"
        task, [iteration] = run_task(client, check_command=check)
        assert not list(disk.iterdir())
    finally:
        shutil.rmtree(disk)
        shutil.rmtree(credentials.parent)

    assert task["status"] == "completed", (task, iteration)
    report = git(repo, "show", f"aistack/{task['id']}:report.txt").splitlines()
    may = {"write its home", "read its prompt", "read git history"}
    assert report == [f"{what}: {'yes' if what in may else 'no'}" for what in probes]
    assert not (repo / "escaped.txt").exists() and not (stack_env.root / "outside.txt").exists()
    assert "fsmonitor" not in (repo / ".git" / "config").read_text()


@pytest.mark.parametrize("sandbox", ["off", "bwrap"])
def test_resource_limits_apply_to_agent_and_check(stack_env, services, sandbox):
    """The kernel holds the agent to RALPH_AGENT_FILE_SIZE_MB (a larger write is cut and the
    writer killed by SIGXFSZ), and both agent and check run under every configured limit."""
    needs(sandbox)
    agent = "#!/bin/sh\ncat /proc/self/limits > limits.txt\nhead -c 3000000 /dev/zero > big.bin\necho $? > status.txt\n"
    limits = {
        "RALPH_AGENT_FILE_SIZE_MB": 1,
        "RALPH_AGENT_CPU_SECONDS": 77,
        "RALPH_AGENT_MEMORY_MB": 600,
        "RALPH_AGENT_MAX_PROCESSES": 20000,
    }
    client = start(stack_env, services, agent, RALPH_SANDBOX=sandbox, **limits)
    repo = make_git_repo(stack_env.workspace_root / "repo")

    task, [iteration] = run_task(client, check_command="cat /proc/self/limits")

    assert task["status"] == "completed", task
    expected = {"Max cpu time": "77", "Max file size": str(2**20), "Max data size": str(600 * 2**20), "Max processes": "20000"}
    branch = f"aistack/{task['id']}"
    for text in (git(repo, "show", f"{branch}:limits.txt"), iteration["check_output"]):
        seen = {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines()}
        assert {name: seen[name] for name in expected} == {name: [value, value] for name, value in expected.items()}
    assert len(git(repo, "cat-file", "blob", f"{branch}:big.bin").encode()) == 2**20  # cut at the limit
    assert git(repo, "show", f"{branch}:status.txt") == str(128 + 25)  # head died of SIGXFSZ
    health = client.get("/health").json()["isolation"]
    assert health["limits"] == {"cpu_seconds": 77, "memory_mb": 600, "processes": 20000, "file_size_mb": 1}
    assert health["sandbox"] == ("none" if sandbox == "off" else "bwrap") and health["network_isolated"] is False


def test_a_required_sandbox_that_cannot_run_stops_the_service(stack_env, services, tmp_path):
    """RALPH_SANDBOX=bwrap without bwrap: the service refuses to start, in one line; `auto` starts
    without a sandbox and says why in /health."""
    empty = tmp_path / "bin"
    empty.mkdir()
    stack_env.set(RALPH_SANDBOX="bwrap")
    refused = services("ralph-wiggum", stack_env, {"PATH": str(empty)}, wait=False)
    assert refused.proc.wait(60) == 2
    assert (
        refused.log()
        .strip()
        .splitlines()[-1]
        .endswith("RALPH_SANDBOX=bwrap, but bwrap is not installed (Debian: apt-get install bubblewrap)")
    )

    stack_env.set(RALPH_SANDBOX="auto")
    proc = services("ralph-wiggum", stack_env, {"PATH": str(empty)})
    isolation = httpx.get(proc.url + "/health", timeout=5).json()["isolation"]
    assert isolation["sandbox"] == "none" and "bwrap is not installed" in isolation["reason"]


def test_a_program_in_a_virtualenv_under_tmp_runs_in_the_sandbox(tmp_path):
    """bwrap gives the agent a private /tmp: a program installed there (aider in a checkout under
    /tmp, as a fresh clone makes it) still runs, its interpreter and packages shown read-only."""
    needs("bwrap")
    venv = tmp_path / "venv"  # under /tmp, like the checkout's .venv/aider
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python").symlink_to(Path(sys.executable).resolve())  # as a venv links the base interpreter
    (venv / "lib").mkdir()
    (venv / "lib" / "helper.py").write_text("WORD = 'ran'\n")
    tool = venv / "bin" / "tool"
    tool.write_text(f"#!{venv}/bin/python\nimport sys; sys.path.insert(0, '{venv}/lib'); import helper; print(helper.WORD)\n")
    tool.chmod(0o755)
    work = make_git_repo(tmp_path / "work")
    settings = Settings(aistack_data_dir=tmp_path / "data", workspace_root=tmp_path, ralph_sandbox="bwrap")
    jail = Sandbox(settings, tmp_path / ".env").jail(work, command=str(tool))
    done = subprocess.run(jail.argv([str(tool)]), capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "ran"), done.stderr


def test_what_lies_on_the_path_under_tmp_stays_runnable_in_the_sandbox(tmp_path, monkeypatch):
    """A check such as `pytest`, found on the service's PATH in a checkout's venv under /tmp."""
    needs("bwrap")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "say-ok").write_text("#!/bin/sh\necho ok\n")
    (tools / "say-ok").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    work = make_git_repo(tmp_path / "work")
    settings = Settings(aistack_data_dir=tmp_path / "data", workspace_root=tmp_path, ralph_sandbox="bwrap")
    jail = Sandbox(settings, tmp_path / ".env").jail(work, command="say-ok")
    done = subprocess.run(jail.argv(["/bin/sh", "-c", "say-ok"]), capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
