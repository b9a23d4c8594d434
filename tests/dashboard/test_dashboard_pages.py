"""Every page renders (no orchestrator running: each says what is unavailable), and the
security rules hold: login when a key is set, CSRF on every form post, no secret in any page."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from aistack.config import load_settings
from aistack.dashboard.app import create_app
from aistack.dashboard.security import CONTENT_SECURITY_POLICY, LoginThrottle
from aistack.dashboard.site import HERE
from support import free_port

PAGES = ["/", "/tasks", "/tasks?status=failed&page=3", "/tasks/new", "/stats", "/controls", "/config", "/deploy", "/learning",
         "/fragments/overview"]  # fmt: skip


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
    if path in ("/", "/tasks", "/stats", "/controls"):
        assert "is unreachable" in response.text


OTHER_ANSWERS = ["/login", "/health", "/static/dashboard.js", "/static/vendor/chart.umd.min.js", "/no/such/page", "/tasks/bad..id"]


def test_every_response_carries_the_content_security_policy(client_for) -> None:
    open_, _ = client_for()
    keyed, _ = client_for(f"RALPH_WIGGUM_API_KEY={KEY}\n")
    answers = [client.get(path, follow_redirects=False) for client in (open_, keyed) for path in PAGES + OTHER_ANSWERS]
    refused = open_.post("/config", data={"LOG_LEVEL": "debug"})  # no CSRF token: 403
    answers += [refused, keyed.get("/tasks/abc/events", headers={"accept": "text/event-stream"})]  # not logged in: 401
    assert {a.status_code for a in answers} >= {200, 303, 401, 403, 404}
    for answer in answers:
        assert answer.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, answer.request.url
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == directives["style-src"] == directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and "unsafe" not in CONTENT_SECURITY_POLICY


def test_a_crash_answers_500_with_the_policy_and_no_traceback(client_for) -> None:
    client, _ = client_for()

    def boom() -> None:
        raise RuntimeError("secret detail")

    client.app.add_api_route("/boom", boom)
    crashed = TestClient(client.app, raise_server_exceptions=False)
    for accept in ("text/html", "application/json"):
        answer = crashed.get("/boom", headers={"accept": accept})
        assert answer.status_code == 500 and answer.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY
        assert "see the dashboard's log" in answer.text and "secret detail" not in answer.text and "Traceback" not in answer.text


# What the policy refuses: an inline <script> or <style>, a style attribute, an on* handler, a javascript: URL.
INLINE = re.compile(r"<script(?![^>]*\ssrc=)|<style|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)


def test_no_template_has_what_the_policy_would_refuse() -> None:
    found = {t.name: INLINE.findall(t.read_text()) for t in (HERE / "templates").glob("*.html")}
    assert len(found) > 10 and {name: hits for name, hits in found.items() if hits} == {}


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


KEY = "page-test-secret-91"


def log_in(client: TestClient, key: str = KEY):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"csrf_token": token, "api_key": key, "next": "/config"}, follow_redirects=False)


CSRF_POSTS = [
    ("/tasks", {"prompt": "p", "backend": "command", "workspace": "repo"}),
    ("/tasks/abc/stop", {}),
    ("/tasks/abc/approve", {}),
    ("/tasks/abc/reject", {}),
    ("/controls", {"ralph_max_iterations_simple": "5", "ralph_max_iterations_default": "6", "ralph_max_iterations_complex": "7",
                   "ralph_max_iterations_cap": "8", "ralph_adaptive_iterations": "true"}),
    ("/config", {"LOG_LEVEL": "debug"}),
    ("/deploy/ralph-wiggum/nonsense", {}),  # an action that would only be refused: a missed check shows as 303, not a deploy
    ("/logout", {}),
]  # fmt: skip


def test_every_form_post_needs_the_session_csrf_token(client_for) -> None:
    client, env = client_for(f"RALPH_WIGGUM_API_KEY={KEY}\n")
    before = env.read_bytes()
    # Logging in needs it too: the right key without the token logs nobody in.
    token = csrf_of(client.get("/login").text)
    assert client.post("/login", data={"api_key": KEY, "next": "/"}).status_code == 403
    assert client.post("/login", data={"csrf_token": token + "x", "api_key": KEY, "next": "/"}).status_code == 403
    assert client.get("/config", follow_redirects=False).status_code == 303
    assert log_in(client).status_code == 303
    token = csrf_of(client.get("/config").text)
    for path, form in CSRF_POSTS:
        for forged in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-1]}):
            response = client.post(path, data=form | forged, follow_redirects=False)
            assert response.status_code == 403 and "CSRF" in response.text, (path, forged, response.status_code)
    assert client.get("/config").status_code == 200  # the refused logout ended nothing
    assert env.read_bytes() == before
    # With the token the same posts are taken (and refused or redirected for reasons of their own).
    assert client.post("/tasks/abc/stop", data={"csrf_token": token}, follow_redirects=False).status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(client_for) -> None:
    client, _ = client_for(f"RALPH_WIGGUM_API_KEY={KEY}\n")
    assert log_in(client).status_code == 303
    copied = client.cookies["aistack_dashboard"]
    thief = TestClient(client.app, headers={"accept": "text/html"}, cookies={"aistack_dashboard": copied})
    assert thief.get("/config").status_code == 200  # the copy works while the session lasts...
    token = csrf_of(client.get("/config").text)
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).headers["location"] == "/login"
    # ...and not after the logout: the server has forgotten the session the cookie names.
    thief.cookies.set("aistack_dashboard", copied)
    response = thief.get("/config", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/config"
    thief.cookies.set("aistack_dashboard", copied)
    assert thief.get("/tasks/abc/events", headers={"accept": "text/event-stream"}).status_code == 401
    assert client.get("/config", follow_redirects=False).status_code == 303


def test_a_session_ends_when_idle_and_at_its_lifetime(client_for) -> None:
    client, _ = client_for(f"RALPH_WIGGUM_API_KEY={KEY}\nDASHBOARD_SESSION_IDLE_MINUTES=30\nDASHBOARD_SESSION_MAX_HOURS=2\n")
    now = [1000.0]
    client.app.state.site.sessions.clock = lambda: now[0]

    def allowed() -> bool:
        return client.get("/controls", follow_redirects=False).status_code == 200

    assert log_in(client).status_code == 303
    for _ in range(3):  # used every 29 minutes: it lasts
        now[0] += 29 * 60
        assert allowed()
    now[0] += 29 * 60
    client.get("/fragments/overview")  # a page polling by itself is not a person using it
    now[0] += 2 * 60
    assert not allowed()

    assert log_in(client).status_code == 303
    for _ in range(4):
        now[0] += 29 * 60
        assert allowed()
    now[0] += 5 * 60  # 2 h 1 min since the login, though used 5 min ago
    assert not allowed()


def test_wrong_keys_lock_the_client_out_with_a_growing_delay(stack_env, services) -> None:
    """A real dashboard process: after the free attempts each wrong key locks the address out for
    longer, the right key included, whatever X-Forwarded-For claims; the log names the address
    and the count, never a key."""
    stack_env.set(RALPH_WIGGUM_API_KEY=KEY)
    dashboard = services("dashboard", stack_env)
    free = LoginThrottle().free

    def attempt(key: str, n: int) -> httpx.Response:
        """One login from a new browser (a login renews the session's CSRF token)."""
        with httpx.Client(base_url=dashboard.url, headers={"accept": "text/html"}, timeout=10) as browser:
            data = {"csrf_token": csrf_of(browser.get("/login").text), "api_key": key, "next": "/"}
            return browser.post("/login", data=data, headers={"X-Forwarded-For": f"10.0.0.{n}"})

    assert [attempt(f"wrong-key-{n}", n).status_code for n in range(free + 1)] == [401] * (free + 1)
    locked = attempt(KEY, 100)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "1" and "try again in 1 s" in locked.text
    time.sleep(1)
    assert attempt(f"wrong-key-{free + 1}", 101).status_code == 401
    locked = attempt(KEY, 102)
    assert locked.status_code == 429 and locked.headers["retry-after"] == "2"  # twice as long
    time.sleep(2)
    assert attempt(KEY, 103).status_code == 303  # the right key, once the lock has passed
    # A login resets the count.
    assert attempt("wrong-key-again", 104).status_code == 401 and attempt(KEY, 105).status_code == 303
    log = dashboard.log()
    assert f"dashboard login with a wrong key from 127.0.0.1 ({free + 2} in a row)" in log
    assert "wrong-key" not in log and KEY not in log and "10.0.0." not in log


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    now = [0.0]
    throttle = LoginThrottle(free=1, most=8, clients=3, clock=lambda: now[0])
    assert [throttle.failed("a") for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    assert throttle.wait("a") == 8  # 1, 2, 4, 8, then capped
    for client in ("b", "c", "d"):
        throttle.failed(client)
    assert len(throttle) == 3 and throttle.wait("a") == 0  # the longest quiet was forgotten
    throttle.failed("b")
    throttle.failed("b")
    now[0] += 3600 + 10
    assert throttle.wait("b") == 0 and throttle.failed("b") == 1  # an hour without a failure: a fresh start
