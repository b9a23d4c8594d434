"""Fuzzing a running service from its OpenAPI document with schemathesis, for every service's
suite: each operation with valid and with invalid input, then sequences of calls along the links
between operations (a task's id from `POST /tasks` into `GET /tasks/{task_id}`...). Every answer is
checked against the document, and none may be a 5xx. Bounded in examples, derandomized: a run
makes the same requests every time, so a failure in CI is a failure on a developer's machine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckFunction, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# No 5xx, and every answer as the document says: its status, media type, headers and body.
# (Not `negative_data_rejection`: it counts FastAPI taking the last of a repeated query parameter,
# and pydantic reading "0.0" as the number 0, as accepting invalid input; neither is a fault.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
REQUEST_TIMEOUT_SECONDS = 10.0


def _settings(examples: int, **more: Any) -> settings:
    # derandomize: the same requests on every run; deadline=None: a request's time is the
    # machine's business, not a failure; health checks are about slow or filtered generation,
    # which a request to a real process always is.
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    **more)  # fmt: skip


def load(url: str | None = None, *, document: dict | None = None, base_url: str, headers: dict[str, str] | None = None,
         exclude: str | None = None) -> BaseSchema:  # fmt: skip
    """The service's document (from its URL, or given), pointed at `base_url`, with `headers` on
    every request, without the operations whose path matches `exclude`."""
    schema = schemathesis.openapi.from_url(url, headers=headers) if url else schemathesis.openapi.from_dict(document or {})
    schema.config.update(base_url=base_url, headers=headers, request_timeout=REQUEST_TIMEOUT_SECONDS)
    return schema.exclude(path_regex=exclude) if exclude else schema


Calls = Counter[tuple[str, int]]  # requests made: (operation, status answered) → how many


def fuzz_operations(schema: BaseSchema, examples: int, valid: Callable[[Case], Case] | None = None,
                    checks: list[CheckFunction] = CHECKS) -> Calls:  # fmt: skip
    """Up to `examples` requests per operation with valid input, and as many with invalid input
    (where there is any to make). `valid` makes half of the valid cases valid in ways the document
    cannot say (a workspace that exists), so they get past the refusals to the work."""
    calls: Calls = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = operation.as_strategy(generation_mode=mode)
            if valid and mode is GenerationMode.POSITIVE:
                cases = cases | cases.map(valid)

            @given(case=cases)
            @_settings(examples)
            def request(case: Case) -> None:
                response = case.call()
                calls[case.operation.label, response.status_code] += 1
                case.validate_response(response, checks=checks)

            try:
                request()
            except Unsatisfiable:  # nothing in it can be made invalid: no parameters, or free text only
                assert mode is GenerationMode.NEGATIVE, operation.label
    return calls


def fuzz_links(schema: BaseSchema, scenarios: int, steps: int = 10) -> Calls:
    """`scenarios` sequences of up to `steps` calls that follow the links between operations
    (schemathesis infers them from the response models and path parameters)."""
    calls: Calls = Counter()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def call(self, case: Case, **kwargs: Any) -> Response:
            response = case.call(**kwargs)
            calls[case.operation.label, response.status_code] += 1
            return response

        def validate_response(self, response: Response, case: Case, additional_checks=None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Machine.run(settings=_settings(scenarios, stateful_step_count=steps))
    return calls


def documented_errors(document: dict) -> dict[str, dict[str, str]]:
    """`METHOD path` → {error status: the schema its JSON answer is documented with}."""
    found: dict[str, dict[str, str]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            found[f"{method.upper()} {path}"] = {
                status: answer["content"]["application/json"]["schema"].get("$ref", "").rsplit("/", 1)[-1]
                for status, answer in operation["responses"].items()
                if int(status) >= 400
            }
    return found
