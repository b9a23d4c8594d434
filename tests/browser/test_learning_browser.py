"""The Learning page in Chromium against a real orchestrator and dashboard: learn, accept a
proposal (the .env and the running orchestrator change), roll it back."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.sync_api import expect

from aistack import envfile

pytestmark = pytest.mark.browser
ENDED = {"completed", "exhausted", "failed", "stopped"}


def finish_tasks(ralph_url: str, checks: list[str], max_iterations: int) -> list[tuple[str, int]]:
    """Tasks of the command backend (it writes notes every iteration), each with a check, to their
    end: their statuses and iterations."""
    with httpx.Client(base_url=ralph_url, timeout=10) as client:
        body = {"backend": "command", "workspace": "repo", "max_iterations": max_iterations}
        ids = [client.post("/tasks", json={**body, "prompt": f"note {n}", "check_command": check}).json()["task_id"]
               for n, check in enumerate(checks)]  # fmt: skip
        deadline, ended = time.monotonic() + 120, []
        for task_id in ids:
            while (task := client.get(f"/tasks/{task_id}").json())["status"] not in ENDED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ended.append((task["status"], task["iteration"]))
        return ended


def test_a_proposal_is_learned_accepted_and_rolled_back_from_the_page(page, stack, screenshot) -> None:
    stack = stack(RALPH_LEARN_MIN_OUTCOMES=4)
    page.goto(stack.url + "/learning")
    expect(page.locator("#no-proposals")).to_be_visible()
    assert finish_tasks(stack.ralph.url, ["true", "true", "true"], 3) == [("completed", 1)] * 3
    assert finish_tasks(stack.ralph.url, ["false", "false", "false"], 3) == [("exhausted", 3)] * 3

    page.get_by_role("button", name="Learn now").click()
    expect(page.locator("#flash")).to_contain_text("proposal(s) made or refreshed")
    row = page.locator("#proposals tr", has_text="RALPH_MAX_ITERATIONS_SIMPLE=1")
    expect(row).to_have_attribute("data-status", "open")
    expect(row).to_contain_text("All 3 solved ones needed at most 1")
    screenshot(page, "learning-proposals")

    row.get_by_role("button", name="Accept").click()
    expect(page.locator("#flash")).to_contain_text("applied to the running orchestrator")
    row = page.locator("#proposals tr", has_text="RALPH_MAX_ITERATIONS_SIMPLE=1")
    expect(row).to_have_attribute("data-status", "accepted")
    expect(row).to_contain_text("(was unset)")
    assert envfile.read(stack.env.env_file)["RALPH_MAX_ITERATIONS_SIMPLE"] == "1"
    assert httpx.get(stack.ralph.url + "/config/limits", timeout=10).json()["ralph_max_iterations_simple"] == 1
    screenshot(page, "learning-accepted")

    row.get_by_role("button", name="Roll back").click()
    expect(page.locator("#flash")).to_contain_text("Rolled back")
    expect(page.locator("#proposals tr", has_text="RALPH_MAX_ITERATIONS_SIMPLE=1")).to_have_attribute("data-status", "rolled_back")
    assert "RALPH_MAX_ITERATIONS_SIMPLE" not in envfile.read(stack.env.env_file)
    assert httpx.get(stack.ralph.url + "/config/limits", timeout=10).json()["ralph_max_iterations_simple"] == 10
    decisions = httpx.get(stack.ralph.url + "/learn/proposals", timeout=10).json()
    [limit] = [p for p in decisions if p["kind"] == "iteration_limit"]
    assert limit["status"] == "rolled_back"
