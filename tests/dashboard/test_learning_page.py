"""The Learning page without an orchestrator: it says so; its posts need the session's CSRF token
before anything else, and a bad proposal id or action is an error page, never a 500. Which
proposals its savings plot shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from aistack.config import load_settings
from aistack.contracts import ProposalView
from aistack.dashboard.app import create_app
from aistack.dashboard.pages.learning import savings
from support import free_port


def client(tmp_path: Path, monkeypatch) -> TestClient:
    env = tmp_path / ".env"
    env.write_text(f"RALPH_WIGGUM_HOST=127.0.0.1\nRALPH_WIGGUM_PORT={free_port()}\nAISTACK_DATA_DIR={tmp_path / 'data'}\n")
    monkeypatch.setenv("AISTACK_ENV_FILE", str(env))
    return TestClient(create_app(load_settings()), headers={"accept": "text/html"})


def test_the_learning_page_without_an_orchestrator_and_its_posts(tmp_path, monkeypatch) -> None:
    web = client(tmp_path, monkeypatch)
    page = web.get("/learning")
    assert page.status_code == 200 and "The proposals are unavailable" in page.text and 'aria-current="page">Learning' in page.text
    assert web.post("/learning/1/accept").status_code == 403  # no token
    assert web.post("/learning/x/accept").status_code == 403  # the token first, the path after
    token = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)}
    for path in ("/learning/x/accept", "/learning/0/accept", "/learning/1/delete", f"/learning/{2**63}/reject"):
        answer = web.post(path, data=token)
        assert answer.status_code == 404 and "no proposal" in answer.text, path
    refused = web.post("/learning/1/accept", data=token, follow_redirects=True)
    assert refused.status_code == 200 and "accept refused" in refused.text and "unreachable" in refused.text
    learned = web.post("/learning/run", data=token, follow_redirects=True)
    assert "learning failed" in learned.text


def proposal(number: int, kind: str, status: str, **evidence: int) -> ProposalView:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return ProposalView(id=number, kind=kind, subject="simple", summary="s", changes={}, previous=None, task=None, evidence=evidence,
                        status=status, created_at=at, updated_at=at)  # fmt: skip


def test_the_savings_plot_shows_the_proposals_that_say_what_they_save_oldest_first() -> None:
    limits = [proposal(n, "iteration_limit", status, iterations_saved=n, tokens_saved=10 * n)
              for n, status in ((4, "open"), (1, "rolled_back"), (3, "superseded"), (2, "accepted"))]  # fmt: skip
    timeout = proposal(5, "iteration_timeout", "open", failed_with_longer=2)
    # A superseded one is counted again in the proposal that replaced it; a timeout says nothing it saves.
    assert [p.id for p in savings([timeout, *limits])] == [1, 2, 4]
