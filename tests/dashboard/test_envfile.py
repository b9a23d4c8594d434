"""envfile: edits keep the rest of the file, bad values never reach the disk, writes are atomic."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aistack import envfile
from aistack.config import env_template, load_settings

ORIGINAL = """# my stack
RALPH_MAX_ITERATIONS_SIMPLE=10   
export LOG_LEVEL=info
MY_OWN_TOOL_SETTING="keep me"   # a comment after the value

# RALPH_MAX_ITERATIONS_CAP=100
DASHBOARD_PORT=8090
"""


@pytest.fixture
def env_path(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(ORIGINAL)
    return path


def test_update_changes_only_the_given_lines(env_path: Path) -> None:
    settings = envfile.update(env_path, {"RALPH_MAX_ITERATIONS_SIMPLE": "7", "log_level": "debug"})
    text = env_path.read_text()
    assert text == ORIGINAL.replace("RALPH_MAX_ITERATIONS_SIMPLE=10   ", "RALPH_MAX_ITERATIONS_SIMPLE=7").replace(
        "export LOG_LEVEL=info", "LOG_LEVEL=debug"
    )
    assert settings.ralph_max_iterations_simple == 7
    # The service reads the file the same way.
    loaded = load_settings(env_path)
    assert loaded.ralph_max_iterations_simple == 7 and loaded.log_level == "debug"
    assert envfile.read(env_path)["MY_OWN_TOOL_SETTING"] == "keep me"


def test_new_value_goes_below_its_commented_template_line(env_path: Path) -> None:
    envfile.update(env_path, {"RALPH_MAX_ITERATIONS_CAP": "60", "RALPH_STUCK_ITERATIONS": "5"})
    lines = env_path.read_text().splitlines()
    assert lines[lines.index("# RALPH_MAX_ITERATIONS_CAP=100") + 1] == "RALPH_MAX_ITERATIONS_CAP=60"
    assert lines[-1] == "RALPH_STUCK_ITERATIONS=5"


def test_none_removes_a_variable_and_duplicates_collapse(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("LOG_LEVEL=info\nDASHBOARD_PORT=1\nLOG_LEVEL=error\n")
    envfile.update(path, {"DASHBOARD_PORT": None, "LOG_LEVEL": "warning"})
    assert path.read_text() == "LOG_LEVEL=warning\n"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RALPH_MAX_ITERATIONS_DEFAULT", "0", "from 1 to 10000"),
        ("RALPH_MAX_ITERATIONS_DEFAULT", "many", "whole number"),
        ("RALPH_ADAPTIVE_ITERATIONS", "perhaps", "true or false"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error"),
        ("LLAMA_CPP_MODEL", "gpt-9", "qwen2.5-coder-1.5b"),
    ],
)
def test_invalid_value_leaves_file_byte_for_byte_unchanged(env_path: Path, key: str, value: str, message: str) -> None:
    before = env_path.read_bytes()
    mtime = env_path.stat().st_mtime_ns
    with pytest.raises(envfile.EnvFileError) as err:
        envfile.update(env_path, {key: value, "DASHBOARD_PORT": "9999"})
    assert key in str(err.value) and message in str(err.value)
    assert err.value.field == key.lower()
    assert env_path.read_bytes() == before and env_path.stat().st_mtime_ns == mtime
    assert not envfile.backup_path(env_path).exists()
    assert sorted(p.name for p in env_path.parent.iterdir()) == [".env"]  # no temp file left behind


def test_unknown_setting_is_refused(env_path: Path) -> None:
    with pytest.raises(envfile.EnvFileError, match="unknown setting NOT_A_SETTING"):
        envfile.update(env_path, {"NOT_A_SETTING": "1"})


def test_an_existing_bad_line_blocks_saving_other_values(env_path: Path) -> None:
    env_path.write_text(ORIGINAL + "RALPH_MAX_ITERATIONS_CAP=-3\n")
    before = env_path.read_bytes()
    with pytest.raises(envfile.EnvFileError, match="RALPH_MAX_ITERATIONS_CAP"):
        envfile.update(env_path, {"LOG_LEVEL": "debug"})
    assert env_path.read_bytes() == before


def test_backup_holds_the_previous_version_and_mode_is_kept(env_path: Path) -> None:
    os.chmod(env_path, 0o640)
    envfile.update(env_path, {"DASHBOARD_PORT": "8091"})
    assert envfile.backup_path(env_path).read_text() == ORIGINAL
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o640
    envfile.update(env_path, {"DASHBOARD_PORT": "8092"})
    assert "DASHBOARD_PORT=8091" in envfile.backup_path(env_path).read_text()


def test_missing_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "conf" / ".env"
    envfile.update(path, {"RALPH_WIGGUM_API_KEY": "s3cret value"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_settings(path).ralph_wiggum_api_key.get_secret_value() == "s3cret value"
    assert not envfile.backup_path(path).exists()


def test_secret_value_is_not_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    with pytest.raises(envfile.EnvFileError) as err:
        envfile.update(path, {"RALPH_WIGGUM_API_KEY": "hunter2", "RALPH_MAX_ITERATIONS_CAP": "0"})
    assert "hunter2" not in str(err.value)


def test_template_round_trip(tmp_path: Path) -> None:
    """Setting a value in the commented template `aistack config init` writes."""
    path = tmp_path / ".env"
    path.write_text(env_template())
    envfile.update(path, {"RALPH_MAX_ITERATIONS_COMPLEX": "42"})
    assert load_settings(path).ralph_max_iterations_complex == 42
    assert path.read_text().count("RALPH_MAX_ITERATIONS_COMPLEX=42\n") == 1
    assert len(path.read_text().splitlines()) == len(env_template().splitlines()) + 1


# Every character some reader takes for the end of a line (str.splitlines breaks at all but \x00,
# \t and \x7f), and other control characters.
LINE_ENDERS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "\t", "\x7f", "\x9f"]


@pytest.mark.parametrize("char", LINE_ENDERS, ids=[f"U+{ord(c):04X}" for c in LINE_ENDERS])
def test_line_breaks_and_control_characters_are_refused(env_path: Path, char: str) -> None:
    before = env_path.read_bytes()
    with pytest.raises(envfile.EnvFileError) as err:
        envfile.update(env_path, {"LOG_LEVEL": "debug", "LLAMA_CPP_CMAKE_ARGS": f"-DX=1{char}RALPH_COMMAND_BACKEND=touch pwned"})
    assert err.value.field == "llama_cpp_cmake_args" and f"U+{ord(char):04X}" in str(err.value)
    assert "LLAMA_CPP_CMAKE_ARGS" in str(err.value) and "control characters" in str(err.value)
    assert env_path.read_bytes() == before


def test_a_line_separator_already_in_the_file_stays_inside_its_value(tmp_path: Path) -> None:
    """A hand-written value holding U+2028 is one line: editing it, or another variable, never
    turns its tail into a variable of its own."""
    path = tmp_path / ".env"
    hidden = "LLAMA_CPP_CMAKE_ARGS='-DX=1\u2028RALPH_COMMAND_BACKEND=touch pwned'\n"
    path.write_text(hidden + "LOG_LEVEL=info\n", encoding="utf-8")
    envfile.update(path, {"LOG_LEVEL": "debug"})
    assert path.read_text(encoding="utf-8") == hidden + "LOG_LEVEL=debug\n"
    envfile.update(path, {"LLAMA_CPP_CMAKE_ARGS": "-DX=2"})
    assert path.read_text(encoding="utf-8") == "LLAMA_CPP_CMAKE_ARGS=-DX=2\nLOG_LEVEL=debug\n"
    assert "RALPH_COMMAND_BACKEND" not in envfile.read(path) and load_settings(path).ralph_command_backend is None


@hsettings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40))
@example("\\")  # a trailing backslash would escape a closing single quote
@example('it\'s \\ "quoted" # not a comment')
def test_any_single_line_value_reads_back_exactly(value: str) -> None:
    """Except `${NAME}`, which the .env reader expands on purpose (in every quoting style)."""
    assume("${" not in value)
    text = envfile.render("# header\n", {"RALPH_COMMAND_BACKEND": value})
    assert envfile.parse(text)["RALPH_COMMAND_BACKEND"] == value
