"""When a command needs a shell, and that one without it behaves as with it (real processes)."""

from __future__ import annotations

import asyncio
import os

import pytest

from aistack.ralph_wiggum.shell import run_shell, shell_argv


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
