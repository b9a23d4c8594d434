"""Confinement: every path a request names must resolve inside one of the allowed roots; and where
an agent program the stack installs is found (`find_program`)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger("aistack.paths")

# Linux's limits (NAME_MAX, PATH_MAX): a longer path fails every system call with ENAMETOOLONG.
NAME_MAX = 255
PATH_MAX = 4095


class PathNotAllowed(ValueError):
    """The path leaves the allowed roots (via `..`, an absolute path elsewhere, or a symlink), or
    no file system could hold it (a NUL, text that is not Unicode, a name that is too long)."""


def confine(path: str | Path, roots: list[Path] | tuple[Path, ...], *, base: Path | None = None) -> Path:
    """Resolve `path` (relative to `base`, default the first root) and return it only if the
    real location lies inside a root. Symlinks are resolved first, so a link pointing out of the
    root is refused even though its own name lies inside."""
    if not roots:
        raise PathNotAllowed("no allowed root is configured")
    if "\x00" in str(path):  # before anything hands it to the OS (expanduser reads $HOME or the passwd file)
        raise PathNotAllowed("path contains a NUL byte")
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise PathNotAllowed("path is not valid Unicode text (it holds a lone surrogate)") from None
    try:
        raw = Path(str(path)).expanduser()
    except RuntimeError:  # `~name` of no user on this machine
        raise PathNotAllowed(f"{str(path).split('/')[0]} is no user's home directory on this machine") from None
    candidate = raw if raw.is_absolute() else (base or roots[0]) / raw
    real = candidate.resolve(strict=False)
    _check_length(real)
    for root in roots:
        real_root = root.expanduser().resolve(strict=False)
        if real == real_root or real.is_relative_to(real_root):
            return real
    shown = ", ".join(str(r) for r in roots)
    # Where a symlink leads is for the log, not for the client: it maps the machine's files.
    log.info("refused path %r: it resolves to %s, outside %s", str(path), real, shown)
    raise PathNotAllowed(f"{path} resolves outside the allowed root ({shown})")


def _check_length(real: Path) -> None:
    longest = max((len(os.fsencode(part)) for part in real.parts), default=0)
    if longest > NAME_MAX:
        raise PathNotAllowed(f"path has a name of {longest} bytes; at most {NAME_MAX} are allowed")
    if len(os.fsencode(real)) > PATH_MAX:
        raise PathNotAllowed(f"path is {len(os.fsencode(real))} bytes long; at most {PATH_MAX} are allowed")


def find_program(configured: Path | None, venv: str, name: str) -> Path | None:
    """`configured` if set (even when missing: the user asked for that one), else the stack's own
    (`.venv/<venv>/bin/<name>`, installed by scripts/setup.sh beside the stack's environment),
    else `name` on PATH."""
    if configured:
        return configured
    own = Path(sys.prefix) / venv / "bin" / name
    if own.is_file() and os.access(own, os.X_OK):
        return own
    found = shutil.which(name)
    return Path(found) if found else None
