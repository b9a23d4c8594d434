"""The dashboard's plots in headless Chromium against a real orchestrator: drawn (pixels on the
canvas, in the colours that carry meaning), from exactly the numbers the orchestrator stored, with
those numbers in a table beside them, under the dashboard's Content-Security-Policy (no inline
script or style), and with no data a plain "no data yet" rather than an empty axis or a script error."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from test_dashboard_browser import api

from support import wait_until

pytestmark = pytest.mark.browser

PASSED, FAILED = (27, 122, 58), (192, 57, 43)  # the bars' colours in dashboard.js: check passed / failed

# Per plot: its Chart.js data, how many pixels are painted, and how many in each colour asked for.
DRAWN = """([selector, colours]) => {
  const canvas = document.querySelector(selector);
  const chart = Chart.getChart(canvas);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  const found = colours.map(() => 0);
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] === 0) continue;
    painted++;
    colours.forEach(([r, g, b], n) => { if (pixels[i] === r && pixels[i + 1] === g && pixels[i + 2] === b) found[n]++; });
  }
  return { labels: chart.data.labels, datasets: chart.data.datasets.map((d) => ({ label: d.label, data: d.data })), painted, found };
}"""


def submit(stack, prompt: str, check: str, max_iterations: int | None, **fields) -> str:
    body = {"prompt": prompt, "backend": "command", "workspace": "repo", "check_command": check, **fields}
    if max_iterations is not None:
        body["max_iterations"] = max_iterations
    response = api(stack, "/tasks", method="POST", json=body)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()["task_id"]


def finished(stack, task_id: str) -> dict:
    assert wait_until(lambda: api(stack, f"/tasks/{task_id}").json()["finished_at"] is not None, 60)
    return api(stack, f"/tasks/{task_id}").json()


def test_with_no_data_the_pages_say_so_without_an_empty_plot_or_an_error(page, stack, screenshot) -> None:
    stack = stack()
    page.goto(stack.url + "/stats")
    expect(page.locator("#stats-empty")).to_have_text("No data yet: the plots appear once a task has finished.")
    expect(page.locator("canvas")).to_have_count(0)
    screenshot(page, "stats-no-data")
    # A task waiting for approval has no iteration yet: no plot of them either.
    task_id = submit(stack, "Write a note after approval", "test -s notes.txt", 3, require_approval=True)
    assert wait_until(lambda: api(stack, f"/tasks/{task_id}").json()["status"] == "awaiting_approval", 30)
    page.goto(f"{stack.url}/tasks/{task_id}")
    expect(page.locator("#iterations-plot-empty")).to_contain_text("No data yet")
    expect(page.locator("canvas")).to_have_count(0)
    assert page.evaluate("typeof Chart") == "function"  # loaded all the same, under the policy
    assert page.errors == []


def test_a_tasks_iterations_are_plotted_from_what_the_orchestrator_stored(page, stack, screenshot) -> None:
    stack = stack()
    # The check passes once the agent has written two lines: iteration 1 fails it, iteration 2 passes.
    task_id = submit(stack, "Write two lines of notes", "test $(wc -l < notes.txt) -ge 2", 5)
    page.goto(f"{stack.url}/tasks/{task_id}")  # opened while it runs: the plot follows the task live
    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#iterations-table tbody tr")).to_have_count(2)

    stored = api(stack, f"/tasks/{task_id}/iterations").json()
    assert [it["check_exit_code"] for it in stored] == [1, 0]
    drawn = page.evaluate(DRAWN, ["#iterations-plot canvas", [PASSED, FAILED]])
    assert drawn["labels"] == ["iteration 1", "iteration 2"]
    by_label = {d["label"]: d["data"] for d in drawn["datasets"]}
    seconds = [it["duration_seconds"] for it in stored]
    assert by_label == {"seconds, check passed": [None, seconds[1]], "seconds, check failed": [seconds[0], None],
                        "tokens": [it["tokens"]["prompt"] + it["tokens"]["completion"] for it in stored]}  # fmt: skip
    assert drawn["painted"] > 1000 and all(n > 20 for n in drawn["found"]), drawn  # a green bar and a red one
    # The same numbers as text, for a screen reader and for anyone who would rather read them.
    rows = page.locator("#iterations-table tbody tr")
    expect(rows.nth(0).locator("td").nth(0)).to_have_text("failed (exit 1)")
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("passed")
    expect(rows.nth(1).locator("td").nth(1)).to_have_text(f"{seconds[1]:.1f}")
    assert page.errors == []
    shot = screenshot(page, "task-iterations-plot")
    page.locator("#iterations-plot").screenshot(path=str(shot.with_name("plot-iterations.png")))


def test_stats_plot_success_and_tokens_per_day_per_backend_and_class(page, stack, screenshot) -> None:
    stack = stack()
    done = finished(stack, submit(stack, "Write two lines of notes", "test $(wc -l < notes.txt) -ge 2", 5))
    # No limit given: the prompt's class sets it (and the task has a class; the first has none).
    exhausted = finished(stack, submit(stack, "fix the typo", "false", None))
    assert (done["status"], exhausted["status"], exhausted["complexity"]) == ("completed", "exhausted", "simple")
    daily = api(stack, "/stats/daily").json()

    page.goto(stack.url + "/stats")
    for key, rows in (("backend", daily["per_backend"]), ("class", daily["per_complexity"])):
        days = sorted({r["day"] for r in rows})
        groups = list(dict.fromkeys(r["group"] for r in rows))
        at = {(r["day"], r["group"]): r for r in rows}
        for metric, scale, field in (("success", 100, "success_rate"), ("tokens", 1, "tokens_per_solved")):
            drawn = page.evaluate(DRAWN, [f'#plot-{key} canvas[data-metric="{metric}"]', []])
            assert drawn["labels"] == days and drawn["painted"] > 1000, drawn
            want = {g: [at[d, g][field] * scale if (d, g) in at and at[d, g][field] is not None else None for d in days] for g in groups}
            assert {d["label"]: d["data"] for d in drawn["datasets"]} == want, (key, metric)
        expect(page.locator(f"#daily-{key} tbody tr")).to_have_count(len(rows))
        for r in rows:  # the table holds the orchestrator's numbers, as text
            day, group = r["day"], r["group"]
            cells = page.locator(f'#daily-{key} tbody tr[data-day="{day}"][data-group="{group}"] td')
            expect(cells.nth(1)).to_have_text(str(r["total"]))
            expect(cells.nth(3)).to_have_text(f"{r['success_rate'] * 100:.0f} %")
    assert {r["group"] for r in daily["per_backend"]} == {"command"}
    assert {r["group"] for r in daily["per_complexity"]} == {"simple", "unclassified"}
    assert sum(r["total"] for r in daily["per_backend"]) == 2 and sum(r["completed"] for r in daily["per_backend"]) == 1
    assert page.errors == []
    shot = screenshot(page, "stats-plots")
    page.locator("#plot-class").screenshot(path=str(shot.with_name("plot-stats.png")))
