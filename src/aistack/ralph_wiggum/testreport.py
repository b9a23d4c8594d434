"""What a test run's output says, read from pytest's and unittest's own formats: how far the run
got (`Score`, comparable between two runs of the same check) and its first failure cut to the
project's own code (`first_failure`). Pure: text in, plain data out. Output in any other format
reads as unknown, and the loop falls back to what it did before (the end of the output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A frame in code the task cannot change: an installed package, the standard library, the importer.
_LIBRARY = re.compile(r"site-packages|dist-packages|/lib/python\d[\d.]*/|^<frozen |^<string>")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# pytest: `===== 3 failed, 1 passed in 0.15s =====` (or the same without the rules, with -q)
_PYTEST_SUMMARY = re.compile(r"^(?:=+ )?((?:\d+ [a-z]+(?:, )?)+|no tests ran) in [\d.]+s\b", re.MULTILINE)
_PYTEST_COUNT = re.compile(r"(\d+) ([a-z]+)")
_PYTEST_SECTION = re.compile(r"^=+ (FAILURES|ERRORS) =+$", re.MULTILINE)
_PYTEST_RULE = re.compile(r"^=+ .* =+$|^!+ .* !+$")
_PYTEST_BLOCK = re.compile(r"^_{3,} (.+?) _{3,}$")
_PYTEST_SEPARATOR = re.compile(r"^(?:_ ){5,}_?\s*$")
_PYTEST_CALL = re.compile(r"^(\S[^:\s]*|<frozen [^>]+>):(\d+): in \S+$")  # a short frame's first line
_PYTEST_WHERE = re.compile(r"^(\S[^:\s]*):(\d+): ?\w*$")  # a long frame's last line
_COLLECTION = re.compile(r"errors? during collection|^_+ ERROR collecting ", re.MULTILINE)
# unittest: `Ran 3 tests in 0.001s`, then `OK` or `FAILED (failures=1, errors=1)`
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$", re.MULTILINE)
_UNITTEST_VERDICT = re.compile(r"^(OK|FAILED)(?: \(([^)]*)\))?$", re.MULTILINE)
_UNITTEST_BLOCK = re.compile(r"^={40,}\n(FAIL|ERROR): (.+)\n-{40,}\n", re.MULTILINE)
_TRACEBACK_FRAME = re.compile(r'^  File "([^"]+)", line (\d+)')


@dataclass(frozen=True)
class Score:
    """How far one run of a check got. Unknown parts are None and are not compared."""

    passed: bool  # the check exited 0
    ran_tests: bool | None  # False: it failed before any test ran (import, syntax or collection error, timeout)
    failing: int | None  # failed + errors
    passing: int | None
    first_failure: tuple[str, int] | None  # (test, line in its file) where the first failure happened

    def describe(self) -> str:
        if self.passed:
            return "the check passed"
        if self.ran_tests is False:
            return "no test ran (an error before the tests)"
        if self.failing is None:
            return "the check failed"
        return f"{self.failing} failing, {self.passing} passing"


def score(exit_code: int | None, output: str | None) -> Score:
    """How far a check got, from its exit code (None: it timed out) and its output."""
    if exit_code == 0:
        return Score(True, True, 0, None, None)
    text = _ANSI.sub("", output or "")
    if exit_code is None:
        return Score(False, False, None, None, None)
    failure = _first_block(text)
    own = next((frame for frame in failure.frames if frame.own and frame.line), None) if failure else None
    where = (failure.name, own.line) if failure and own and own.line else None
    if summaries := _PYTEST_SUMMARY.findall(text):
        counts = {kind: int(n) for n, kind in _PYTEST_COUNT.findall(summaries[-1])}
        failing = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        collected = not _COLLECTION.search(text) and summaries[-1] != "no tests ran"
        return Score(False, collected, failing, counts.get("passed", 0), where)
    if (ran := _UNITTEST_RAN.search(text)) and (verdict := _UNITTEST_VERDICT.search(text, ran.end())):
        counts = {key.strip(): int(n) for key, n in re.findall(r"(\w+)=(\d+)", verdict.group(2) or "")}
        failing = counts.get("failures", 0) + counts.get("errors", 0)
        total = int(ran.group(1))
        return Score(False, total > 0, failing, total - failing - counts.get("skipped", 0), where)
    if "Traceback (most recent call last):" in text and "Ran " not in text:  # a module that did not import
        return Score(False, False, None, None, where)
    return Score(False, None, None, None, None)


def is_worse(new: Score, old: Score) -> bool:
    """`new` got less far than `old`: it no longer passes, fails before any test runs, has more
    failing tests or fewer passing ones, or fails earlier in the same test."""
    if new.passed or old.passed:
        return old.passed and not new.passed
    if new.ran_tests is not None and old.ran_tests is not None and new.ran_tests != old.ran_tests:
        return old.ran_tests
    if new.failing is None or old.failing is None:
        return False
    if new.failing != old.failing:
        return new.failing > old.failing
    if new.passing != old.passing and new.passing is not None and old.passing is not None:
        return new.passing < old.passing
    if new.first_failure and old.first_failure and new.first_failure[0] == old.first_failure[0]:
        return new.first_failure[1] < old.first_failure[1]
    return False


@dataclass(frozen=True)
class _Frame:
    path: str | None
    line: int | None
    lines: tuple[str, ...]

    @property
    def own(self) -> bool:
        return self.path is None or not _LIBRARY.search(self.path)


@dataclass(frozen=True)
class _Block:
    name: str  # the test, as the runner names it
    frames: tuple[_Frame, ...]
    tail: tuple[str, ...]  # what follows the frames: the exception (unittest, plain tracebacks)


def first_failure(output: str | None) -> str | None:
    """The first failing test (or the error before any test ran): its name, the assertion and
    the source lines it went through, with the frames of libraries and the standard library
    left out. None when the output is in no format read here."""
    text = _ANSI.sub("", output or "")
    block = _first_block(text)
    if block is None:
        return None
    kept: list[str] = [block.name]
    dropped = 0
    for frame in block.frames:
        if frame.own:
            kept.extend(frame.lines)
            continue
        dropped += 1
        if frame is block.frames[-1]:  # the exception was raised in a library: its message still counts
            kept.extend(line for line in frame.lines if line.startswith("E "))
    kept.extend(block.tail)
    if dropped:
        kept.append(f"({dropped} frame{'s' if dropped != 1 else ''} in libraries and the standard library left out)")
    return "\n".join(line.rstrip() for line in kept).strip()


def _first_block(text: str) -> _Block | None:
    if section := _PYTEST_SECTION.search(text):
        return _pytest_block(text[section.end() :].splitlines())
    if block := _UNITTEST_BLOCK.search(text):
        body = text[block.end() :].split("\n" + "=" * 70, 1)[0].split("\n" + "-" * 70, 1)[0]
        return _traceback_block(f"{block.group(1)}: {block.group(2)}", body.splitlines())
    if (start := text.rfind("Traceback (most recent call last):")) >= 0:
        return _traceback_block("the check failed with", text[start:].splitlines()[1:])
    return None


def _pytest_block(lines: list[str]) -> _Block | None:
    """The first block of pytest's FAILURES or ERRORS section, split into its frames."""
    start = next((i for i, line in enumerate(lines) if _PYTEST_BLOCK.match(line)), None)
    if start is None:
        return None
    name = _PYTEST_BLOCK.match(lines[start]).group(1)  # type: ignore[union-attr]
    frames: list[_Frame] = []
    path: str | None = None
    number: int | None = None
    current: list[str] = []

    def close() -> None:
        nonlocal path, number, current
        if any(line.strip() for line in current):
            frames.append(_Frame(path, number, tuple(current)))
        path, number, current = None, None, []

    for line in lines[start + 1 :]:
        if _PYTEST_BLOCK.match(line) or _PYTEST_RULE.match(line):
            break
        if _PYTEST_SEPARATOR.match(line):
            close()
        elif call := _PYTEST_CALL.match(line):
            close()
            path, number, current = call.group(1), int(call.group(2)), [line]
        elif where := _PYTEST_WHERE.match(line):
            current.append(line)
            path, number = where.group(1), int(where.group(2))
            close()
        else:
            current.append(line)
    close()
    return _Block(name, tuple(frames), ())


def _traceback_block(name: str, lines: list[str]) -> _Block:
    """A Python traceback (`File "…", line N, in f` frames, then the exception) as frames."""
    frames: list[_Frame] = []
    tail: list[str] = []
    for line in lines:
        if match := _TRACEBACK_FRAME.match(line):
            frames.append(_Frame(match.group(1), int(match.group(2)), (line,)))
        elif line.startswith("    ") and frames and not tail:
            frames[-1] = _Frame(frames[-1].path, frames[-1].line, (*frames[-1].lines, line))
        elif line.strip() and not line.startswith("Traceback"):
            tail.append(line)
    return _Block(name, tuple(frames), tuple(tail))
