"""Every page renders (no orchestrator running: each says what is unavailable), and the
security rules hold: login when a key is set, CSRF on every form post, no secret in any page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aistack.config import load_settings
from aistack.dashboard.app import create_app
from support import free_port

PAGES = ["/", "/tasks", "/tasks?status=failed&page=3", "/tasks/new", "/controls", "/config", "/deploy", "/fragments/overview"]


@pytest.fixture
def client_for(tmp_path: Path, monkeypatch):
    def make(extra: str = "") -> tuple[TestClient, Path]:
        env = tmp_path / ".env"
        env.write_text(
            f"RALPH_WIGGUM_HOST=127.0.0.1\nRALPH_WIGGUM_PORT={free_port()}\nAISTACK_DATA_DIR={tmp_path / 'data'}\n"
            f"LLAMA_CPP_HOST=127.0.0.1\nLLAMA_CPP_PORT={free_port()}\nAIDER_WRAPPER_HOST=127.0.0.1\n"
            f"AIDER_WRAPPER_PORT={free_port()}\nDASHBOARD_HOST=127.0.0.1\nDASHBOARD_PORT={free_port()}\n{extra}"
        )
        monkeypatch.setenv("AISTACK_ENV_FILE", str(env))
        return TestClient(create_app(load_settings()), headers={"accept": "text/html"}), env

    return make


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_without_an_orchestrator(client_for, path: str) -> None:
    client, _ = client_for()
    response = client.get(path)
    assert response.status_code == 200
    assert "<html" in response.text or path.startswith("/fragments")
    if path in ("/", "/tasks", "/controls"):
        assert "is unreachable" in response.text


def test_unknown_task_is_an_error_page(client_for) -> None:
    client, _ = client_for()
    response = client.get("/tasks/bad..id")
    assert response.status_code == 404 and "no task with id &#39;bad..id&#39;" in response.text and 'role="alert"' in response.text
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "No such page." in response.text


def test_form_posts_need_the_session_csrf_token(client_for) -> None:
    client, env = client_for()
    before = env.read_bytes()
    token = csrf_of(client.get("/config").text)
    assert client.post("/config", data={"LOG_LEVEL": "debug"}).status_code == 403
    assert client.post("/config", data={"csrf_token": token + "x", "LOG_LEVEL": "debug"}).status_code == 403
    assert env.read_bytes() == before
    assert client.post("/config", data={"csrf_token": token, "LOG_LEVEL": "debug"}, follow_redirects=False).status_code == 303
    assert "LOG_LEVEL=debug\n" in env.read_text()
    # Another browser (no session) cannot reuse the token.
    other, _ = TestClient(client.app), None
    assert other.post("/config", data={"csrf_token": token, "LOG_LEVEL": "error"}).status_code == 403


def test_login_required_with_a_key_and_the_key_never_rendered(client_for) -> None:
    client, _ = client_for("RALPH_WIGGUM_API_KEY=page-test-secret-91\n")
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert client.get("/tasks/abc/events", headers={"accept": "text/event-stream"}).status_code == 401
    health = client.get("/health")  # open, like the orchestrator's, but only its status
    assert health.status_code == 200 and health.json() == {"status": "degraded"}  # no orchestrator runs
    assert "uptime_seconds" in client.get("/health", headers={"X-API-Key": "page-test-secret-91"}).json()
    login = client.get("/login")
    bad = client.post("/login", data={"csrf_token": csrf_of(login.text), "api_key": "nope", "next": "/config"})
    assert bad.status_code == 401
    good = client.post(
        "/login", data={"csrf_token": csrf_of(login.text), "api_key": "page-test-secret-91", "next": "/config"}, follow_redirects=False
    )
    assert good.status_code == 303 and good.headers["location"] == "/config"
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200 and "page-test-secret-91" not in response.text
    assert client.get("/health").json()["ralph_wiggum"] == "down"  # logged in: the details
    assert "page-test-secret-91" not in client.cookies.get("aistack_dashboard", "")


def test_controls_refuse_a_limit_above_the_cap_and_leave_the_file(client_for) -> None:
    client, env = client_for()
    before = env.read_bytes()
    token = csrf_of(client.get("/controls").text)
    form = {
        "csrf_token": token,
        "ralph_max_iterations_simple": "5",
        "ralph_max_iterations_default": "50",
        "ralph_max_iterations_complex": "60",
        "ralph_max_iterations_cap": "40",
        "ralph_adaptive_iterations": "true",
    }
    response = client.post("/controls", data=form)
    assert response.status_code == 422 and "above the cap" in response.text
    assert env.read_bytes() == before
    # Valid: saved, but the orchestrator is not running, which the page says.
    response = client.post("/controls", data=form | {"ralph_max_iterations_cap": "60"}, follow_redirects=True)
    assert "did not apply it" in response.text
    assert "RALPH_MAX_ITERATIONS_CAP=60\n" in env.read_text()
