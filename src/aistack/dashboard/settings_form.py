"""The config editor's model: one row per `Settings` field, and a posted form turned into `.env` updates."""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from aistack.config import SECRET_FIELDS, Settings, allowed

CLEAR_PREFIX = "clear__"
_ALTERNATIVES = re.compile(r"^\^\(([\w.-]+(?:\|[\w.-]+)+)\)\$$")  # a pattern like ^(a|b|c)$


@dataclass
class Row:
    name: str  # the .env variable, upper-case
    kind: str  # int, bool, choice, path, text or secret
    type_label: str
    default: str
    description: str
    allowed: str
    value: str = ""  # what the input shows: the file's value (never a secret's)
    in_file: bool = False
    env_override: bool = False  # a real environment variable wins over the file
    choices: list[str] = field(default_factory=list)
    lo: int | None = None
    hi: int | None = None
    group: str = ""


def _inner(annotation: object) -> tuple[object, bool]:
    """(type without None, optional?)"""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def _shown_default(value: object) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return str(value)


def _group(name: str) -> str:
    for prefix, label in (
        ("llama_cpp", "llama-cpp"),
        ("aider", "aider-wrapper"),
        ("ralph", "ralph-wiggum"),
        ("dashboard", "dashboard"),
    ):
        if name.startswith(prefix):
            return label
    return "shared"


def rows(file_values: Mapping[str, str], submitted: Mapping[str, str] | None = None) -> list[Row]:
    """Every setting for the editor. `submitted` (a re-shown form) wins over the file's values."""
    out = []
    for name, info in Settings.model_fields.items():
        annotation, optional = _inner(info.annotation)
        env = name.upper()
        lo = hi = pattern = None
        for meta in info.metadata:
            lo = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else lo
            hi = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else hi
            pattern = getattr(meta, "pattern", None) or pattern
        if name in SECRET_FIELDS or annotation is SecretStr:
            kind, label, choices = "secret", "secret", []
        elif annotation is bool:
            kind, label, choices = "bool", "true / false", ["true", "false"]
        elif annotation is int:
            kind, label, choices = "int", "whole number", []
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            kind, label, choices = "choice", "one of", [m.value for m in annotation]
        elif annotation is Path:
            kind, label, choices = "path", "path", []
        elif pattern and (alternatives := _ALTERNATIVES.match(pattern)):
            kind, label, choices = "choice", "one of", alternatives.group(1).split("|")
        else:
            kind, label, choices = "text", "text", []
        if optional:
            label += " (optional)"
        in_file = env in file_values
        value = "" if kind == "secret" else file_values.get(env, "")
        if submitted is not None and kind != "secret":
            value = str(submitted.get(env, value))
        if choices and value and value not in choices:
            choices = [*choices, value]  # keep a hand-written value selectable as it is
        out.append(
            Row(
                name=env,
                kind=kind,
                type_label=label,
                default=_shown_default(info.get_default(call_default_factory=True)),
                description=info.description or "",
                # allowed() falls back to the description for free text: do not say it twice.
                allowed="" if (said := allowed(name).removeprefix("allowed: ")) == (info.description or "") else said,
                value=value,
                in_file=in_file,
                env_override=env in os.environ or name in os.environ,
                choices=choices,
                lo=lo,
                hi=hi,
                group=_group(name),
            )
        )
    return out


def grouped(items: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows by service, in the order `Settings` declares them (shared first)."""
    groups: dict[str, list[Row]] = {}
    for row in items:
        groups.setdefault(row.group, []).append(row)
    return list(groups.items())


def updates_from_form(form: Mapping[str, str], file_values: Mapping[str, str]) -> dict[str, str | None]:
    """The `.env` changes a posted editor form asks for.

    An input equal to the file's value changes nothing; an emptied one removes the line (back to
    the default). A secret's empty input means "keep"; its clear box removes it.
    """
    updates: dict[str, str | None] = {}
    for name in Settings.model_fields:
        env = name.upper()
        if env not in form and CLEAR_PREFIX + env not in form:
            continue
        submitted = str(form.get(env, "")).strip()
        old = file_values.get(env)
        if name in SECRET_FIELDS:
            if form.get(CLEAR_PREFIX + env):
                if old is not None:
                    updates[env] = None
            elif submitted:
                updates[env] = submitted
            continue
        if submitted == (old or ""):
            continue
        updates[env] = submitted if submitted else None
    return updates
