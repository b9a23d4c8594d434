"""How a service that died at start is described to the person who started it (pure)."""

from __future__ import annotations

from aistack.lifecycle.runtimes import exit_reason
from aistack.procgroup import describe_exit


def test_a_signal_is_named_not_numbered():
    assert describe_exit(-11) == "was killed by SIGSEGV (signal 11)"
    assert describe_exit(-9) == "was killed by SIGKILL (signal 9)"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-77) == "was killed by signal 77"


def test_the_services_own_last_fatal_line_comes_first():
    log = ("loading…\n✗ something earlier\nllama_model_loader: …\n"
           "✗ llama-server was killed by SIGSEGV (signal 11) while loading the model; …\n")  # fmt: skip
    assert exit_reason(139, log) == (
        "llama-server was killed by SIGSEGV (signal 11) while loading the model; … (the process exited with status 139)"
    )
    assert exit_reason(-9, "no fatal line here") == "the process was killed by SIGKILL (signal 9)"
    assert exit_reason(None, "", "the container") == "the container ended"
