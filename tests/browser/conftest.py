"""Browser-test fixtures: headless Debian Chromium driven by Playwright, and a real stack of
`aistack serve ralph-wiggum` + `aistack serve dashboard` whose loop uses the `command` backend
(a shell script), so no language model is needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from support import REPO_ROOT, ServiceProcess, StackEnv, make_git_repo, missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"

# The "agent": appends one line per iteration to notes.txt in the task's worktree.
AGENT_SCRIPT = """#!/bin/sh
echo "iteration $AISTACK_ITERATION: $(cat "$AISTACK_PROMPT_FILE")" >> notes.txt
echo "appended line $AISTACK_ITERATION to notes.txt"
"""


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running on this thread while it is
    # open, which would break later tests that call asyncio.run().
    if not CHROMIUM.exists():
        missing("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    try:
        import playwright.sync_api as playwright_api
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def unexpected(errors: list[str]) -> list[str]:
    """The console errors no test expects: all but a resource answered with an error status (a
    form's 422, a wrong key's 401, a stream cut by a redeploy), which the tests check themselves.
    What the dashboard's Content-Security-Policy refused is among them ("… violates the following
    Content Security Policy directive …")."""
    return [e for e in errors if not e.startswith("Failed to load resource")]


@pytest.fixture
def page(browser):
    """A fresh page whose console errors and uncaught script errors are kept in `page.errors`;
    the test fails on any `unexpected` one, a violation of the Content-Security-Policy first."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(f"uncaught: {error}"))
    yield page
    context.close()
    assert unexpected(page.errors) == [], f"the browser's console reported errors: {page.errors}"


@pytest.fixture
def screenshot():
    """`screenshot(page, name)` saves the whole page under test-artifacts/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@dataclass
class Stack:
    env: StackEnv
    ralph: ServiceProcess | None
    dashboard: ServiceProcess
    repo: Path

    @property
    def url(self) -> str:
        return self.dashboard.url


@pytest.fixture
def stack(stack_env: StackEnv, services, tmp_path: Path):
    """Starts the orchestrator and the dashboard on one isolated .env; returns a `start(**env)`
    that accepts extra .env values (e.g. an API key) before the services start."""

    def start(with_ralph: bool = True, **values: object) -> Stack:
        script = tmp_path / "agent.sh"
        script.write_text(AGENT_SCRIPT)
        script.chmod(0o755)
        repo = make_git_repo(stack_env.workspace_root / "repo")
        stack_env.set(RALPH_COMMAND_BACKEND=script, RALPH_MAX_CONCURRENT_TASKS=2, **values)
        ralph = services("ralph-wiggum", stack_env) if with_ralph else None
        dashboard = services("dashboard", stack_env)
        return Stack(stack_env, ralph, dashboard, repo)

    return start
