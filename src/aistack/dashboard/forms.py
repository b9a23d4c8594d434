"""What the dashboard's forms post, turned into the contracts the orchestrator takes; a bad field
raises `FormError` naming it, with the same bounds the `.env` has."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from aistack.client import RalphError
from aistack.config import allowed
from aistack.contracts import IterationLimits, TaskCreate, first_error

LIMIT_FIELDS = tuple(IterationLimits.model_fields)  # the settings the Iteration controls page edits
_BELOW_THE_CAP = ("ralph_max_iterations_simple", "ralph_max_iterations_default", "ralph_max_iterations_complex")
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


# The submit form's strategy selects: (field, label, (value, text) choices); none chosen = the .env's.
STRATEGY_CHOICES = (
    ("keep_best", "Keep the best checkpoint", (("true", "yes"), ("false", "no"))),
    ("feedback", "Check feedback", (("tail", "its output's end"), ("shaped", "its first failure"))),
    ("diversity", "Diversity on retry", (("true", "yes"), ("false", "no"))),
    ("context", "Context", (("carried", "carried"), ("fresh", "fresh"))),
    ("candidates", "Attempts per iteration", (("1", "1"), ("2", "2 at once"))),
    ("restart", "After a failed check", (("false", "repair the attempt"), ("true", "start again from the base"))),
)


class FormError(ValueError):
    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.field = field


def task_from_form(values: dict[str, str]) -> TaskCreate:
    """The submit form → TaskCreate."""

    def optional(name: str) -> str | None:
        return values.get(name, "").strip() or None

    body: dict[str, Any] = {
        "prompt": values.get("prompt", "").strip(),
        "backend": values.get("backend", "").strip() or "aider",
        "workspace": optional("workspace"),
        "check_command": optional("check_command"),
        "completion_promise": optional("completion_promise"),
        "require_approval": values.get("require_approval") == "true",
        "protected_paths": [path.strip() for path in values.get("protected_paths", "").split(",") if path.strip()],
    }
    if values.get("limit_mode") == "fixed":
        raw = values.get("max_iterations", "").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise FormError(f"max_iterations: a whole number of at least 1 is needed (got {raw!r})", "max_iterations")
        body["max_iterations"] = int(raw)
    chosen = {name: values.get(f"strategy_{name}", "").strip() for name, _, _ in STRATEGY_CHOICES}
    body["strategy"] = {name: int(value) if value.isdigit() else value for name, value in chosen.items() if value}  # candidates: a number
    if context_text := values.get("context", "").strip():
        try:
            context = json.loads(context_text)
        except ValueError as exc:
            raise FormError(f"context: not valid JSON ({exc.msg} at line {exc.lineno})", "context") from None  # type: ignore[attr-defined]
        if not isinstance(context, dict):
            raise FormError('context: a JSON object is needed, e.g. {"files": ["app.py"]}', "context")
        body["context"] = context
    try:
        return TaskCreate.model_validate(body)
    except ValidationError as exc:
        path, msg = first_error(exc.errors())
        strategy = path.startswith("strategy.")
        field = path.replace(".", "_") if strategy else path.split(".")[0]  # the form's input
        raise FormError(f"{path if strategy else field}: {msg}", field) from None


def limits_from_form(form: dict[str, Any]) -> IterationLimits:
    """The Iteration controls form → IterationLimits; each limit also at most the cap."""
    try:
        limits = IterationLimits.model_validate({name: form[name] for name in LIMIT_FIELDS})
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        what = allowed(name).removeprefix("allowed: ")
        raise FormError(f"{name.upper()}: {what} is needed (got {form[name]!r})", name) from None
    cap = limits.ralph_max_iterations_cap
    for name in _BELOW_THE_CAP:
        if getattr(limits, name) > cap:
            raise FormError(f"{name.upper()}={getattr(limits, name)} is above the cap RALPH_MAX_ITERATIONS_CAP={cap}", name)
    return limits


def limits_env(limits: IterationLimits) -> dict[str, str]:
    """The limits as `.env` lines."""
    return {name.upper(): str(value).lower() for name, value in limits.model_dump().items()}


def checked_task_id(task_id: str) -> str:
    """A task id as the orchestrator makes them; anything else (`..`, `%2F`...) could change the
    orchestrator URL the dashboard calls, so it is refused here."""
    if not _TASK_ID.fullmatch(task_id):
        raise RalphError(404, f"no task with id {task_id[:100]!r}", "task_id")
    return task_id


def safe_next(target: str) -> str:
    """Only same-site paths: no open redirect through ?next=."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
