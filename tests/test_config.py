"""The one configuration: precedence, validation messages, host fallback, confinement."""

from __future__ import annotations

import socket
import subprocess

import pytest

from aistack import config
from aistack.config import ENV_FILE_VARIABLE, ConfigError, load_settings, resolve_host
from aistack.paths import PathNotAllowed, confine
from support import AISTACK, child_env, new_stack_env


def test_precedence_environment_over_file_over_defaults(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("RALPH_MAX_ITERATIONS_SIMPLE=7\nRALPH_MAX_ITERATIONS_COMPLEX=70\n")
    monkeypatch.setenv("RALPH_MAX_ITERATIONS_COMPLEX", "77")
    s = load_settings(env)
    assert (s.ralph_max_iterations_simple, s.ralph_max_iterations_complex, s.ralph_max_iterations_default) == (7, 77, 20)


def test_env_file_variable_and_explicit_file(tmp_path, monkeypatch):
    a, b = tmp_path / "a.env", tmp_path / "b.env"
    a.write_text("RALPH_WIGGUM_PORT=1111\n")
    b.write_text("RALPH_WIGGUM_PORT=2222\n")
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(a))
    assert load_settings().ralph_wiggum_port == 1111
    assert load_settings(b).ralph_wiggum_port == 2222
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.env")


@pytest.mark.parametrize(
    "line, words",
    [
        ("RALPH_STUCK_ITERATIONS=-1", "RALPH_STUCK_ITERATIONS='-1': allowed: a whole number from 0 to 1000"),
        ("LLAMA_CPP_PORT=http", "from 1 to 65535"),
        ("RALPH_ADAPTIVE_ITERATIONS=maybe", "true or false"),
        ("LLAMA_CPP_MODEL=gpt-5", "qwen2.5-coder-1.5b"),
        ("LOG_LEVEL=loud", "debug, info, warning, error"),
        ("RALPH_SANDBOX=docker", "auto, bwrap, off"),
        ("RALPH_AGENT_ENV_PASSTHROUGH=HTTPS_PROXY,RALPH_WIGGUM_API_KEY", "never the stack's own"),
        ("RALPH_AGENT_ENV_PASSTHROUGH=aistack_env_file", "never the stack's own"),
        ("RALPH_AGENT_ENV_PASSTHROUGH=MY VAR", "Comma-separated names"),
        ("LLAMA_CPP_URLS=http://a:8080,ftp://b:21", "http(s)://host:port base URLs"),
        ("LLAMA_CPP_URLS=http://a:99999", "http(s)://host:port base URLs"),
        ("LLAMA_CPP_URLS=a:8080", "http(s)://host:port base URLs"),
        ("LLAMA_CPP_URLS=http://a:8080/?x=1", "http(s)://host:port base URLs"),
        ("RALPH_BACKEND_MAX_ITERATIONS=opencode=0", "backend=N,… with N from 1 to 10000"),
        ("RALPH_BACKEND_MAX_ITERATIONS=opencode", "backend=N,… with N from 1 to 10000"),
        ("RALPH_BACKEND_TIMEOUT_SECONDS=aider=86401", "backend=seconds,… from 1 to 86400"),
        ("RALPH_WIGGUM_HOST=localhost:8098", "Host name or IP address"),
        ("LLAMA_CPP_HOST=http://127.0.0.1", "Host name or IP address"),
        ("DASHBOARD_HOST=[127.0.0.1]", "Host name or IP address"),
        ("AIDER_WRAPPER_HOST=a b", "Host name or IP address"),
    ],
)
def test_bad_value_is_one_line_naming_variable_value_and_range(tmp_path, line, words):
    env = tmp_path / ".env"
    env.write_text(line + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    message = str(err.value)
    assert "\n" not in message and line.split("=")[0] in message and words in message


def test_llm_urls_are_normalised_and_default_to_llama_cpp(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LLAMA_CPP_HOST=127.0.0.1\nLLAMA_CPP_PORT=8123\n")
    assert load_settings(env).llm_urls == ("http://127.0.0.1:8123",)  # unset: the one llama-cpp, as before
    env.write_text("LLAMA_CPP_URLS= http://a:8080/ ,https://b.example/v1,http://a:8080,http://[::1]:11434/v1/\n")
    assert load_settings(env).llm_urls == ("http://a:8080", "https://b.example", "http://[::1]:11434")


def test_a_password_in_an_llm_url_is_refused_and_not_shown(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LLAMA_CPP_URLS=http://me:hunter2@a:8080\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    assert "LLAMA_CPP_URLS" in str(err.value) and "without credentials" in str(err.value) and "hunter2" not in str(err.value)


def test_container_names_fall_back_to_loopback_only_when_unresolvable(monkeypatch):
    """No DNS is asked: the resolver is the test's, so the answer does not depend on the machine."""
    networked: set[str] = set()

    def getaddrinfo(host, *args, **kwargs):
        if host not in networked:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.88.0.5", 0))]

    monkeypatch.setattr(config.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(config, "_RESOLVED", set())
    assert resolve_host("llama-cpp") == "127.0.0.1"  # no container network
    assert resolve_host("gpu-box.internal") == "gpu-box.internal"  # anything else is kept as given
    assert load_settings(None).url("aider-wrapper") == "http://127.0.0.1:8099"
    networked.add("aider-wrapper")  # on a container network the name is kept, and remembered
    assert load_settings(None).url("aider-wrapper") == "http://aider-wrapper:8099"
    networked.clear()
    assert resolve_host("aider-wrapper") == "aider-wrapper"


def test_confine(tmp_path):
    root = tmp_path / "root"
    (root / "repo").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert confine("repo", [root]) == (root / "repo").resolve()
    assert confine(str(root / "repo"), [root]) == (root / "repo").resolve()
    assert confine(".", [root]) == root.resolve()
    for bad in ("../outside", str(tmp_path / "outside"), "link", "repo/../../outside", "/etc"):
        with pytest.raises(PathNotAllowed):
            confine(bad, [root])
    # what no file system takes is refused before the OS sees it (`~` is expanded after the NUL check)
    for bad, words in [
        ("~\x00", "NUL"),
        ("repo\ud800", "Unicode"),
        ("x" * 256, "at most 255"),
        ("/".join(["x" * 250] * 17), "at most 4095"),
        ("~no-such-user-here/repo", "no user's home directory"),  # was a RuntimeError, a 500
    ]:
        with pytest.raises(PathNotAllowed, match=words):
            confine(bad, [root])
    assert confine("x" * 255 + "/..", [root]) == root.resolve()  # what counts is the path resolved
    assert confine(str(tmp_path / "outside" / "x"), [root, tmp_path / "outside"]) == (tmp_path / "outside" / "x").resolve()


@pytest.mark.parametrize("service", ["ralph-wiggum", "aider-wrapper", "dashboard"])
def test_an_api_key_no_header_can_carry_stops_the_service_with_one_line(tmp_path, service):
    """A key is sent in a header (visible ASCII): one that is not was accepted, and the service
    then crashed at start, building its first client. The key itself is never shown."""
    env = new_stack_env(tmp_path).set(RALPH_WIGGUM_API_KEY="schlüssel-ünd-mehr")
    proc = subprocess.run([*AISTACK, "serve", service], env=child_env(env), capture_output=True, text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
    assert "RALPH_WIGGUM_API_KEY" in lines[0] and "printable ASCII" in lines[0] and "schl" not in lines[0]


def test_per_backend_settings_read_as_mappings(tmp_path):
    env = tmp_path / ".env"
    env.write_text("RALPH_BACKEND_MAX_ITERATIONS= opencode=5, qwen-code=8\nRALPH_BACKEND_TIMEOUT_SECONDS=aider=60\n")
    settings = load_settings(env)
    assert (settings.backend_max_iterations("opencode"), settings.backend_max_iterations("qwen-code")) == (5, 8)
    assert settings.backend_max_iterations("aider") is None
    assert (settings.iteration_timeout("aider"), settings.iteration_timeout("opencode")) == (60, settings.ralph_iteration_timeout_seconds)
