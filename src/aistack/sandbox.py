"""Where agents and checks run: under resource limits always, inside bubblewrap when it works.

An agent's process (the command backend's program, aider) and a check command run code nobody
reviewed. Each runs with per-process limits (CPU seconds, heap, processes of the user, file size),
and, when `bwrap` (Debian's `bubblewrap`) works on this machine, in a sandbox of its own:

- the whole file system read-only, the task's worktree (and its home) writable;
- the data dir (the database, every task's worktree, home and prompt, aider's run folders), the
  `.env` and the git credentials file hidden, then only this task's own places shown again;
- its git metadata read-only (the `.git` file, the repository's git dir): a writable git config
  or hook would run the agent's code in the service's own, unconfined git commands. aider, which
  runs no commands of the model's and stages the files it creates, gets them writable;
- a private /tmp, its own process, IPC and host-name namespaces, and death with its parent.

The network is shared: agents reach the LLM endpoint (and, like the service, everything else).
RALPH_SANDBOX chooses: `auto` (bwrap when it works, else limits only), `bwrap` (the service does
not start without it), `off`. Whether bwrap works is asked once per process, by running it.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aistack.config import ConfigError, Settings
from aistack.contracts import Isolation
from aistack.envfile import backup_path

PROBE_TIMEOUT_SECONDS = 10.0
PRLIMIT = "/usr/bin/prlimit"  # util-linux, Essential on Debian: present wherever setup.sh runs
MIB = 2**20
# What every sandbox is; the probe runs exactly this, so a machine where it fails is known at start.
BWRAP_BASE = (
    "--unshare-all", "--share-net", "--die-with-parent",
    "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
)  # fmt: skip
BWRAP_HIDES = (
    "worktree writable, the rest read-only; data dir, .env and other tasks hidden; git metadata read-only "
    "(writable for aider); private /tmp and pids"
)


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits (0: none), set before the agent's own program runs."""

    cpu_seconds: int
    memory_mb: int
    processes: int
    file_size_mb: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.ralph_agent_cpu_seconds, settings.ralph_agent_memory_mb, settings.ralph_agent_max_processes,
                   settings.ralph_agent_file_size_mb)  # fmt: skip

    def rlimits(self) -> list[tuple[int, int]]:
        """(RLIMIT_*, value) for each limit that is set, never above the service's own hard limit.
        Memory is RLIMIT_DATA (writable private memory), not RLIMIT_AS: runtimes such as V8 and
        Go reserve far more address space than they use, and would not start under an AS limit."""
        wanted = [
            (resource.RLIMIT_CPU, self.cpu_seconds),
            (resource.RLIMIT_DATA, self.memory_mb * MIB),
            (resource.RLIMIT_NPROC, self.processes),  # counts all the user's processes; root is exempt
            (resource.RLIMIT_FSIZE, self.file_size_mb * MIB),
        ]
        limits = []
        for which, value in wanted:
            hard = resource.getrlimit(which)[1]
            if value:
                limits.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        return limits

    @functools.cached_property
    def prefix(self) -> tuple[str, ...]:
        """util-linux's `prlimit` before the command, which sets the limits and execs it. Not a
        `preexec_fn`: that would make every start a full fork of the service (~8 ms, not ~2)."""
        options = {resource.RLIMIT_CPU: "--cpu", resource.RLIMIT_DATA: "--data", resource.RLIMIT_NPROC: "--nproc",
                   resource.RLIMIT_FSIZE: "--fsize"}  # fmt: skip
        limits = self.rlimits()
        return (PRLIMIT, *(f"{options[which]}={value}" for which, value in limits), "--") if limits else ()

    def shown(self) -> dict[str, int]:
        return {"cpu_seconds": self.cpu_seconds, "memory_mb": self.memory_mb, "processes": self.processes,
                "file_size_mb": self.file_size_mb}  # fmt: skip


@dataclass(frozen=True)
class Jail:
    """How one agent or check process starts: the bwrap command before its own (or nothing), and its limits."""

    prefix: tuple[str, ...]
    limits: Limits

    @property
    def confines(self) -> bool:
        return bool(self.prefix or self.limits.prefix)

    def argv(self, argv: list[str]) -> list[str]:
        return [*self.prefix, *self.limits.prefix, *argv]  # the limits inside bwrap: they bind the agent, not the jailer


class Sandbox:
    """One per service: the isolation chosen at its start, and the places agents must not see."""

    def __init__(self, settings: Settings, env_file: Path):
        self.limits = Limits.of(settings)
        self.hidden_dirs = (settings.aistack_data_dir,)
        credentials = (settings.ralph_git_credentials_file,) if settings.ralph_git_credentials_file else ()
        self.hidden_files = (env_file, backup_path(env_file), *credentials)  # the stack's secrets
        self.bwrap, self.reason = _choose(settings.ralph_sandbox)
        # the service's PATH is the agent's too: what lies on it under the private /tmp (a
        # checkout's venv) is shown again, read-only
        self.path_dirs = [installation(Path(d)) for d in os.environ.get("PATH", "").split(os.pathsep) if _under_tmp(d)]

    def isolation(self) -> Isolation:
        return Isolation(sandbox="bwrap" if self.bwrap else "none", reason=self.reason, network_isolated=False, limits=self.limits.shown())

    def jail(self, workdir: Path, *, command: str | None = None, writable: Iterable[Path] = (), readable: Iterable[Path] = (),
             git_writable: bool = False) -> Jail:  # fmt: skip
        """The jail of a process working in `workdir` (writable), which may also write `writable`,
        read `readable` and run `command`'s program, wherever they lie."""
        if self.bwrap is None:
            return Jail((), self.limits)
        args = [self.bwrap, *BWRAP_BASE]
        for folder in self.hidden_dirs:
            if folder.is_dir():
                args += ["--tmpfs", str(folder.resolve())]
        binds = [(workdir, True), *((path, True) for path in writable)]
        binds += [(path, git_writable) for path in _git_dirs(workdir)]
        dot_git = workdir / ".git"
        if dot_git.is_file():  # a worktree's pointer to its git dir: never to be redirected
            binds.append((dot_git, False))
        binds += [(path, False) for path in [*readable, *_program(command), *self.path_dirs]]
        for path, rw in binds:
            if path.exists():
                real = str(path.resolve())
                args += ["--bind" if rw else "--ro-bind", real, real]
        for file in self.hidden_files:  # last: wherever they lie, they read as empty
            if file.is_file():
                args += ["--ro-bind", "/dev/null", str(file.resolve())]
        args += ["--chdir", str(workdir.resolve()), "--"]
        return Jail(tuple(args), self.limits)


def _choose(mode: str) -> tuple[str | None, str]:
    """(bwrap's path or None, why): RALPH_SANDBOX against what this machine allows."""
    if mode == "off":
        return None, "RALPH_SANDBOX=off"
    problem = bwrap_problem()
    if problem is None:
        return shutil.which("bwrap"), BWRAP_HIDES
    if mode == "bwrap":
        raise ConfigError(f"RALPH_SANDBOX=bwrap, but {problem}")
    return None, problem


@functools.cache
def bwrap_problem() -> str | None:
    """Why bwrap cannot sandbox agents here, or None: it is run once, as every sandbox is."""
    path = shutil.which("bwrap")
    if path is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    try:
        done = subprocess.run([path, *BWRAP_BASE, "--", "true"], capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_SECONDS)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"bwrap cannot run here: {lines[-1] if lines else f'exit status {done.returncode}'}"
    return None


def _git_dirs(workdir: Path) -> list[Path]:
    """The git dir and common git dir of the repository at `workdir`, read as git reads them
    (gitrepository-layout: a `.git` directory, or a `gitdir:` file; `commondir` in a worktree's)."""
    dot_git = workdir / ".git"
    try:
        pointer = dot_git.read_text(errors="replace") if dot_git.is_file() else None
        git_dir = (workdir / pointer.removeprefix("gitdir:").strip()) if pointer is not None else dot_git
        common = git_dir / "commondir"
        dirs = [git_dir, git_dir / common.read_text(errors="replace").strip() if common.is_file() else git_dir]
    except OSError:
        return []
    return [path for path in dict.fromkeys(path.resolve() for path in dirs) if path.is_dir()]


def _program(command: str | None) -> list[Path]:
    """The program a command names by its absolute path (it may lie in a hidden place, such as /tmp)."""
    first = (command or "").split(maxsplit=1)[:1]
    return [installation(Path(first[0]))] if first and first[0].startswith("/") and Path(first[0]).is_file() else []


def _under_tmp(folder: str) -> bool:
    return folder.startswith("/") and Path(folder).is_dir() and Path(folder).resolve().is_relative_to("/tmp")


def installation(program: Path) -> Path:
    """What must be readable for `program` (or a `bin` folder) to run: its virtualenv when it is a
    venv's (the interpreter and the packages beside it, e.g. aider in a checkout under /tmp), else itself."""
    bin_dir = program if program.is_dir() else program.parent
    venv = bin_dir.parent
    return venv if bin_dir.name == "bin" and (venv / "pyvenv.cfg").is_file() else program
