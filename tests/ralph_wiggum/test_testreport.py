"""Reading a check's output (`testreport`): real pytest and unittest runs on small projects in a
temporary directory, so the parser is held to what those tools print today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aistack.ralph_wiggum import testreport
from aistack.ralph_wiggum.testreport import Score

CALC = """\
import json


def parse(text):
    return json.loads(text)


def add(a, b):
    return a - b
"""
TESTS = """\
from calc import add, parse


def test_parse():
    assert parse("[1]") == [1]
    assert parse("{") == {}


def test_add():
    assert add(1, 1) == 2


def test_ok():
    assert True
"""
# A HumanEval-style check: one test, many assertions; how far it gets is the line it fails on.
CHECK = """\
from solution import candidate


def test_check():
    assert candidate(1) == 1
    assert candidate(2) == 4
    assert candidate(3) == 9
"""


def run(project: Path, files: dict[str, str], *command: str) -> tuple[int, str]:
    for name, text in files.items():
        (project / name).write_text(text)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the plugins of this venv would only slow each run down
    done = subprocess.run([sys.executable, "-B", "-m", *command], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def pytest_run(project: Path, files: dict[str, str], *options: str) -> tuple[int, str]:
    return run(project, files, "pytest", "-p", "no:cacheprovider", *options)


@pytest.mark.parametrize("options", [(), ("-q",)])
def test_pytests_first_failure_is_the_test_its_assertion_and_the_projects_own_frames(tmp_path, options):
    code, output = pytest_run(tmp_path, {"calc.py": CALC, "test_calc.py": TESTS}, *options)
    assert code == 1 and "json/decoder.py" in output  # pytest shows the standard library's frames
    assert testreport.score(code, output) == Score(False, True, 2, 1, ("test_parse", 6))
    shaped = testreport.first_failure(output)
    assert shaped is not None and shaped.startswith("test_parse")
    assert '>       assert parse("{") == {}' in shaped  # the assertion, with the lines before it
    assert "calc.py:5: in parse" in shaped and "return json.loads(text)" in shaped  # the project's frame it went through
    assert "JSONDecodeError: Expecting property name" in shaped  # the exception, though raised in the library
    assert "decoder.py" not in shaped and "def raw_decode" not in shaped  # the library's frames are left out
    assert "frames in libraries and the standard library left out" in shaped
    assert "test_add" not in shaped  # only the first failure
    assert len(shaped) < len(output) / 2


def test_an_import_error_is_an_earlier_failure_than_a_failing_test(tmp_path):
    code, output = pytest_run(tmp_path, {"calc.py": "def parse(:\n", "test_calc.py": TESTS})
    broken = testreport.score(code, output)
    assert broken.ran_tests is False and broken.passing == 0
    shaped = testreport.first_failure(output)
    assert shaped is not None and "ERROR collecting test_calc.py" in shaped and "SyntaxError" in shaped
    assert "from calc import add, parse" in shaped and "_pytest" not in shaped and "importlib" not in shaped
    code, output = pytest_run(tmp_path, {"calc.py": CALC})
    failing = testreport.score(code, output)
    assert testreport.is_worse(broken, failing) and not testreport.is_worse(failing, broken)


def test_unittest_counts_and_first_failure(tmp_path):
    tests = (
        "import unittest\nfrom calc import add, parse\n\n\nclass T(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(1, 1), 2)\n\n"
        "    def test_parse(self):\n        self.assertEqual(parse('{'), {})\n\n"
        "    def test_ok(self):\n        self.assertTrue(True)\n"
    )
    code, output = run(tmp_path, {"calc.py": CALC, "test_u.py": tests}, "unittest", "test_u")
    score = testreport.score(code, output)
    assert (score.passed, score.ran_tests, score.failing, score.passing) == (False, True, 2, 1)
    shaped = testreport.first_failure(output)
    assert shaped is not None and shaped.splitlines()[0].startswith(("FAIL: test_add", "ERROR: test_parse"))
    assert "lib/python" not in shaped and str(tmp_path) in shaped


def test_failing_later_in_the_same_test_is_further(tmp_path):
    code, output = pytest_run(tmp_path, {"solution.py": "def candidate(x):\n    return x\n", "test_check.py": CHECK})
    early = testreport.score(code, output)
    code, output = pytest_run(tmp_path, {"solution.py": "def candidate(x):\n    return x * x if x < 3 else 0\n"})
    late = testreport.score(code, output)
    assert (early.failing, early.passing, late.failing, late.passing) == (1, 0, 1, 0)  # the counts alone cannot tell
    assert early.first_failure == ("test_check", 6) and late.first_failure == ("test_check", 7)
    assert testreport.is_worse(early, late) and not testreport.is_worse(late, early)
    code, output = pytest_run(tmp_path, {"solution.py": "def candidate(x):\n    return x * x\n"})
    assert code == 0 and testreport.is_worse(late, testreport.score(code, output))


@pytest.mark.parametrize(
    "new, old, worse",
    [
        (Score(False, True, 1, 0, None), Score(True, True, 0, None, None), True),  # no longer passes
        (Score(True, True, 0, None, None), Score(False, True, 1, 0, None), False),
        (Score(False, None, None, None, None), Score(False, True, 3, 0, None), False),  # unknown format: not compared
        (Score(False, False, None, None, None), Score(False, True, 3, 0, None), True),  # timed out / failed before the tests
        (Score(False, True, 2, 5, None), Score(False, True, 1, 6, None), True),  # more failing
        (Score(False, True, 1, 5, None), Score(False, True, 1, 6, None), True),  # fewer passing
        (Score(False, True, 1, 6, ("t", 9)), Score(False, True, 1, 6, ("u", 12)), False),  # other tests: lines not compared
        (Score(False, True, 1, 6, ("t", 9)), Score(False, True, 1, 6, ("t", 9)), False),  # the same
    ],
)
def test_is_worse(new, old, worse):
    assert testreport.is_worse(new, old) is worse


def test_output_in_no_known_format_is_not_shaped():
    assert testreport.first_failure("make: *** [all] Error 2") is None
    assert testreport.score(2, "make: *** [all] Error 2") == Score(False, None, None, None, None)
    assert testreport.score(None, "").ran_tests is False  # a check that timed out got nowhere
