"""Pre-flight checks against real sockets and real HTTP servers."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lifecycle_support import aistack, table_rows

from aistack import preflight
from aistack.config import Settings
from support import free_port


def settings_for(llama_port: int, **overrides) -> Settings:
    values = {"llama_cpp_host": "127.0.0.1", "llama_cpp_port": llama_port, "startup_timeout_seconds": 3, **overrides}
    return Settings(_env_file=None, **values)


class Health(BaseHTTPRequestHandler):
    """/health answers 503 ("loading") until `ready_at` (monotonic), then 200."""

    ready_at = 0.0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        code = 200 if time.monotonic() >= self.ready_at else 503
        body = b'{"status": "ok"}' if code == 200 else b'{"status": "loading model"}'
        self.send_response(code if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    """A real HTTP server on a free port; `start(ready_after=s)` makes /health 503 for `s` seconds."""
    servers = []

    def start(ready_after: float = 0.0, port: int | None = None) -> int:
        handler = type("H", (Health,), {"ready_at": time.monotonic() + ready_after})
        server = ThreadingHTTPServer(("127.0.0.1", port or 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("timeout", [2, 4])
def test_fail_fast_exits_1_after_the_timeout(capsys, timeout):
    settings = settings_for(free_port(), startup_timeout_seconds=timeout)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        preflight.before_serve(settings, "aider-wrapper")
    took = time.monotonic() - started
    assert exc.value.code == 1
    assert timeout - 1 <= took < timeout + 20  # it waited for the dependency, then gave up
    err = capsys.readouterr().err
    assert f"✗ llama-cpp at {settings.url('llama-cpp')} not reachable after {timeout} s" in err
    assert err.strip().endswith("— exiting")


def test_without_fail_fast_it_warns_and_continues(capsys):
    settings = settings_for(free_port(), startup_fail_fast=False)
    started = time.monotonic()
    preflight.before_serve(settings, "aider-wrapper")  # returns: the service starts degraded
    assert time.monotonic() - started >= 2  # it waited before going on without it
    err = capsys.readouterr().err
    assert "⚠ llama-cpp at" in err and "not reachable after 3 s" in err and err.strip().endswith("— continuing")


def test_disabled_check_does_nothing(capsys, monkeypatch):
    settings = settings_for(free_port(), startup_dependency_check=False)
    monkeypatch.setattr(preflight.health, "wait_ready", lambda *a, **k: pytest.fail("a disabled check probed"))
    preflight.before_serve(settings, "aider-wrapper")
    assert capsys.readouterr().err == ""


def test_a_loading_dependency_is_waited_for(health_server, capsys):
    port = health_server(ready_after=2.5)
    settings = settings_for(port, startup_timeout_seconds=10)
    assert preflight.probe("llama-cpp", settings.url("llama-cpp")).detail == "HTTP 503 (loading model)"
    started = time.monotonic()
    preflight.before_serve(settings, "aider-wrapper")
    assert time.monotonic() - started >= 2.0  # it waited for the 503 to clear (then said ✓ below)
    assert f"✓ llama-cpp is reachable at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_a_dependency_that_stays_loading_is_not_ready(health_server, capsys):
    port = health_server(ready_after=60)
    with pytest.raises(SystemExit):
        preflight.before_serve(settings_for(port), "aider-wrapper")
    assert "not ready after 3 s (HTTP 503 (loading model)) — exiting" in capsys.readouterr().err


def test_a_dependency_that_appears_later_is_found(health_server, capsys):
    port = free_port()
    threading.Timer(1.0, health_server, kwargs={"port": port}).start()
    preflight.before_serve(settings_for(port, startup_timeout_seconds=8), "aider-wrapper")
    assert "✓ llama-cpp is reachable" in capsys.readouterr().err


def test_urls_come_from_settings_not_localhost():
    with socket.socket() as s:  # an address on loopback other than 127.0.0.1 proves the host is read
        s.bind(("127.0.0.2", 0))
        s.listen()
        port = s.getsockname()[1]
        settings = Settings(_env_file=None, llama_cpp_host="127.0.0.2", llama_cpp_port=port)
        result = preflight.probe("llama-cpp", settings.url("llama-cpp"), timeout=1)
    assert result.url == f"http://127.0.0.2:{port}" and result.reachable


@pytest.mark.e2e  # starts the real llama-server
def test_preflight_command_prints_a_table_and_fails_when_something_is_down(stack, services):
    services("llama-cpp", stack, timeout=120)
    result = aistack(stack, "preflight")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert rows["llama-cpp"].split()[1:4] == [stack.url("llama-cpp"), "yes", "yes"]
    assert rows["ralph-wiggum"].split()[1:4] == [stack.url("ralph-wiggum"), "no", "no"]
    advice = " ".join(result.stdout.split())  # the notes under the table may wrap
    assert "ralph-wiggum (connection refused): start it: aistack up" in advice
    assert "check RALPH_WIGGUM_HOST and RALPH_WIGGUM_PORT" in advice
    assert "llama-cpp (" not in advice


def test_preflight_waits_for_the_named_services_only(stack, health_server):
    """`aistack preflight NAME --wait S`, a systemd unit's readiness: it returns 0 as soon as the
    service turns ready (after its 503s), and checks nothing else of the stack."""
    stack.set(LLAMA_CPP_PORT=health_server(ready_after=1.5))
    result = aistack(stack, "preflight", "llama-cpp", "--wait", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(table_rows(result.stdout)) == {"llama-cpp"}
    once = aistack(stack, "preflight", "aider-wrapper", "--wait", "1")  # nothing listens there
    assert once.returncode == 1 and set(table_rows(once.stdout)) == {"aider-wrapper"}
