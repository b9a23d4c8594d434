"""The dashboard in headless Chromium against a real orchestrator and a real .env.

Each test drives the pages as a person would (labelled fields, buttons) and checks the outcome
both on the page and at the source: the orchestrator's API or the .env file itself.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def api(stack, path: str, **kwargs) -> httpx.Response:
    key = stack.env.values.get("RALPH_WIGGUM_API_KEY")
    headers = {"X-API-Key": key} if key else {}
    return httpx.request(kwargs.pop("method", "GET"), stack.ralph.url + path, headers=headers, timeout=10, **kwargs)


def submit_task(
    page, stack, prompt: str, check: str | None = None, approval: bool = False, fixed: int | None = None, protect: str | None = None
) -> str:
    page.goto(stack.url + "/tasks/new")
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_label("Backend", exact=True).select_option("command")
    page.get_by_label("Workspace").fill("repo")
    if check:
        page.get_by_label("Check command").fill(check)
    if fixed is not None:
        page.get_by_label("Maximum iterations").fill(str(fixed))
    if protect:
        page.get_by_label("Protected paths").fill(protect)
    if approval:
        page.get_by_label("Require approval before every iteration").check()
    page.get_by_role("button", name="Submit task").click()
    page.wait_for_url(f"{stack.url}/tasks/*")
    return page.url.rsplit("/", 1)[1]


def test_submit_through_form_and_watch_it_complete_live(page, stack, screenshot) -> None:
    stack = stack()
    page.goto(stack.url + "/")
    # Only the orchestrator and the dashboard run: the orchestrator says why it is degraded.
    ralph_row = page.locator('[data-service="ralph-wiggum"]')
    expect(ralph_row.locator("[data-health]")).to_have_text("degraded")
    expect(ralph_row).to_contain_text("backend unreachable: aider")
    expect(ralph_row).to_contain_text(stack.ralph.url)
    expect(page.locator('[data-service="dashboard"] [data-health]')).to_have_text("healthy")
    expect(page.locator('[data-service="aider-wrapper"] [data-health]')).to_have_text("down")
    screenshot(page, "overview")

    page.goto(stack.url + "/tasks/new")
    screenshot(page, "new-task")
    # Two iterations: the check passes once the agent has written two lines.
    task_id = submit_task(page, stack, "Write two lines of notes", check="test $(wc -l < notes.txt) -ge 2", fixed=5)
    page.evaluate("window.__sameDocument = true")  # survives only if the page never reloads

    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("#stream-state")).to_contain_text("stream closed")
    # The relayed stream arrived in this page (its last events may race the task's end; the
    # task view itself is re-read from the API on every event, so it is always complete).
    expect(page.locator("#event-log li[data-type=iteration_started]").first).to_contain_text("iteration=1")
    expect(page.locator("#event-log li[data-type=end]")).to_contain_text("status=completed")
    expect(page.locator("#iterations li.iteration")).to_have_count(2)
    expect(page.locator("#evidence-rule")).to_have_text("check command")
    newest = page.locator('#iterations li[data-number="2"]')
    expect(newest.locator("[data-check]")).to_have_text("exit 0")
    expect(newest.locator("pre.output").first).to_contain_text("appended line 2 to notes.txt")
    expect(newest.locator("ul.files")).to_contain_text("notes.txt")
    newest.locator("details.diff summary").click()
    expect(newest.locator("details.diff pre")).to_contain_text("+iteration 2: Write two lines of notes")
    screenshot(page, "task-completed")

    # The page shows what the orchestrator recorded.
    task = api(stack, f"/tasks/{task_id}").json()
    assert task["status"] == "completed" and task["iteration"] == 2 and task["max_iterations"] == 5
    assert task["evidence"]["rule"] == "check_command"

    page.goto(stack.url + "/tasks?status=completed")
    expect(page.locator(f'#task-list tr[data-task="{task_id}"]')).to_contain_text("completed")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#task-list")).to_contain_text("No tasks with this status")
    page.goto(stack.url + "/tasks")
    screenshot(page, "tasks")

    page.goto(stack.url + "/")
    expect(page.locator('#stats [data-stat="completed"]')).to_have_text("1")
    # The overview refreshes itself in place.
    page.evaluate("window.__sameDocument = true")
    checked = page.locator("#services-h small").inner_text()
    expect(page.locator("#services-h small")).not_to_have_text(checked, timeout=12_000)
    assert page.evaluate("window.__sameDocument") is True


def test_a_protected_path_from_the_form_is_undone_and_shown(page, stack, screenshot) -> None:
    stack = stack()
    task_id = submit_task(page, stack, "Write notes", check="test -f notes.txt", fixed=1, protect="notes.txt, tests/**")
    expect(page.locator("#task-status")).to_have_text("exhausted", timeout=30_000)
    expect(page.locator("main")).to_contain_text("Protected")
    first = page.locator('#iterations li[data-number="1"]')
    expect(first).to_contain_text("Protected files it changed (undone)")
    expect(first.locator("ul.files")).to_have_text("notes.txt")
    expect(first.locator("[data-check]")).to_have_text("exit 1")
    screenshot(page, "task-protected")
    task = api(stack, f"/tasks/{task_id}").json()
    assert task["protected_paths"] == ["notes.txt", "tests/**"]
    assert api(stack, f"/tasks/{task_id}/iterations").json()[0]["protected_undone"] == ["notes.txt"]


def test_backends_show_availability_and_outcomes_and_the_form_offers_only_available_ones(page, stack, screenshot) -> None:
    stack = stack()
    page.goto(stack.url + "/tasks/new")
    offered = page.get_by_label("Backend", exact=True).locator("option").all_inner_texts()
    available = [b["name"] for b in api(stack, "/health").json()["backends"] if b["available"]]
    assert offered == available and "command" in offered and "goose" not in offered and "autogpt" not in offered
    submit_task(page, stack, "Write two lines of notes", check="test $(wc -l < notes.txt) -ge 2", fixed=5)
    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)

    page.goto(stack.url + "/")
    command = page.locator('#backends tr[data-backend="command"]')
    expect(command.locator("[data-available]")).to_have_attribute("data-available", "yes")
    expect(command.locator('[data-stat="tasks"]')).to_have_text("1")
    expect(command.locator('[data-stat="success"]')).to_have_text("100 %")
    expect(command.locator('[data-stat="iterations"]')).to_have_text("2.0")
    expect(command.locator('[data-stat="tokens"]')).to_have_text("0")  # a plain command reports none
    goose = page.locator('#backends tr[data-backend="goose"]')
    expect(goose.locator("[data-available]")).to_have_attribute("data-available", "no")
    expect(goose).to_contain_text("not installed: 'goose' is not on PATH")
    expect(page.locator('#backends tr[data-backend="aider"] [data-stat="success"]')).to_have_text("—")
    screenshot(page, "backends")


# Says two lines, then waits until the test puts `go` into its worktree, then says one more.
GATED_AGENT = """#!/bin/sh
echo "compiling the first module"
echo "running 12 tests"
while [ ! -e go ]; do sleep 0.05; done
echo "all 12 tests passed"
"""


def test_the_agents_output_shows_live_each_chunk_at_the_time_it_was_read(page, stack, screenshot) -> None:
    stack = stack()
    Path(stack.env.values["RALPH_COMMAND_BACKEND"]).write_text(GATED_AGENT)
    task_id = submit_task(page, stack, "Run the tests", fixed=1)
    pane = page.locator("#live-output")
    expect(pane.locator(".mark")).to_have_text([re.compile("iteration 1$")])
    expect(pane.locator(".chunk span").first).to_contain_text("compiling the first module")
    # The agent still waits for us: what the page shows streamed while its iteration ran.
    assert api(stack, f"/tasks/{task_id}/iterations").json() == []
    # Opened again a second later, the page replays the stored output, and every event shows the
    # time it happened, not the time this page received it.
    time.sleep(1.1)
    page.reload()
    expect(pane.locator(".chunk span").first).to_contain_text("compiling the first module")
    queued = api(stack, f"/tasks/{task_id}/events.json").json()[0]
    happened = page.evaluate("(iso) => new Date(iso).toLocaleTimeString()", queued["created_at"])
    expect(page.locator("#event-log li[data-type=status]").first).to_have_text(re.compile(f"^{re.escape(happened)} status status=queued"))
    worktree = Path(api(stack, f"/tasks/{task_id}").json()["worktree"])
    (worktree / "go").write_text("")
    expect(pane).to_contain_text("all 12 tests passed")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    # Each chunk carries the time its first character was read, as the orchestrator recorded it.
    output = [e["data"] for e in api(stack, f"/tasks/{task_id}/events.json").json() if e["type"] == "output"]
    shown = pane.locator(".chunk time")
    expect(shown).to_have_count(len(output))
    assert [shown.nth(i).get_attribute("datetime") for i in range(len(output))] == [d["at"] for d in output]
    assert "".join(pane.locator(".chunk span").all_text_contents()) == "".join(d["text"] for d in output)
    screenshot(page, "task-live-output")


def test_approve_a_waiting_task_then_it_runs(page, stack, screenshot) -> None:
    stack = stack()
    task_id = submit_task(page, stack, "Write a note after approval", check="test -s notes.txt", approval=True)
    expect(page.locator("#task-status")).to_have_text("awaiting approval", timeout=20_000)
    assert api(stack, f"/tasks/{task_id}").json()["iteration"] == 0  # nothing ran yet
    screenshot(page, "task-awaiting-approval")

    # By keyboard: focus the button, press Enter.
    page.get_by_role("button", name="Approve").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#flash")).to_contain_text("Approved")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    task = api(stack, f"/tasks/{task_id}").json()
    assert task["status"] == "completed" and task["iteration"] == 1

    # Reject ends a second waiting task without running it.
    other = submit_task(page, stack, "Never run this one", check="test -s notes.txt", approval=True)
    expect(page.locator("#task-status")).to_have_text("awaiting approval", timeout=20_000)
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#task-status")).to_have_text("rejected")
    assert api(stack, f"/tasks/{other}").json()["iteration"] == 0


def test_changed_iteration_limit_is_used_by_the_running_orchestrator(page, stack, screenshot) -> None:
    stack = stack()
    page.goto(stack.url + "/controls")
    expect(page.locator('[data-live="ralph_max_iterations_default"]')).to_have_text("20")
    screenshot(page, "controls")

    # Above the cap: refused, nothing saved.
    before = stack.env.env_file.read_bytes()
    page.get_by_label("Default", exact=True).fill("500")
    page.get_by_role("button", name="Save and apply").click()
    expect(page.locator("#form-error")).to_contain_text("above the cap")
    assert stack.env.env_file.read_bytes() == before

    page.get_by_label("Adaptive: pick the limit from the prompt's complexity").uncheck()
    page.get_by_label("Default", exact=True).fill("7")
    page.get_by_role("button", name="Save and apply").click()
    expect(page.locator("#flash")).to_contain_text("applied to the running orchestrator")
    expect(page.locator('[data-live="ralph_max_iterations_default"]')).to_have_text("7")
    expect(page.locator('[data-live="ralph_adaptive_iterations"]')).to_have_text("false")
    text = stack.env.env_file.read_text()
    assert "RALPH_MAX_ITERATIONS_DEFAULT=7\n" in text and "RALPH_ADAPTIVE_ITERATIONS=false\n" in text
    assert api(stack, "/config/limits").json()["ralph_max_iterations_default"] == 7
    screenshot(page, "controls-saved")

    # A task without max_iterations now gets the new limit, same orchestrator process.
    task_id = submit_task(page, stack, "Write notes until told to stop", check="false")
    task = api(stack, f"/tasks/{task_id}").json()
    assert task["max_iterations"] == 7 and task["limit_source"] == "default"
    expect(page.locator("#task-iteration")).to_contain_text("of 7")
    assert stack.ralph.proc.poll() is None

    # A task whose check never passes, with room for 100 iterations: Stop ends it.
    task_id = submit_task(page, stack, "Write notes forever", check="false", fixed=100)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#task-status")).to_have_text("stopped", timeout=20_000)
    stopped = api(stack, f"/tasks/{task_id}").json()
    assert stopped["status"] == "stopped" and stopped["iteration"] < 100


def test_invalid_config_value_shows_error_and_leaves_file_unchanged(page, stack, screenshot) -> None:
    stack = stack()
    page.goto(stack.url + "/config")
    screenshot(page, "config")
    before = stack.env.env_file.read_bytes()

    page.get_by_label("RALPH_MAX_ITERATIONS_CAP").fill("zero")
    page.get_by_label("LOG_LEVEL").select_option("debug")  # a valid change in the same save
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#form-error")).to_contain_text("RALPH_MAX_ITERATIONS_CAP='zero'")
    expect(page.locator("#form-error")).to_contain_text("whole number from 1 to 10000")
    expect(page.locator('tr[data-setting="RALPH_MAX_ITERATIONS_CAP"] input')).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("RALPH_MAX_ITERATIONS_CAP")).to_have_value("zero")  # what was typed stays for fixing
    assert stack.env.env_file.read_bytes() == before
    assert not stack.env.env_file.with_name(".env.bak").exists()
    screenshot(page, "config-invalid")

    # Fixing it saves both changes, keeps a backup and the orchestrator applies the limit.
    page.get_by_label("RALPH_MAX_ITERATIONS_CAP").fill("60")
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#flash")).to_contain_text("Saved 2 change(s)")
    assert stack.env.env_file.with_name(".env.bak").read_bytes() == before
    text = stack.env.env_file.read_text()
    assert "RALPH_MAX_ITERATIONS_CAP=60\n" in text and "LOG_LEVEL=debug\n" in text
    assert api(stack, "/config/limits").json()["ralph_max_iterations_cap"] == 60


def test_a_line_separator_in_a_value_never_becomes_a_line_of_the_env(page, stack) -> None:
    """U+2028 typed into the editor is refused; one already in the file stays inside its value
    when the editor saves another setting (it once became a real RALPH_COMMAND_BACKEND line)."""
    stack = stack()
    smuggled = "-DX=1\u2028RALPH_COMMAND_BACKEND=touch pwned"
    before = stack.env.env_file.read_bytes()
    page.goto(stack.url + "/config")
    page.get_by_label("LLAMA_CPP_CMAKE_ARGS").fill(smuggled)
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#form-error")).to_contain_text("LLAMA_CPP_CMAKE_ARGS: line breaks and control characters are not allowed")
    expect(page.locator("#form-error")).to_contain_text("U+2028")
    assert stack.env.env_file.read_bytes() == before

    hand_written = f"LLAMA_CPP_CMAKE_ARGS='{smuggled}'\n"
    stack.env.env_file.write_text(before.decode() + hand_written, encoding="utf-8")
    page.goto(stack.url + "/config")
    page.get_by_label("LOG_LEVEL").select_option("debug")
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#flash")).to_contain_text("Saved 1 change(s)")
    assert hand_written in stack.env.env_file.read_text(encoding="utf-8")  # kept, as it was
    page.get_by_label("LLAMA_CPP_CMAKE_ARGS").fill("-DX=2")
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#flash")).to_contain_text("Saved 1 change(s)")
    text = stack.env.env_file.read_text(encoding="utf-8")
    assert "LLAMA_CPP_CMAKE_ARGS=-DX=2\n" in text and "LOG_LEVEL=debug\n" in text and "pwned" not in text
    assert [line for line in text.split("\n") if line.startswith("RALPH_COMMAND_BACKEND=")] == [
        f"RALPH_COMMAND_BACKEND={stack.env.values['RALPH_COMMAND_BACKEND']}"
    ]


def test_api_key_login_and_secret_never_reaches_the_browser(page, stack, screenshot) -> None:
    key = "browser-test-key-7f3a"
    stack = stack(RALPH_WIGGUM_API_KEY=key)
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.text()) if "text" in (r.headers.get("content-type") or "") else None)

    page.goto(stack.url + "/config")
    expect(page).to_have_url(f"{stack.url}/login?next=/config")
    screenshot(page, "login")
    page.get_by_label("API key (RALPH_WIGGUM_API_KEY)").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_be_visible()
    page.get_by_label("API key (RALPH_WIGGUM_API_KEY)").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{stack.url}/config")
    secret = page.get_by_label("RALPH_WIGGUM_API_KEY")
    expect(secret).to_have_value("")
    expect(secret).to_have_attribute("placeholder", "set — leave empty to keep")

    # Saving with the secret left empty keeps it.
    page.get_by_label("RALPH_STUCK_ITERATIONS").fill("4")
    page.get_by_role("button", name="Validate and save").first.click()
    expect(page.locator("#flash")).to_contain_text("Saved 1 change(s)")
    assert f"RALPH_WIGGUM_API_KEY={key}\n" in stack.env.env_file.read_text()

    # The dashboard reaches the protected orchestrator with the key it holds.
    task_id = submit_task(page, stack, "Write a note", check="test -s notes.txt")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=30_000)
    page.goto(stack.url + "/deploy")
    screenshot(page, "deploy")
    assert seen and not any(key in body for body in seen)

    # A form post without the session's CSRF token is refused.
    response = page.request.post(stack.url + f"/tasks/{task_id}/stop", form={"csrf_token": "forged"})
    assert response.status == 403
    copied = page.context.cookies()
    page.get_by_role("button", name="Log out").click()
    page.goto(stack.url + "/tasks")
    expect(page).to_have_url(f"{stack.url}/login?next=/tasks")
    # The session cookie copied before the logout opens nothing after it.
    elsewhere = page.context.browser.new_context()
    try:
        elsewhere.add_cookies(copied)
        other = elsewhere.new_page()
        other.goto(stack.url + "/config")
        expect(other).to_have_url(f"{stack.url}/login?next=/config")
    finally:
        elsewhere.close()


def test_safe_redeploy_and_rollback_from_the_deploy_page(page, stack, screenshot) -> None:
    """The orchestrator is not running: a safe redeploy through the page starts a release of it
    under the lifecycle, verified healthy; a rollback returns to the installed package."""
    stack = stack(with_ralph=False)
    orchestrator = stack.env.url("ralph-wiggum")
    try:
        page.goto(stack.url + "/deploy")
        page.get_by_role("button", name="Safe redeploy ralph-wiggum").click()
        expect(page.locator("#flash")).to_contain_text("Started `aistack deploy ralph-wiggum`")
        expect(page.get_by_role("button", name="Safe redeploy llama-cpp")).to_be_disabled()  # one job at a time
        # The log follows the job; the page reloads itself when it ends.
        expect(page.locator("#deploy-log .badge")).to_have_text("succeeded", timeout=120_000)
        expect(page.locator("#deploy-log pre")).to_contain_text("is healthy")
        expect(page.get_by_role("button", name="Safe redeploy llama-cpp")).to_be_enabled()
        row = page.locator('#deploy-services tr[data-service="ralph-wiggum"]')
        expect(row).to_contain_text("deploy: deployed")
        release = row.locator("td").first.inner_text()
        assert release not in ("—", "installed")
        assert httpx.get(orchestrator + "/health", timeout=5).status_code == 200
        screenshot(page, "deploy-done")

        page.goto(stack.url + "/")
        ralph_row = page.locator('[data-service="ralph-wiggum"]')
        expect(ralph_row).to_contain_text("deploy deployed")
        expect(ralph_row.locator("[data-health]")).not_to_have_text("down")

        page.goto(stack.url + "/deploy")
        page.get_by_role("button", name="Roll back ralph-wiggum").click()
        expect(page.locator("#deploy-log .badge")).to_have_text("succeeded", timeout=120_000)
        expect(row).to_contain_text("rollback:")
        expect(row.locator("td").first).to_have_text("installed")
        assert httpx.get(orchestrator + "/health", timeout=5).status_code == 200
    finally:
        import subprocess

        from support import AISTACK, child_env

        subprocess.run([*AISTACK, "down"], env=child_env(stack.env), capture_output=True, timeout=60)
