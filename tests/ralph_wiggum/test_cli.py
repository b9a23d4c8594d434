"""`aistack task …` against a real orchestrator process."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading

import pytest

from support import AISTACK, child_env, make_git_repo


def aistack(env, *args, timeout=60):
    return subprocess.run([*AISTACK, *args], env=child_env(env), capture_output=True, text=True, timeout=timeout)


def test_submit_wait_list_show_logs(stack_env, services):
    agent = stack_env.root / "agent.sh"
    agent.write_text('#!/bin/sh\necho "line $AISTACK_ITERATION" >> notes.txt\necho "wrote line $AISTACK_ITERATION"\n')
    agent.chmod(0o755)
    stack_env.set(RALPH_COMMAND_BACKEND=agent)
    services("ralph-wiggum", stack_env)
    repo = make_git_repo(stack_env.workspace_root / "repo")

    done = aistack(
        stack_env,
        "task",
        "submit",
        "add two lines",
        "--backend",
        "command",
        "--workspace",
        str(repo),
        "--check",
        "test $(wc -l < notes.txt) -ge 2",
        "--wait",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "iteration 1: success check exit 1" in done.stdout and "iteration 2: success check exit 0" in done.stdout
    assert "result: completed after 2 iteration(s)" in done.stdout
    assert "│ wrote line 1\n" in done.stdout and "│ wrote line 2\n" in done.stdout  # the agent's output, each line stamped
    task_id = done.stdout.split("task ")[1].split()[0]

    failed = aistack(
        stack_env,
        "task",
        "submit",
        "never done",
        "--backend",
        "command",
        "--workspace",
        str(repo),
        "--check",
        "false",
        "--max-iterations",
        "1",
        "--keep-best",
        "--feedback",
        "shaped",
        "--protect",
        "notes.txt",
        "--wait",
    )
    assert failed.returncode == 1 and "exhausted" in failed.stdout
    followed = " ".join(failed.stdout.split())  # the console wraps long lines
    assert "iteration 1: no_progress check exit 1 — no file changed; undone, protected: notes.txt" in followed
    failed_id = failed.stdout.split("task ")[1].split()[0]
    shown = " ".join(aistack(stack_env, "task", "show", failed_id).stdout.split())  # the console wraps long lines
    assert "strategy: keep_best=True, feedback=shaped, diversity=False, context=carried, candidates=1" in shown
    assert "protected: notes.txt" in shown and "(undone: notes.txt)" in shown

    listed = aistack(stack_env, "task", "list", "--status", "completed")
    assert task_id in listed.stdout and "of 1" in listed.stdout
    shown = aistack(stack_env, "task", "show", task_id)
    assert "notes.txt" in shown.stdout and "evidence: check_command" in shown.stdout
    logs = aistack(stack_env, "task", "logs", task_id, "--iteration", "2")
    assert "wrote line 2" in logs.stdout and "wrote line 1" not in logs.stdout

    bad_path = aistack(stack_env, "task", "submit", "x", "--protect", "../x")
    assert bad_path.returncode == 1 and "protected_paths.0: must be a path or glob inside the repository" in bad_path.stderr
    bad_strategy = aistack(stack_env, "task", "submit", "x", "--context", "none")
    assert bad_strategy.returncode == 1 and "strategy.context: Input should be 'carried' or 'fresh'" in bad_strategy.stderr
    bad = aistack(stack_env, "task", "submit", "x", "--backend", "nope")
    assert bad.returncode == 1 and "unknown backend 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    missing = aistack(stack_env, "task", "show", "nosuchtask")
    assert missing.returncode == 1 and "no task with id" in missing.stderr
    dotted = aistack(stack_env, "task", "show", ".")  # an id, not the dot segment that `/tasks/.` would be
    assert dotted.returncode == 1 and "no task with id '.'" in dotted.stderr, dotted.stderr


def test_cli_reports_unreachable_orchestrator(stack_env):
    out = aistack(stack_env, "task", "list")
    assert out.returncode == 1 and "unreachable" in out.stderr and "Traceback" not in out.stderr


class Impostor:
    """Whatever listens on the orchestrator's port when it is not ralph-wiggum (another program, a
    proxy, a hung process): each connection's request is read and `behave(connection)` answers it."""

    def __init__(self, behave):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.behave = self.sock.getsockname()[1], behave
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            conn.recv(65536)
            self.behave(conn)


def answer(status: str, content_type: str, body: bytes):
    def behave(conn: socket.socket) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)
        conn.close()

    return behave


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    conn.close()


HELD: list[socket.socket] = []  # a hung server: the connection stays open, unanswered


@pytest.mark.parametrize(
    ("behave", "args", "message"),
    [
        (
            answer("200 OK", "text/html", b"<html>sign in</html>"),
            ["task", "list"],
            "answered GET /tasks with text/html, not JSON: is it ralph-wiggum?",
        ),
        (
            answer("200 OK", "application/json", b'{"tasks": []}'),
            ["task", "list"],
            "answered GET /tasks with an unexpected body (items: Field required)",
        ),
        (
            answer("502 Bad Gateway", "application/json", b'["upstream", "down"]'),
            ["task", "show", "t1"],
            'HTTP 502 Bad Gateway: ["upstream", "down"]',
        ),
        (reset, ["task", "stop", "t1"], "broke off the connection (ReadError)"),
        (HELD.append, ["task", "list"], "did not answer within 10.0 s (ReadTimeout)"),
        (answer("200 OK", "text/html", b"<html></html>"), ["task", "logs", "t1", "--follow"], "answered without an event stream"),
        # a stream that breaks off before it began is not resumed for ever
        (lambda conn: conn.close(), ["task", "logs", "t1", "--follow"], "broke off the connection (RemoteProtocolError)"),
        (
            answer("200 OK", "text/event-stream", b'id: 1\ndata: {"id": "one"}\n\n'),
            ["task", "logs", "t1", "--follow"],
            "answered GET /tasks/t1/events with an unexpected body (id: Input should be a valid integer",
        ),
        (
            answer("200 OK", "application/json", b'[{"id": 1}]'),
            ["learn", "proposals"],
            "answered GET /learn/proposals with an unexpected body (0.kind: Field required)",
        ),
        (answer("200 OK", "text/html", b"<html></html>"), ["learn", "accept", "1"], "answered POST /learn/proposals/1/accept with"),
    ],
    ids=[
        "html",
        "other-json",
        "error-not-the-apis",
        "reset",
        "silent",
        "no-event-stream",
        "closed-stream",
        "bad-event",
        "learn-not-a-proposal",
        "learn-html",
    ],  # fmt: skip
)
def test_a_server_that_is_not_the_orchestrator_is_one_line(stack_env, behave, args, message):
    impostor = Impostor(behave)
    stack_env.set(RALPH_WIGGUM_PORT=impostor.port)
    try:
        out = aistack(stack_env, *args)
    finally:
        impostor.sock.close()
        for conn in HELD:
            conn.close()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and message in " ".join(out.stderr.split()), out.stderr


@pytest.mark.parametrize("host", ["localhost:8098", "[::1", "http://127.0.0.1"])
def test_a_host_that_is_no_host_stops_the_cli_in_one_line(stack_env, host):
    out = aistack(stack_env.set(RALPH_WIGGUM_HOST=host), "task", "list")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"invalid setting RALPH_WIGGUM_HOST={host!r}: allowed: Host name or IP address" in " ".join(out.stderr.split())


def test_cli_refuses_a_prompt_over_the_limit_in_one_line(stack_env):
    out = aistack(stack_env, "task", "submit", "x" * 70_000, "--backend", "command")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["✗ prompt: String should have at most 65536 characters"]


def test_config_show_masks_secrets_and_init_writes_every_setting(stack_env, tmp_path):
    stack_env.set(RALPH_WIGGUM_API_KEY="topsecret")
    shown = aistack(stack_env, "config", "show")
    assert shown.returncode == 0 and "topsecret" not in shown.stdout and "********" in shown.stdout
    target = tmp_path / "fresh.env"
    init = aistack(stack_env, "--env-file", str(target), "config", "init")
    assert init.returncode == 0 and target.is_file()
    text = target.read_text()
    for name in ("RALPH_MAX_ITERATIONS_DEFAULT=20", "LLAMA_CPP_PORT=8080", "WORKSPACE_ROOT=", "RALPH_STUCK_ITERATIONS=3"):
        assert f"# {name}" in text
    again = aistack(stack_env, "config", "init", "--env-file", str(target))
    assert again.returncode == 1 and "exists" in again.stderr
