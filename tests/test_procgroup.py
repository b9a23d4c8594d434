"""What a later process may end of a group an earlier one recorded (real processes): the group,
even once its leader has died, and never a group of another boot or a reused id."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from aistack.procgroup import GroupIdentity, end_orphaned_group, identify_group
from support import alive, wait_until


@contextmanager
def group_with_helper() -> Iterator[tuple[subprocess.Popen[str], GroupIdentity, int]]:
    """A leader in its own session with a helper it started; the leader ends when its stdin closes."""
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; read _"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    assert leader.stdout is not None
    helper = int(leader.stdout.readline())
    group = identify_group(leader.pid)
    assert group is not None and group.pgid == leader.pid
    try:
        yield leader, group, helper
    finally:
        if alive(helper):
            os.kill(helper, signal.SIGKILL)
        leader.kill()
        leader.wait()


def test_a_group_whose_leader_died_is_ended_with_what_it_started():
    with group_with_helper() as (leader, group, helper):
        assert leader.stdin is not None
        leader.stdin.close()  # the leader ends (as its parent-death signal would end it); its helper runs on
        leader.wait()
        assert alive(helper)
        assert asyncio.run(end_orphaned_group(group)) == 1  # the helper
        assert wait_until(lambda: not alive(helper), 5)


def test_a_group_of_another_boot_or_a_reused_id_is_left_alone():
    with group_with_helper() as (leader, group, helper):
        for stranger in (
            dataclasses.replace(group, boot_id="another boot"),
            dataclasses.replace(group, leader_start=group.leader_start + 1),
        ):
            assert asyncio.run(end_orphaned_group(stranger)) == 0  # nothing of it runs
            assert alive(leader.pid) and alive(helper)
        assert asyncio.run(end_orphaned_group(group)) == 2  # the one recorded is ended: leader and helper
        assert wait_until(lambda: not alive(leader.pid) and not alive(helper), 5)


def test_a_group_that_is_gone_has_no_identity_and_nothing_to_end():
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, start_new_session=True)
    pid = int(done.stdout)
    assert identify_group(pid) is None
    assert asyncio.run(end_orphaned_group(GroupIdentity(pid, 1, "any"))) == 0


# Starts two groups that die with it; its warden is killed in between, so the second start needs a
# new warden, which must be told of the first group too. Then it says it is ready (a group is
# watched once its start returns, which may be after its shell wrote its file) and waits to be killed.
OWNER = """
import asyncio, os, signal, sys
from aistack.procgroup import WARDEN, start_in_group

async def main():
    await start_in_group("/bin/sh", "-c", "sleep 300 & echo $! > {tmp}/first; wait", dies_with_parent=True)
    os.kill(WARDEN.pid, signal.SIGKILL)
    os.waitpid(WARDEN.pid, 0)
    await start_in_group("/bin/sh", "-c", "sleep 300 & echo $! > {tmp}/second; wait", dies_with_parent=True)
    open("{tmp}/ready", "w").close()
    await asyncio.sleep(300)

asyncio.run(main())
"""


def test_whole_groups_die_with_their_owner_even_after_its_warden_was_replaced(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", OWNER.format(tmp=tmp_path)])
    pidfiles = [tmp_path / "first", tmp_path / "second"]
    try:
        ready = tmp_path / "ready"
        assert wait_until(lambda: ready.exists() and all(p.exists() and p.read_text().strip() for p in pidfiles), 30)
        helpers = [int(p.read_text()) for p in pidfiles]
        assert all(alive(pid) for pid in helpers)
        owner.kill()  # SIGKILL: the owner ends nothing itself
        owner.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in helpers), 10), "a helper outlived its owner"
    finally:
        owner.kill()
        owner.wait()
        for pid in (int(p.read_text()) for p in pidfiles if p.exists() and p.read_text().strip()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
