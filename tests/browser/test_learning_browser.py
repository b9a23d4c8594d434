"""The Learning page in Chromium against a real orchestrator and dashboard: learn, accept a
proposal (the .env and the running orchestrator change), roll it back; the plot of what the
proposals would save, drawn from the numbers of their evidence."""

from __future__ import annotations

import time

import httpx
import pytest
from playwright.sync_api import expect
from test_dashboard_plots import DRAWN

from aistack import envfile

pytestmark = pytest.mark.browser
ENDED = {"completed", "exhausted", "failed", "stopped"}
ITERATIONS_BAR = (31, 95, 191)  # the first of dashboard.js's SERIES


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
    expect(page.locator("#savings-empty")).to_contain_text("No data yet")
    expect(page.locator("canvas")).to_have_count(0)
    assert finish_tasks(stack.ralph.url, ["true", "true", "true"], 3) == [("completed", 1)] * 3
    assert finish_tasks(stack.ralph.url, ["false"] * 4, 3) == [("exhausted", 3)] * 4  # enough ran on past 1 to show it

    page.get_by_role("button", name="Learn now").click()
    expect(page.locator("#flash")).to_contain_text("proposal(s) made or refreshed")
    row = page.locator("#proposals tr", has_text="RALPH_MAX_ITERATIONS_SIMPLE=1")
    expect(row).to_have_attribute("data-status", "open")
    expect(row).to_contain_text("All 3 solved ones needed at most 1")
    shot = screenshot(page, "learning-proposals")
    assert_savings_plotted(page, stack.ralph.url)
    page.locator("#savings-plot").screenshot(path=str(shot.with_name("plot-learning-savings.png")))

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
    assert_savings_plotted(page, stack.ralph.url)  # a rolled back proposal still says what it would save


def assert_savings_plotted(page, ralph_url: str) -> None:
    """The savings plot shows, per proposal, exactly the iterations and tokens saved that its
    evidence in the orchestrator's API says, and it is drawn (pixels in the iterations' colour)."""
    proposals = httpx.get(ralph_url + "/learn/proposals", timeout=10).json()
    saving = sorted((p for p in proposals if "iterations_saved" in p["evidence"]), key=lambda p: p["id"])
    [limit] = saving  # four tasks that failed anyway ran 2 iterations each past the limit of 1
    assert limit["evidence"]["iterations_saved"] == 8 and limit["evidence"]["failed_past_limit"] == 4
    drawn = page.evaluate(DRAWN, ["#savings-plot canvas", [ITERATIONS_BAR]])
    assert drawn["labels"] == [f"#{p['id']} {p['subject']}" for p in saving]
    assert {d["label"]: d["data"] for d in drawn["datasets"]} == {
        "iterations saved": [p["evidence"]["iterations_saved"] for p in saving],
        "tokens saved": [p["evidence"]["tokens_saved"] for p in saving],
    }
    assert drawn["painted"] > 1000 and drawn["found"][0] > 20, drawn
    cells = page.locator(f'#savings-table tr[data-proposal="{limit["id"]}"] td')
    expect(cells.nth(3)).to_have_text(str(limit["evidence"]["iterations_saved"]))
    expect(cells.nth(4)).to_have_text(str(limit["evidence"]["tokens_saved"]))
