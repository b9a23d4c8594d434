"""Confinement: every path a request names must resolve inside one of the allowed roots."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("aistack.paths")


class PathNotAllowed(ValueError):
    """The path leaves the allowed roots (via `..`, an absolute path elsewhere, or a symlink)."""


def confine(path: str | Path, roots: list[Path] | tuple[Path, ...], *, base: Path | None = None) -> Path:
    """Resolve `path` (relative to `base`, default the first root) and return it only if the
    real location lies inside a root. Symlinks are resolved first, so a link pointing out of the
    root is refused even though its own name lies inside."""
    if not roots:
        raise PathNotAllowed("no allowed root is configured")
    raw = Path(str(path)).expanduser()
    if "\x00" in str(path):
        raise PathNotAllowed("path contains a NUL byte")
    candidate = raw if raw.is_absolute() else (base or roots[0]) / raw
    real = candidate.resolve(strict=False)
    for root in roots:
        real_root = root.expanduser().resolve(strict=False)
        if real == real_root or real.is_relative_to(real_root):
            return real
    shown = ", ".join(str(r) for r in roots)
    # Where a symlink leads is for the log, not for the client: it maps the machine's files.
    log.info("refused path %r: it resolves to %s, outside %s", str(path), real, shown)
    raise PathNotAllowed(f"{path} resolves outside the allowed root ({shown})")
