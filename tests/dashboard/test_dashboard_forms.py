"""The dashboard's pure logic: form → TaskCreate / limits / .env updates, health classification."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from aistack.config import Settings
from aistack.dashboard.forms import FormError, limits_from_form, safe_next, task_from_form
from aistack.dashboard.settings_form import grouped, rows, updates_from_form


def _run(coro):
    """asyncio.run on a fresh thread, so it works whatever loop this thread may hold."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_task_form_maps_every_field() -> None:
    task = task_from_form(
        {
            "prompt": " Fix the bug ",
            "backend": "command",
            "workspace": "repo",
            "check_command": "pytest -q",
            "completion_promise": "DONE",
            "limit_mode": "fixed",
            "max_iterations": "4",
            "require_approval": "true",
            "context": '{"files": ["app.py"]}',
            "strategy_keep_best": "true",
            "strategy_feedback": "shaped",
            "strategy_diversity": "",  # .env default
            "strategy_candidates": "2",
            "strategy_restart": "true",
            "protected_paths": " tests/**, ,conftest.py ",
        }
    )
    assert task.model_dump() == {
        "prompt": "Fix the bug",
        "backend": "command",
        "max_iterations": 4,
        "require_approval": True,
        "workspace": "repo",
        "repository": None,  # the form offers local workspaces; a remote is for the API and CLI
        "ref": None,
        "check_command": "pytest -q",
        "completion_promise": "DONE",
        "context": {"files": ["app.py"]},
        "strategy": {"keep_best": True, "feedback": "shaped", "diversity": None, "context": None, "candidates": 2, "restart": True},
        "protected_paths": ["tests/**", "conftest.py"],
    }
    with pytest.raises(FormError, match="strategy.feedback: Input should be 'tail' or 'shaped'") as refused:
        task_from_form({"prompt": "p", "strategy_feedback": "all"})
    assert refused.value.field == "strategy_feedback"  # the select to mark


def test_task_form_auto_limit_ignores_the_number_and_blank_fields_are_unset() -> None:
    task = task_from_form({"prompt": "x", "limit_mode": "auto", "max_iterations": "9", "workspace": "  "})
    assert task.max_iterations is None and task.workspace is None and task.backend == "aider"
    assert task.require_approval is False and task.context == {}


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"prompt": ""}, "prompt", "at least 1 character"),
        ({"prompt": "x", "limit_mode": "fixed", "max_iterations": "0"}, "max_iterations", "at least 1"),
        ({"prompt": "x", "limit_mode": "fixed", "max_iterations": "two"}, "max_iterations", "'two'"),
        ({"prompt": "x", "context": "{nope"}, "context", "not valid JSON"),
        ({"prompt": "x", "context": "[1]"}, "context", "JSON object"),
        ({"prompt": "fix\x00it"}, "prompt", "prompt: must not contain a NUL"),  # our words, as the API says them
        ({"prompt": "x", "protected_paths": "tests, ../up"}, "protected_paths", "protected_paths: must be a path or glob inside"),
    ],
)
def test_task_form_errors_name_the_field(values: dict, field: str, text: str) -> None:
    with pytest.raises(FormError) as err:
        task_from_form(values)
    assert err.value.field == field and text in str(err.value)
    assert "Value error" not in str(err.value)


def _limits(**changes: object) -> dict:
    form = {
        "ralph_max_iterations_simple": "5",
        "ralph_max_iterations_default": "10",
        "ralph_max_iterations_complex": "30",
        "ralph_max_iterations_cap": "40",
        "ralph_adaptive_iterations": True,
    }
    return form | changes


def test_limits_form_valid() -> None:
    limits = limits_from_form(_limits())
    assert limits.ralph_max_iterations_complex == 30 and limits.ralph_adaptive_iterations is True


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"ralph_max_iterations_simple": "0"}, "ralph_max_iterations_simple", "from 1 to 10000"),
        ({"ralph_max_iterations_cap": "10001"}, "ralph_max_iterations_cap", "from 1 to 10000"),
        ({"ralph_max_iterations_default": ""}, "ralph_max_iterations_default", "got ''"),
        ({"ralph_max_iterations_complex": "41"}, "ralph_max_iterations_complex", "above the cap"),
    ],
)
def test_limits_form_errors(changes: dict, field: str, text: str) -> None:
    with pytest.raises(FormError) as err:
        limits_from_form(_limits(**changes))
    assert err.value.field == field and text in str(err.value)


def test_editor_rows_cover_every_setting_and_never_carry_a_secret() -> None:
    file_values = {"RALPH_WIGGUM_API_KEY": "hunter2", "LOG_LEVEL": "debug", "RALPH_ADAPTIVE_ITERATIONS": "1"}
    table = rows(file_values)
    assert [r.name for r in table] == [name.upper() for name in Settings.model_fields]
    by_name = {r.name: r for r in table}
    assert by_name["RALPH_WIGGUM_API_KEY"].kind == "secret" and by_name["RALPH_WIGGUM_API_KEY"].value == ""
    assert by_name["RALPH_WIGGUM_API_KEY"].in_file
    assert by_name["LOG_LEVEL"].choices == ["debug", "info", "warning", "error"] and by_name["LOG_LEVEL"].value == "debug"
    assert by_name["RALPH_ADAPTIVE_ITERATIONS"].choices == ["true", "false", "1"]  # hand-written value kept
    assert by_name["RALPH_MAX_ITERATIONS_CAP"].kind == "int" and by_name["RALPH_MAX_ITERATIONS_CAP"].hi == 10000
    assert by_name["RALPH_MAX_ITERATIONS_CAP"].default == "100"
    assert "hunter2" not in repr(table)
    assert [g for g, _ in grouped(table)] == ["shared", "llama-cpp", "aider-wrapper", "ralph-wiggum", "dashboard"]


def test_editor_updates_only_what_changed() -> None:
    file_values = {"LOG_LEVEL": "debug", "DASHBOARD_PORT": "8090", "RALPH_WIGGUM_API_KEY": "old"}
    form = {name.upper(): file_values.get(name.upper(), "") for name in Settings.model_fields}
    form["RALPH_WIGGUM_API_KEY"] = ""  # a secret is never shown, so its input comes back empty
    assert updates_from_form(form, file_values) == {}  # the form as shown: nothing to write
    form |= {"LOG_LEVEL": "error", "DASHBOARD_PORT": "", "RALPH_STUCK_ITERATIONS": " 4 ", "RALPH_WIGGUM_API_KEY": ""}
    assert updates_from_form(form, file_values) == {"LOG_LEVEL": "error", "DASHBOARD_PORT": None, "RALPH_STUCK_ITERATIONS": "4"}
    assert updates_from_form(form | {"RALPH_WIGGUM_API_KEY": "new"}, file_values)["RALPH_WIGGUM_API_KEY"] == "new"
    assert updates_from_form(form | {"clear__RALPH_WIGGUM_API_KEY": "1"}, file_values)["RALPH_WIGGUM_API_KEY"] is None


@pytest.mark.parametrize(
    ("target", "expected"), [("/tasks?x=1", "/tasks?x=1"), ("//evil.example", "/"), ("https://evil.example", "/"), ("/\\evil", "/")]
)
def test_login_redirect_stays_on_site(target: str, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize("task_id", ["..", "a/b", "x?y=1", "", "a" * 101, "id%2F"])
def test_task_ids_cannot_change_the_orchestrator_path(task_id: str) -> None:
    from aistack.client import RalphError
    from aistack.dashboard.forms import checked_task_id

    with pytest.raises(RalphError) as err:
        checked_task_id(task_id)
    assert err.value.status == 404


def test_task_path_of_a_real_id() -> None:
    from aistack.dashboard.forms import checked_task_id

    assert checked_task_id("3f2a9c0e11ab") == "3f2a9c0e11ab"
