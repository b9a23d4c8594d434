"""`aistack systemd install|uninstall`: the stack as systemd units on one host, started at boot.

One unit per service, `aistack-NAME.service`, running the same `aistack serve NAME` as `aistack up`,
and `aistack.target`, which wants them all (`systemctl enable --now aistack.target`). A unit
`Requires=` and comes `After=` the units of the services it calls (services.py). The services do not
speak sd_notify, so a unit is started only once its service answers /health 200: its
`ExecStartPost=` is `aistack preflight NAME --wait`, and the next unit starts against a ready
dependency. The `.env` is both the units' `EnvironmentFile=` and the services' own file.

Each file written starts with `MARKER`: install replaces only files that carry it, and uninstall
removes exactly those, with the links `systemctl enable` made to them.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from aistack import services
from aistack.config import ENV_FILE_VARIABLE, Settings, resolve_env_file
from aistack.files import atomic_write
from aistack.terminal import console, fail, settings_or_exit

MARKER = "# Written by `aistack systemd install`; `aistack systemd uninstall` removes it."
TARGET = "aistack.target"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def unit_name(service: str) -> str:
    return f"aistack-{service}.service"


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "systemd" / "user"


def _literal(text: str) -> str:
    """`text` as a unit file gives it: `%` starts a specifier there."""
    return text.replace("%", "%%")


def _word(text: str) -> str:
    """One word of `Environment=` or a command line: quoted where it has blanks or quotes."""
    if re.search(r'[\s"\'\\;]', text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _command(python: Path, *args: str) -> str:
    """A command line: `$` there would expand a variable."""
    return " ".join(_word(_literal(word).replace("$", "$$")) for word in (str(python), "-m", "aistack", *args))


def service_unit(settings: Settings, name: str, python: Path, env_file: Path, run_as: str | None) -> str:
    """The unit of one service. `run_as`: the account of a system unit (a user unit runs as its user)."""
    needs = " ".join(unit_name(dep) for dep in services.get(name).depends_on)
    ready = settings.health_timeout(name)  # its own start plus its wait for what it calls
    network = "network-online.target" if run_as else ""  # the user manager has no such target
    lines = [
        MARKER,
        "[Unit]",
        f"Description=aistack {name}",
        f"PartOf={TARGET}",
        *([f"Requires={needs}"] if needs else []),
        *([f"Wants={network}"] if network else []),
        *([f"After={' '.join(filter(None, (needs, network)))}"] if needs or network else []),
        "",
        "[Service]",
        "Type=exec",
        *([f"User={_literal(run_as)}"] if run_as else []),
        f"Environment={_word(_literal(f'{ENV_FILE_VARIABLE}={env_file}'))}",
        f"EnvironmentFile=-{_literal(str(env_file))}",  # a path, taken as it is: never quoted
        f"ExecStart={_command(python, 'serve', name)}",
        f"ExecStartPost={_command(python, 'preflight', name, '--wait', f'{ready:g}')}",
        f"TimeoutStartSec={ready + 30:g}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillMode=mixed",  # SIGTERM to the service alone: it ends its own children (llama-server, aider)
        "TimeoutStopSec=30",
        "",
    ]
    return "\n".join(lines)


def target_unit(system: bool) -> str:
    wants = " ".join(unit_name(name) for name in services.NAMES)
    return "\n".join([
        MARKER,
        "[Unit]",
        "Description=aistack: the whole stack",
        f"Wants={wants}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ])  # fmt: skip


def units(settings: Settings, python: Path, env_file: Path, run_as: str | None) -> dict[str, str]:
    """File name → text of every unit: one per service and the target."""
    written = {unit_name(name): service_unit(settings, name, python, env_file, run_as) for name in services.NAMES}
    return {**written, TARGET: target_unit(system=run_as is not None)}


def ours(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and path.read_text().startswith(MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def install(unit_dir: Path, texts: dict[str, str]) -> list[Path]:
    """Write the units; a file of the same name that is not ours is left alone and refused first."""
    paths = [unit_dir / name for name in texts]
    foreign = [str(p) for p in paths if (p.exists() or p.is_symlink()) and not ours(p)]
    if foreign:
        raise FileExistsError(f"not written by aistack, left as they are: {', '.join(foreign)}")
    unit_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        atomic_write(path, texts[path.name], mode=0o644)  # no secret inside: the key stays in the .env
    return paths


def uninstall(unit_dir: Path) -> list[Path]:
    """Remove the units install wrote here, and the links `systemctl enable` made to them."""
    names = {unit_name(name) for name in services.NAMES} | {TARGET}
    written = [(unit_dir / name).resolve() for name in sorted(names) if ours(unit_dir / name)]
    links = [
        link for wants in unit_dir.glob("*.target.*") if wants.is_dir()
        for link in wants.iterdir() if link.is_symlink() and link.resolve() in written
    ]  # fmt: skip
    for path in links + written:
        path.unlink()
    for wants in {link.parent for link in links}:
        if not any(wants.iterdir()):
            wants.rmdir()
    return written + links


# --- the commands ----------------------------------------------------------------------------

commands = typer.Typer()
systemd_app = typer.Typer(help="Run the stack as systemd units on this host, started at boot.", no_args_is_help=True)
commands.add_typer(systemd_app, name="systemd")

UserOption = Annotated[bool, typer.Option("--user", help="Units of your user's systemd (no root; start at your login).")]
DirOption = Annotated[
    Path | None, typer.Option("--unit-dir", help="Where the units go (default: /etc/systemd/system, or ~/.config/systemd/user).")
]


def _unit_dir(user: bool, unit_dir: Path | None) -> Path:
    return unit_dir or (user_unit_dir() if user else SYSTEM_UNIT_DIR)


def _systemctl(user: bool, *args: str) -> None:
    """Tell a running systemd; where none runs (a container, a test), say so and go on."""
    if not Path("/run/systemd/system").is_dir():
        console.print(f"  systemd is not running here: run `systemctl {'--user ' if user else ''}{' '.join(args)}` where it is")
        return
    subprocess.run(["systemctl", *(["--user"] if user else []), *args], check=False)


@systemd_app.command("install")
def install_command(
    user: UserOption = False,
    unit_dir: DirOption = None,
    run_as: Annotated[str | None, typer.Option(help="System units: the account they run as (default: you, or sudo's caller).")] = None,
) -> None:
    """Write a unit per service and aistack.target; `systemctl enable --now aistack.target` starts them."""
    settings = settings_or_exit()
    account = None if user else (run_as or os.environ.get("SUDO_USER") or getpass.getuser())
    env_file = resolve_env_file().absolute()
    directory = _unit_dir(user, unit_dir)
    try:
        written = install(directory, units(settings, Path(sys.executable), env_file, account))
    except OSError as exc:
        fail(f"cannot write the units in {directory}: {exc}")
    for path in written:
        console.print(f"✓ wrote {path}", highlight=False)
    if unit_dir is None:
        _systemctl(user, "daemon-reload")
    console.print(f"start them now and at every boot: systemctl {'--user ' if user else ''}enable --now {TARGET}", highlight=False)


@systemd_app.command("uninstall")
def uninstall_command(user: UserOption = False, unit_dir: DirOption = None) -> None:
    """Stop and remove the units `aistack systemd install` wrote (any other file is left alone)."""
    directory = _unit_dir(user, unit_dir)
    if unit_dir is None:
        _systemctl(user, "disable", "--now", TARGET)
    try:
        removed = uninstall(directory)
    except OSError as exc:
        fail(f"cannot remove the units in {directory}: {exc}")
    for path in removed:
        console.print(f"✓ removed {path}", highlight=False)
    if not removed:
        console.print(f"no aistack units in {directory}", highlight=False)
    if unit_dir is None:
        _systemctl(user, "daemon-reload")
