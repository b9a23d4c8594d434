"""The dashboard's Content-Security-Policy in Chromium against real services: every page, and a
task's event stream, arrives with it and works under it without a refusal; and Chromium enforces
it: an inline script, an event handler and a style attribute slipped into a page do nothing, and
the console says so, which fails any browser test (conftest's `page`)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from test_dashboard_plots import finished, submit

from aistack.dashboard.security import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.browser

PAGES = ["/", "/tasks", "/tasks/new", "/stats", "/controls", "/learning", "/config", "/deploy"]
SLIPPED_IN = """<script>window.ran = true;</script>
<p id="styled" style="color: rgb(255, 0, 0)">styled</p>
<button id="handler" onclick="window.clicked = true">click</button>"""


def test_every_page_and_the_event_stream_arrive_with_the_policy_and_work_under_it(page, stack) -> None:
    stack = stack()
    done = submit(stack, "Write a note", "test -s notes.txt", 3)
    assert finished(stack, done)["status"] == "completed"
    for path in [*PAGES, f"/tasks/{done}"]:
        response = page.goto(stack.url + path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
    expect(page.locator("#iterations-plot canvas")).to_be_visible()  # the plot of the finished task, drawn

    waiting = submit(stack, "Write a note after approval", "test -s notes.txt", 3, require_approval=True)
    with page.expect_response(lambda r: r.url.endswith(f"/tasks/{waiting}/events")) as stream:
        page.goto(f"{stack.url}/tasks/{waiting}")
    assert stream.value.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    expect(page.locator("#stream-state")).to_have_text("live")  # EventSource is allowed: connect-src 'self'
    assert page.errors == []


def test_chromium_refuses_what_the_policy_forbids_and_the_console_says_so(page, stack) -> None:
    stack = stack(with_ralph=False)

    def slip_in(route):  # the dashboard's own answer, headers and all, with inline markup added
        response = route.fetch()
        route.fulfill(response=response, body=response.text().replace("</main>", SLIPPED_IN + "</main>"))

    page.route(stack.url + "/learning", slip_in)
    page.goto(stack.url + "/learning")
    page.locator("#handler").click()
    assert page.evaluate("[window.ran, window.clicked]") == [None, None]
    assert page.locator("#styled").evaluate("e => getComputedStyle(e).color") != "rgb(255, 0, 0)"
    refused = [e for e in page.errors if "Content Security Policy" in e]
    # Errors the fixture does not let pass: not "Failed to load resource" (conftest's `unexpected`).
    assert len(refused) == 3 and not any(e.startswith("Failed to load resource") for e in refused), page.errors
    page.errors.clear()  # seen: the fixture would fail the test on each of them
