"""When a command needs a shell, and that one without it behaves as with it (real processes)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from aistack.ralph_wiggum.shell import run_shell, shell_argv
from support import alive, wait_until


@pytest.mark.parametrize(
    "command, direct",
    [
        ("true", True),
        ("git status --porcelain", True),
        ("./agent.sh --fast", True),
        ("echo $HOME", False),
        ("pytest -q; echo done", False),
        ("test $(wc -l < log.txt) -ge 3", False),
        ("FOO=1 make", False),
        ("cd sub", False),
        ("exit 3", False),
        ("no-such-program-here", False),
        ("./missing.sh", False),
        ("ls *.py", False),
        ("echo 'a  b'", False),
        ("   ", False),
        ("echo -e x", False),  # PATH's echo is not the shell's
        ("pwd", False),
        ("git\u00a0status", False),  # sh does not split on a no-break space
        ("ls\x01", False),
    ],
)
def test_a_shell_is_used_only_where_it_means_something(tmp_path, command, direct):
    agent = tmp_path / "agent.sh"
    agent.write_text("#!/bin/sh\necho agent\n")
    agent.chmod(0o755)
    argv = shell_argv(command, tmp_path, dict(os.environ))
    assert (argv[:2] != ["/bin/sh", "-c"]) is direct, argv


def test_with_and_without_a_shell_the_result_is_the_same(tmp_path):
    script = tmp_path / "agent.sh"
    script.write_text('#!/bin/sh\necho "args: $*"; echo from stdin: $(cat); exit 4\n')
    script.chmod(0o755)
    no_shebang = tmp_path / "plain"
    no_shebang.write_text("echo without a shebang\n")
    no_shebang.chmod(0o755)

    async def both():
        direct = await run_shell("./agent.sh one two", tmp_path, stdin="hi", timeout=10)
        shelled = await run_shell("./agent.sh one  two # comment", tmp_path, stdin="hi", timeout=10)
        plain = await run_shell("./plain", tmp_path, timeout=10)  # exec fails (no #!): the shell runs it
        missing = await run_shell("not-a-program-anywhere", tmp_path, timeout=10)
        return direct, shelled, plain, missing

    direct, shelled, plain, missing = asyncio.run(both())
    assert direct == shelled and direct.exit_code == 4 and direct.output == "args: one two\nfrom stdin: hi\n"
    assert plain.exit_code == 0 and plain.output == "without a shebang\n"
    assert missing.exit_code == 127 and "not found" in missing.output


def test_a_command_without_a_shell_sees_what_sh_would_show_it(tmp_path):
    """$PWD is the directory it runs in, and a death by signal is 128+N, as `sh -c` reports them."""
    (tmp_path / "where.sh").write_text('#!/bin/sh\necho "$PWD"\n')
    (tmp_path / "crash.sh").write_text("#!/bin/sh\nkill -SEGV $$\n")
    for script in ("where.sh", "crash.sh"):
        (tmp_path / script).chmod(0o755)

    async def both():
        env = {**os.environ, "PWD": "/somewhere/else"}
        return [await run_shell(cmd, tmp_path, env=env, timeout=10) for cmd in ("./where.sh", "./where.sh;", "./crash.sh", "./crash.sh;")]

    where, where_sh, crash, crash_sh = asyncio.run(both())
    assert where.output == where_sh.output == f"{tmp_path}\n"
    assert crash.exit_code == crash_sh.exit_code == 128 + 11


def test_a_cancel_while_the_command_starts_ends_its_whole_group_at_once(tmp_path):
    """A stop that lands while the command's pipes are being connected: asyncio alone kills the
    leader and then waits for the pipes, which the helper it started holds open (here 300 s)."""
    pidfile = tmp_path / "helper.pid"

    async def scenario() -> None:
        command = asyncio.create_task(run_shell(f'sleep 300 & echo $! > "{pidfile}"; wait', tmp_path, timeout=600))
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):  # the start, one loop turn at a time
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(0)
            time.sleep(0.05)  # the event loop stands still: a leader started in that turn starts its helper
        command.cancel()  # the turn after the one that started it: its pipes are not connected yet
        async with asyncio.timeout(60):  # not the helper's 300 s
            await asyncio.gather(command, return_exceptions=True)

    asyncio.run(scenario())
    helper = int(pidfile.read_text())
    assert wait_until(lambda: not alive(helper), 10), "the helper outlived the cancel"
