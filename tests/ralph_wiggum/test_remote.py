"""Tasks on a git remote instead of a repository on the orchestrator's disk, against real git:
bare repositories served through file:// and a real `git daemon` on loopback, the workspace in
process, and real `aistack serve ralph-wiggum` processes with the `command` backend."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest

from aistack.contracts import TaskStatus
from aistack.gitremote import RemoteError, RemoteRefused, Remotes
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum.records import TaskRecord
from aistack.ralph_wiggum.workspace import GitWorktrees
from support import AISTACK, StackEnv, child_env, free_port, git, make_git_repo, wait_until

AGENT = '#!/bin/sh\necho "line $AISTACK_ITERATION" >> notes.txt\necho "appended line $AISTACK_ITERATION"\n'
THREE_LINES = "test $(wc -l < notes.txt) -ge 3"
TERMINAL = {"completed", "exhausted", "failed", "stopped"}
TOKEN = "s3cr3t-t0ken-4711"


def bare_remote(path: Path, files: dict[str, str] | None = None) -> Path:
    """A bare repository with one commit on `main` (and a tag `v1` on it), as a server holds one."""
    work = make_git_repo(path.with_name(path.name + "-work"), files)
    git(work, "tag", "-a", "-m", "first", "v1")
    git(path.parent, "clone", "-q", "--bare", str(work), str(path))
    return path


def deny_pushes(remote: Path, message: str = "pushes are closed") -> Path:
    """A pre-receive hook that refuses every push while the file `deny` lies in the remote."""
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f'#!/bin/sh\nif [ -e deny ]; then echo "{message}" >&2; exit 1; fi\n')
    hook.chmod(0o755)
    (remote / "deny").write_text("")
    return remote / "deny"


def subjects(remote: Path, ref: str) -> list[str]:
    return git(remote, "log", "--format=%s", ref).splitlines()


# --- which URLs a task may name, and what of a remote's words is shown -----------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://bot:hunter22@example.com/r.git", "must not carry credentials"),
        ("https://ghp_tokenasuser@example.com/r.git", "must not carry credentials"),
        ("ssh://git:hunter22@example.com/r.git", "must not carry credentials"),
        ("ftp://example.com/r.git", "must be a URL git fetches"),
        ("ext::sh -c touch% /tmp/pwned", "without spaces"),
        ("ext::nc example.com 22", "without spaces"),
        ("ext::evil", "must be a URL git fetches"),
        ("--upload-pack=touch /tmp/pwned", "without spaces"),
        ("-oProxyCommand=x", "must be a URL git fetches"),
        ("/srv/repos/r.git", "must be a URL git fetches"),
        ("file:///etc", "must lie inside WORKSPACE_ROOT or RALPH_REMOTE_FILE_ROOTS"),
        ("file://otherhost/srv/r.git", "file:///path"),
        ("file:///ws/a?/../../../etc/r.git", "without \\? or #"),
        ("https:///r.git", "names no host"),
        ("ssh://-oProxyCommand=x/r.git", "starts with '-'"),
    ],
)
def test_a_url_with_credentials_another_transport_or_outside_the_roots_is_refused(tmp_path, url, words):
    with pytest.raises(RemoteRefused, match=words) as refused:
        Remotes(None, (tmp_path,)).check(url)
    assert refused.value.field == "repository"
    assert "hunter22" not in str(refused.value) and "ghp_tokenasuser" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["https://example.com/r.git", "ssh://git@example.com:2222/r.git", "git@example.com:org/r.git", "git://127.0.0.1:9418/r.git"]
)
def test_urls_git_fetches_without_credentials_are_allowed(tmp_path, url):
    assert Remotes(None, (tmp_path,)).check(url) is None


def test_a_file_url_inside_an_allowed_root_is_its_path(tmp_path):
    extra = tmp_path / "srv"
    remote = bare_remote(extra / "r.git")
    remotes = Remotes(None, (tmp_path / "workspaces", extra))
    assert remotes.check(remote.as_uri()) == remote
    assert asyncio.run(remotes.resolve(remote.as_uri(), None)) == git(remote, "rev-parse", "main")


def test_every_secret_of_the_credentials_file_and_any_userinfo_is_masked(tmp_path):
    credentials = tmp_path / "git-credentials"
    credentials.write_text(f"https://bot:{TOKEN}@example.com\nhttps://ghp_tokenasuser@github.com\nhttps://x:a%2Fb%40c@h.example\n")
    remotes = Remotes(credentials, (tmp_path,))
    said = f"remote: denied {TOKEN}; fatal: unable to access 'https://user:pw@h.example/r.git'; ghp_tokenasuser; a/b@c"
    masked = remotes.mask(said)
    assert masked == "remote: denied ***; fatal: unable to access 'https://***@h.example/r.git'; ***; ***"


# --- the workspace in process: pushes, refusals, a take-over ---------------------------------------


def remote_task(remote: Path, base: str, **fields) -> TaskRecord:
    now = datetime.now(UTC)
    values = {"id": "t1", "prompt": "p", "backend": "command", "workspace": remote.as_uri(), "base_commit": base,
              "status": TaskStatus.running, "max_iterations": 5, "limit_source": "request", "created_at": now,
              "updated_at": now, **fields}  # fmt: skip
    return TaskRecord(**values)


def test_a_refused_push_keeps_the_checkpoint_and_the_next_checkpoint_pushes_it(tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    deny = deny_pushes(remote, "pre-receive says no")
    trees = GitWorktrees(tmp_path / "data" / "worktrees", tmp_path)
    task = remote_task(remote, git(remote, "rev-parse", "main"))

    async def scenario():
        tree = await trees.prepare(task, None)
        (tree.path / "a.txt").write_text("one\n")
        refused = await trees.checkpoint(tree, "iteration 1")
        assert subprocess.run(["git", "rev-parse", "-q", "--verify", "aistack/t1"], cwd=remote).returncode != 0
        deny.unlink()
        unchanged = await trees.checkpoint(tree, "nothing changed, but the last push is owed")
        assert git(remote, "rev-parse", "aistack/t1") == refused.commit
        (tree.path / "a.txt").write_text("two\n")
        pushed = await trees.checkpoint(tree, "iteration 2")
        return tree, refused, unchanged, pushed

    tree, refused, unchanged, pushed = asyncio.run(scenario())
    assert refused.commit is not None and "pre-receive says no" in (refused.push_error or "")
    assert git(tree.path, "rev-parse", "HEAD^") == refused.commit  # kept on the local branch, built upon
    assert unchanged.commit is None and unchanged.push_error is None  # the owed push went through
    assert pushed.push_error is None and git(remote, "rev-parse", "aistack/t1") == pushed.commit
    assert subjects(remote, "aistack/t1") == ["iteration 2", "iteration 1", "initial"]


def test_a_push_still_owed_when_the_task_ends_is_tried_once_more_as_its_tree_goes(tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    deny = deny_pushes(remote)
    trees = GitWorktrees(tmp_path / "data" / "worktrees", tmp_path)
    task = remote_task(remote, git(remote, "rev-parse", "main"))

    async def scenario():
        tree = await trees.prepare(task, None)
        (tree.path / "a.txt").write_text("last\n")
        refused = await trees.checkpoint(tree, "the last iteration")
        deny.unlink()
        await trees.remove(task)
        return tree, refused

    tree, refused = asyncio.run(scenario())
    assert refused.push_error is not None and not tree.path.exists()
    assert git(remote, "rev-parse", "aistack/t1") == refused.commit


def test_a_branch_someone_else_moved_is_never_overwritten(tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    trees = GitWorktrees(tmp_path / "data" / "worktrees", tmp_path)
    task = remote_task(remote, git(remote, "rev-parse", "main"))
    person = tmp_path / "person"

    async def scenario():
        tree = await trees.prepare(task, None)
        (tree.path / "a.txt").write_text("one\n")
        first = await trees.checkpoint(tree, "iteration 1")
        git(tmp_path, "clone", "-q", "-b", "aistack/t1", remote.as_uri(), str(person))
        git(person, "-c", "user.name=p", "-c", "user.email=p@example.com", "commit", "-q", "--allow-empty", "-m", "a person's")
        git(person, "push", "-q", "origin", "aistack/t1")
        (tree.path / "a.txt").write_text("two\n")
        second = await trees.checkpoint(tree, "iteration 2")
        return tree, first, second

    tree, first, second = asyncio.run(scenario())
    assert first.push_error is None
    assert second.commit is not None and "stale info" in (second.push_error or "")  # the lease refused it
    assert subjects(remote, "aistack/t1")[:2] == ["a person's", "iteration 1"]
    assert git(tree.path, "rev-parse", "HEAD") == second.commit


def test_a_worker_taking_a_task_over_fetches_its_branch_from_the_remote(tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    base = git(remote, "rev-parse", "main")
    first_worker = GitWorktrees(tmp_path / "one" / "worktrees", tmp_path)
    other_worker = GitWorktrees(tmp_path / "two" / "worktrees", tmp_path)  # another disk: no mirror, no tree

    async def scenario():
        tree = await first_worker.prepare(remote_task(remote, base), None)
        (tree.path / "a.txt").write_text("one\n")
        saved = await first_worker.checkpoint(tree, "iteration 1")
        (tree.path / "a.txt").write_text("interrupted\n")  # its iteration 2 dies before a record names it
        interrupted = await first_worker.checkpoint(tree, "iteration 2, never recorded")
        resumed = await other_worker.prepare(remote_task(remote, base, worktree=str(tree.path), branch="aistack/t1"), saved.commit)
        (resumed.path / "a.txt").write_text("two\n")
        again = await other_worker.checkpoint(resumed, "iteration 2")
        return saved, interrupted, resumed, again

    saved, interrupted, resumed, again = asyncio.run(scenario())
    assert not resumed.created and resumed.path.parent == tmp_path / "two" / "worktrees"
    assert (resumed.path / "a.txt").read_text() == "two\n"
    assert git(resumed.path, "rev-parse", "HEAD^") == saved.commit  # continued from the fetched checkpoint
    assert interrupted.commit and again.push_error is None  # the unrecorded checkpoint is replaced, not kept twice
    assert subjects(remote, "aistack/t1") == ["iteration 2", "iteration 1", "initial"]


def test_a_file_remote_swapped_for_a_link_out_of_the_roots_is_refused_before_any_fetch(tmp_path):
    remote = bare_remote(tmp_path / "root" / "remote.git")
    trees = GitWorktrees(tmp_path / "data" / "worktrees", tmp_path / "root")
    task = remote_task(remote, git(remote, "rev-parse", "main"))
    elsewhere = bare_remote(tmp_path / "elsewhere" / "private.git")
    shutil.rmtree(remote)
    remote.symlink_to(elsewhere)
    with pytest.raises(PathNotAllowed, match="must lie inside WORKSPACE_ROOT or RALPH_REMOTE_FILE_ROOTS"):
        asyncio.run(trees.prepare(task, None))
    assert not (tmp_path / "data" / "worktrees" / "t1").exists()


def test_a_checkpoint_that_reached_no_remote_is_a_clear_transient_failure(tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    trees = GitWorktrees(tmp_path / "data" / "worktrees", tmp_path)
    task = remote_task(remote, git(remote, "rev-parse", "main"), worktree="gone", branch="aistack/t1")
    with pytest.raises(RemoteError, match="its last checkpoint 0{40} is neither in this worker's mirror nor on the remote"):
        asyncio.run(trees.prepare(task, "0" * 40))


# --- the service: real processes ------------------------------------------------------------------


@pytest.fixture
def ralph(stack_env: StackEnv, services):
    clients: list[httpx.Client] = []

    def start(agent: str = AGENT, **settings):
        script = stack_env.root / f"agent-{len(clients)}.sh"
        script.write_text(agent)
        script.chmod(0o755)
        stack_env.set(RALPH_COMMAND_BACKEND=str(script), **settings)
        proc = services("ralph-wiggum", stack_env)
        clients.append(httpx.Client(base_url=proc.url, timeout=30))
        return clients[-1], proc

    yield start
    for client in clients:
        client.close()


def wait_for(client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 60) -> dict:
    seen: list[dict] = []
    if not wait_until(lambda: seen.append(client.get(f"/tasks/{task_id}").json()) or seen[-1]["status"] in statuses, timeout):
        raise AssertionError(f"task {task_id} still {seen[-1]['status']} after {timeout} s: {seen[-1]}")
    return seen[-1]


def events(client: httpx.Client, task_id: str) -> list[dict]:
    return client.get(f"/tasks/{task_id}/events.json").json()


def submit(client: httpx.Client, **body) -> str:
    body = {"backend": "command", "prompt": "add notes", **body}
    resp = client.post("/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["task_id"]


def assert_three_checkpoints_on(remote: Path, client: httpx.Client, task_id: str) -> None:
    """Iterations 1..3, each once, their checkpoints the remote branch's commits since the base."""
    iterations = client.get(f"/tasks/{task_id}/iterations").json()
    assert [it["number"] for it in iterations] == [1, 2, 3]
    branch = f"aistack/{task_id}"
    assert git(remote, "log", "--format=%H", "main.." + branch).splitlines() == [it["checkpoint_commit"] for it in reversed(iterations)]
    assert subjects(remote, branch)[:3] == [f"aistack {task_id}: iteration {n}" for n in (3, 2, 1)]
    assert git(remote, "show", f"{branch}:notes.txt").splitlines() == ["line 1", "line 2", "line 3"]


def test_a_task_on_a_file_remote_runs_and_every_checkpoint_arrives_there(ralph, stack_env):
    client, _ = ralph()
    remote = bare_remote(stack_env.workspace_root / "remote.git")
    task_id = submit(client, repository=remote.as_uri(), ref="v1", check_command=THREE_LINES)
    task = wait_for(client, task_id, TERMINAL)

    assert task["status"] == "completed" and task["iteration"] == 3
    assert task["repository"] == task["workspace"] == remote.as_uri()
    assert task["base_commit"] == git(remote, "rev-parse", "v1^{commit}") and task["branch"] == f"aistack/{task_id}"
    assert_three_checkpoints_on(remote, client, task_id)
    assert "+line 3" in client.get(f"/tasks/{task_id}/diff").json()["diff"]
    assert not any(e["type"] == "push_failed" for e in events(client, task_id))
    assert git(remote, "rev-parse", "main") == task["base_commit"]  # nothing else on the remote moved


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `git daemon` on loopback serving (fetch and push) the repositories under a folder."""
    served, port = tmp_path / "served", free_port()
    served.mkdir()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}", f"--base-path={served}", "--export-all",
         "--enable=receive-pack", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_until(lambda: listening(port), 10), "git daemon did not start"
        yield f"git://127.0.0.1:{port}", served
    finally:
        daemon.terminate()
        daemon.wait(10)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_task_submitted_with_the_cli_on_a_git_daemon_remote_pushes_its_checkpoints_there(ralph, stack_env, git_daemon):
    base_url, served = git_daemon
    remote = bare_remote(served / "project.git")
    client, _ = ralph()
    url = f"{base_url}/project.git"
    command = [*AISTACK, "task", "submit", "add notes", "--backend", "command", "--repository", url, "--ref", "main",
               "--check", THREE_LINES, "--wait"]  # fmt: skip
    done = subprocess.run(command, env=child_env(stack_env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id = done.stdout.split("task ")[1].split()[0]
    assert f"branch: aistack/{task_id} in {url}" in done.stdout
    assert_three_checkpoints_on(remote, client, task_id)


def test_what_cannot_be_worked_on_is_refused_at_submission_naming_the_field(ralph, stack_env):
    client, _ = ralph()
    remote = bare_remote(stack_env.workspace_root / "remote.git")
    outside = bare_remote(stack_env.root / "elsewhere" / "r.git")
    closed = free_port()
    cases = [
        ({"repository": f"http://127.0.0.1:{closed}/r.git"}, "repository", "cannot be reached"),
        ({"repository": (stack_env.workspace_root / "absent.git").as_uri()}, "repository", "not a git repository"),
        ({"repository": remote.as_uri(), "ref": "no-such-branch"}, "ref", "has no branch or tag 'no-such-branch'"),
        ({"repository": remote.as_uri(), "ref": "--upload-pack=x"}, "ref", "must be a branch or tag name"),
        ({"repository": f"https://bot:{TOKEN}@example.com/r.git"}, "repository", "must not carry credentials"),
        ({"repository": outside.as_uri()}, "repository", "RALPH_REMOTE_FILE_ROOTS"),
        ({"repository": remote.as_uri(), "workspace": "repo"}, "repository", "not both"),
        ({"ref": "main"}, "ref", "give repository too"),
        ({"repository": "https://example.com/" + "x" * 5_000}, "repository", "at most 4096 characters"),
        ({"repository": "https://example.com/r.git\x00"}, "repository", "NUL"),
        ({"repository": remote.as_uri(), "ref": "v" * 300}, "ref", "at most 255 characters"),
    ]
    for body, field, words in cases:
        resp = client.post("/tasks", json={"backend": "command", "prompt": "p", **body})
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["field"] == field and words in resp.json()["detail"], (body, resp.json())
        assert TOKEN not in resp.text
    assert client.get("/tasks").json()["total"] == 0


def test_a_refused_push_is_an_event_with_credentials_masked_and_the_next_checkpoint_delivers_it(ralph, stack_env):
    remote = bare_remote(stack_env.workspace_root / "remote.git")
    deny = deny_pushes(remote, f"no pushes for https://bot:{TOKEN}@example.com (token {TOKEN})")
    credentials = stack_env.root / "secrets" / "git-credentials"
    credentials.parent.mkdir()
    credentials.write_text(f"https://bot:{TOKEN}@example.com\n")
    # iteration 2 waits until the test has seen the refusal and opened the remote again
    wait = f'if [ "$AISTACK_ITERATION" = 2 ]; then while [ -e "{deny}" ]; do sleep 0.05; done; fi\n'
    agent = AGENT.replace("#!/bin/sh\n", "#!/bin/sh\n" + wait)
    client, proc = ralph(agent, RALPH_GIT_CREDENTIALS_FILE=credentials)
    task_id = submit(client, repository=remote.as_uri(), check_command=THREE_LINES)

    assert wait_until(lambda: any(e["type"] == "push_failed" for e in events(client, task_id)), 30)
    refused = next(e for e in events(client, task_id) if e["type"] == "push_failed")
    assert refused["data"]["iteration"] == 1 and "no pushes for https://***@example.com (token ***)" in refused["data"]["error"]
    first = refused["data"]["commit"]
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", f"aistack/{task_id}"], cwd=remote).returncode != 0
    deny.unlink()

    task = wait_for(client, task_id, TERMINAL)
    assert task["status"] == "completed"
    assert_three_checkpoints_on(remote, client, task_id)
    assert client.get(f"/tasks/{task_id}/iterations").json()[0]["checkpoint_commit"] == first
    assert [e["data"]["iteration"] for e in events(client, task_id) if e["type"] == "push_failed"] == [1]
    assert TOKEN not in client.get(f"/tasks/{task_id}/events.json").text
    assert TOKEN not in client.get("/health").text and TOKEN not in proc.log()
    assert "https://***@example.com" in proc.log()  # the refusal is logged, masked


def test_a_new_worker_takes_a_task_over_from_the_branch_on_the_remote(ralph, stack_env):
    """The first worker dies (kill -9) in iteration 2; another, with a data dir of its own (the
    database copied: no mirror, no worktree), fetches iteration 1's checkpoint and goes on."""
    remote = bare_remote(stack_env.workspace_root / "remote.git")
    stalling = AGENT.replace("#!/bin/sh\n", '#!/bin/sh\nif [ "$AISTACK_ITERATION" = 2 ]; then sleep 600; fi\n')
    client, first = ralph(stalling)
    task_id = submit(client, repository=remote.as_uri(), check_command=THREE_LINES, max_iterations=5)
    assert wait_until(lambda: any(e["type"] == "iteration_started" and e["data"]["iteration"] == 2 for e in events(client, task_id)), 30)
    first.kill9()
    assert subjects(remote, f"aistack/{task_id}")[0] == f"aistack {task_id}: iteration 1"

    old, new = stack_env.data_dir, stack_env.root / "another-worker"
    new.mkdir()
    for name in ("aistack.db", "aistack.db-wal"):
        if (old / name).exists():
            shutil.copy2(old / name, new / name)
    client, _ = ralph(AISTACK_DATA_DIR=new)
    task = wait_for(client, task_id, TERMINAL)

    assert task["status"] == "completed" and task["iteration"] == 3
    assert_three_checkpoints_on(remote, client, task_id)
    starts = [(e["data"]["iteration"], e["data"]["attempt"]) for e in events(client, task_id) if e["type"] == "iteration_started"]
    assert starts == [(1, 1), (2, 1), (2, 2), (3, 1)]
    assert list((new / "repositories").glob("*.git")) and Path(task["worktree"]).parent == new / "worktrees"


def test_a_remote_that_does_not_answer_later_is_retried_then_fails_with_its_words(ralph, stack_env):
    remote = bare_remote(stack_env.workspace_root / "remote.git")
    client, first = ralph(RALPH_LOOP_ENABLED=False, RALPH_TRANSIENT_RETRY_SECONDS=2)
    task_id = submit(client, repository=remote.as_uri())
    first.stop()
    shutil.rmtree(remote)  # gone between the submission and the run
    client, _ = ralph(RALPH_LOOP_ENABLED=True, RALPH_TRANSIENT_RETRY_SECONDS=2)
    task = wait_for(client, task_id, TERMINAL)
    assert task["status"] == "failed" and "RALPH_TRANSIENT_RETRY_SECONDS" in task["error"]
    assert "does not appear to be a git repository" in task["error"]
    assert any(e["type"] == "transient_retry" for e in events(client, task_id))
    assert client.get(f"/tasks/{task_id}/iterations").json() == []


# --- a remote behind HTTP authentication: the credentials file is what opens it -----------------


class GitOverHttp:
    """`git http-backend` (git's smart HTTP server, a CGI program) behind HTTP basic
    authentication, on loopback: a remote as a forge serves it, which refuses anonymous clients."""

    def __init__(self, root: Path, user: str, password: str):
        self.root, self.expected = root, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.server = make_server("127.0.0.1", 0, self.app, handler_class=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.refused = 0  # requests without the right credentials
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        if environ.get("HTTP_AUTHORIZATION") != self.expected:
            self.refused += 1
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")])
            return [b""]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        cgi = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": "bot", "PATH": os.environ["PATH"],
               **{key: environ.get(key, "") for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE")},
               "CONTENT_LENGTH": str(len(body)), "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
               "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", "")}  # fmt: skip
        out = subprocess.run(["git", "http-backend"], input=body, env=cgi, capture_output=True, check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [tuple(line.split(": ", 1)) for line in head.decode().split("\r\n") if line]
        status = next((value for name, value in headers if name.lower() == "status"), "200 OK")
        start_response(status, [(name, value) for name, value in headers if name.lower() != "status"])
        return [payload]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[GitOverHttp, Path]]:
    served = tmp_path / "served"
    server = GitOverHttp(served, "bot", TOKEN)
    remote = bare_remote(served / "project.git")
    git(remote, "config", "http.receivepack", "true")
    yield server, remote
    server.close()


def test_without_the_credentials_file_an_authenticating_remote_is_refused_at_submission(tmp_path, http_remote):
    server, _ = http_remote
    with pytest.raises(RemoteRefused, match="cannot be reached: git ls-remote: .*could not read Username") as refused:
        asyncio.run(Remotes(None, (tmp_path,)).resolve(f"{server.url}/project.git", None))
    assert refused.value.field == "repository" and server.refused > 0


def test_a_task_on_an_authenticating_http_remote_pushes_with_the_credentials_file_which_no_output_shows(ralph, stack_env, http_remote):
    server, remote = http_remote
    credentials = stack_env.root / "secrets" / "git-credentials"
    credentials.parent.mkdir()
    credentials.write_text(f"{server.url.replace('http://', f'http://bot:{TOKEN}@')}\n")
    client, proc = ralph(RALPH_GIT_CREDENTIALS_FILE=credentials)
    task_id = submit(client, repository=f"{server.url}/project.git", check_command=THREE_LINES)
    task = wait_for(client, task_id, TERMINAL)
    assert task["status"] == "completed", task
    assert_three_checkpoints_on(remote, client, task_id)
    assert server.refused > 0  # git asked without credentials first, then took them from the file
    shown = [client.get(path).text for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/events.json", "/health")]
    assert not any(TOKEN in text for text in [*shown, proc.log()])
