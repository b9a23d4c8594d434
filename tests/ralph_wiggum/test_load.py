"""Under load: 200 tasks queued at once on a real orchestrator while 20 clients read its API.
Nothing may be lost or counted twice, and no reader may get a server error. (How fast it drains
and how long the reads take under it: bench/bench_load.py.)"""

from __future__ import annotations

import httpx

from load_support import Readers, audit, make_repos, submit_all, wait_terminal, write_agent
from support import StackEnv, descendants

TASKS, READERS, CONCURRENCY, REPOS = 200, 20, 4, 4


def test_a_burst_of_tasks_under_readers_loses_nothing(stack_env: StackEnv, services):
    agent = write_agent(stack_env.root / "agent.sh")
    stack_env.set(RALPH_COMMAND_BACKEND=str(agent), RALPH_MAX_CONCURRENT_TASKS=CONCURRENCY, LOG_LEVEL="warning")
    ralph = services("ralph-wiggum", stack_env)
    repos = make_repos(stack_env.workspace_root, REPOS)
    with httpx.Client(base_url=ralph.url, timeout=30) as client:
        ids: list[str] = []
        with Readers(ralph.url, ids, READERS) as readers:
            ids += submit_all(client, repos, TASKS)
            wait_terminal(client, ids, timeout=600)
        problems = audit(client, ids, stack_env.workspace_root)

    assert readers.failures == [], readers.failures[:10]
    assert readers.reads > 1000 and set(readers.statuses) == {200}, readers.statuses
    assert 0 < readers.most_running <= CONCURRENCY
    assert problems == [], problems[:10]
    assert list((stack_env.data_dir / "worktrees").iterdir()) == []
    assert descendants(ralph.proc.pid) == []  # no agent, check or git outlived its task
