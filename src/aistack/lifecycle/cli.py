"""`aistack preflight | up | down | status | logs | deploy | rollback` — merged into the top-level CLI."""

from __future__ import annotations

import shutil
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from aistack import health
from aistack import preflight as preflight_checks
from aistack.config import Settings
from aistack.lifecycle.deploy import Deployer, DeployResult, read_history
from aistack.lifecycle.releases import INSTALLED
from aistack.lifecycle.runtimes.podman import DEFAULT_BASE_IMAGE, PodmanError, PodmanRuntime, container_name, exists, inspect
from aistack.lifecycle.runtimes.process import ProcessRuntime, exclusive
from aistack.services import SERVICES, get, installed_source_root
from aistack.terminal import console, err_console, settings_or_exit

commands = typer.Typer()


class RuntimeName(str, Enum):
    process = "process"
    podman = "podman"


def _selected(names: list[str] | None) -> list[str]:
    """The named services in start order (all when none is named); an unknown name exits 2."""
    for name in names or []:
        if name not in SERVICES:
            err_console.print(f"✗ unknown service {name!r}: allowed: {', '.join(SERVICES)}")
            raise typer.Exit(2)
    return [name for name in SERVICES if not names or name in names]


def _in_build(rt: ProcessRuntime, name: str) -> bool:
    release = rt.releases.state(name).current
    return get(name).present_in(rt.releases.dir(name, release) or installed_source_root())


def _table(title: str, *columns: str) -> Table:
    """A compact table; the service and URL columns never wrap."""
    table = Table(title=title, box=box.SIMPLE)
    for column in columns:
        table.add_column(column, no_wrap=column in ("service", "URL", "release"))
    return table


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _print_log_tail(name: str, text: str) -> None:
    if text.strip():
        err_console.print(f"[bold]last lines of {name}'s log:[/bold]")
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)


ServicesArg = Annotated[list[str] | None, typer.Argument(help="Services (default: the whole stack).", show_default=False)]


@commands.command()
def preflight(
    services: ServicesArg = None,
    timeout: Annotated[float, typer.Option(help="Seconds each probe may take.")] = 2.0,
    wait: Annotated[float, typer.Option(help="Check until every one is ready or this many seconds pass (0: once).", min=0)] = 0.0,
) -> None:
    """Check services of the stack: reachable, ready, latency, and what to do if not."""
    cfg = settings_or_exit()
    results = preflight_checks.check_all(cfg, timeout, _selected(services), wait)
    table = _table("aistack pre-flight", "service", "URL", "reachable", "ready", "latency")
    yes_no = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"  # noqa: E731
    for r in results:
        latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-"
        ready = yes_no(r.ready) + (f" ({r.detail})" if r.reachable and not r.ready else "")
        table.add_row(r.service, r.url, yes_no(r.reachable), ready, latency)
    console.print(table)
    for r in results:
        if not r.ready:
            console.print(f"[bold]{r.service}[/bold] ({r.detail}): {r.advice}", highlight=False)
    raise typer.Exit(0 if all(r.ready for r in results) else 1)


@commands.command()
def up(
    services: ServicesArg = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for each /health (default per service).")] = None,
) -> None:
    """Start the stack in the background in dependency order and wait until each is healthy."""
    cfg = settings_or_exit()
    rt = ProcessRuntime(cfg)
    started: list[str] = []
    table = _table("aistack up", "service", "URL", "state", "pid", "release", "took")
    with exclusive(cfg):
        try:
            for name in _selected(services):
                row = _up_one(cfg, rt, name, started, timeout)
                table.add_row(name, cfg.url(name), *row)
        except KeyboardInterrupt:
            _fail_up(rt, "up", started, "interrupted", "")
    console.print(table)


def _up_one(cfg: Settings, rt: ProcessRuntime, name: str, started: list[str], timeout: float | None) -> tuple[str, ...]:
    """Start one service unless it runs already, and wait for its /health; the table row's cells."""
    if not _in_build(rt, name):
        return "[dim]skipped: not in this build[/dim]", "-", "-", "-"
    record = rt.running(name)
    if record is None and (why := rt.problem(name)):
        _fail_up(rt, name, started, why, "")
    release = rt.releases.state(name).current
    if not rt.releases.exists(name, release):
        err_console.print(f"⚠ release {release} of {name} is gone from disk; starting the installed package")
        release = INSTALLED
    t0 = time.monotonic()
    fresh = record is None
    with console.status(f"starting {name} (waiting for {cfg.url(name)}/health)…"):
        if record is None:
            record = rt.start(name, release)
            started.append(name)
        result = rt.wait_healthy(record, timeout or cfg.health_timeout(name))
    if not result.ready:
        _fail_up(rt, name, started, result.detail, rt.log_tail(name, 20, since=record.log_offset))
    state = f"[green]{result.state}[/green]" if result.state == "healthy" else f"[yellow]{result.state}[/yellow]"
    took = f"{time.monotonic() - t0:.1f} s" if fresh else "already running"
    return state, str(record.pid), record.release, took


def _fail_up(rt: ProcessRuntime, name: str, started: list[str], why: str, tail: str) -> None:
    err_console.print(f"[red]✗[/red] {name} did not start: {why}", highlight=False, soft_wrap=True)
    _print_log_tail(name, tail)
    for other in reversed(started):  # leave nothing half-started
        if rt.stop(other):
            err_console.print(f"  stopped {other}")
    raise typer.Exit(1)


@commands.command()
def down(
    services: ServicesArg = None,
    timeout: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
) -> None:
    """Stop the stack in reverse order: SIGTERM, then SIGKILL after --timeout."""
    cfg = settings_or_exit()
    rt = ProcessRuntime(cfg)
    with exclusive(cfg):
        for name in reversed(_selected(services)):
            record = rt.stop(name, timeout)
            if record:
                console.print(f"✓ stopped {name} (pid {record.pid}, up {_uptime(record.uptime())})")
            else:
                console.print(f"[dim]· {name} was not running[/dim]")


@commands.command()
def status() -> None:
    """Service, URL, health, pid, uptime and release of each service; exit 0 only if all are healthy."""
    cfg = settings_or_exit()
    rt = ProcessRuntime(cfg)
    table = _table("aistack status", "service", "URL", "health", "pid", "uptime", "release")
    all_healthy = True
    for name in SERVICES:
        if not _in_build(rt, name):
            table.add_row(name, cfg.url(name), "[dim]not in this build[/dim]", "-", "-", "-")
            continue
        record = rt.running(name, prune=False)
        result = health.check(cfg.health_url(name), api_key=cfg.api_key)
        all_healthy &= result.state == "healthy"
        colour = {"healthy": "green", "degraded": "yellow", "loading": "yellow"}.get(result.state, "red")
        where, uptime, release = "-", "-", rt.releases.state(name).current
        if record:
            where, uptime, release = str(record.pid), _uptime(record.uptime()), record.release
        elif (container := _container(name)) is not None:
            where, release = container
        table.add_row(
            name,
            cfg.url(name),
            f"[{colour}]{result.state}[/{colour}]" + ("" if result.state in ("healthy", "down") else f" ({result.detail})"),
            where,
            uptime,
            release,
        )
    console.print(table)
    raise typer.Exit(0 if all_healthy else 1)


def _container(name: str) -> tuple[str, str] | None:
    """(container name, release) of the service's podman container, when podman has one."""
    if not shutil.which("podman"):
        return None
    try:
        if not exists(container_name(name)):
            return None
        info = inspect(container_name(name))
    except (PodmanError, OSError, ValueError):
        return None
    labels = info.get("Config", {}).get("Labels") or {}
    return container_name(name), labels.get("aistack.release", "-")


@commands.command()
def logs(
    service: Annotated[str, typer.Argument(help="llama-cpp, aider-wrapper, ralph-wiggum or dashboard.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many of the last lines to print first.")] = 50,
) -> None:
    """Print a service's log (the background process's output)."""
    _selected([service])
    rt = ProcessRuntime(settings_or_exit())
    path = rt.log_file(service)
    if not path.exists():
        err_console.print(f"✗ no log for {service} yet ({path})")
        raise typer.Exit(1)
    with path.open("rb") as f:
        text = f.read().decode(errors="replace")
        if lines:
            print("\n".join(text.splitlines()[-lines:]), flush=True)
        while follow:
            chunk = f.read()
            if chunk:
                print(chunk.decode(errors="replace"), end="", flush=True)
            else:
                time.sleep(0.3)


def _report(result: DeployResult) -> None:
    if result.ok:
        console.print(f"[green]✓[/green] {result.message} ({result.duration_s:.1f} s)", highlight=False, soft_wrap=True)
        return
    err_console.print(
        f"[red]✗[/red] {result.action} of {result.service} {result.outcome}: {result.message}", highlight=False, soft_wrap=True
    )
    if result.serving is None:
        err_console.print(f"  {result.service} is not running", highlight=False)
    _print_log_tail(f"release {result.version}", result.log_tail)
    raise typer.Exit(1)


@commands.command()
def deploy(
    service: Annotated[str | None, typer.Argument(help="The service to deploy.", show_default=False)] = None,
    runtime: Annotated[RuntimeName, typer.Option(help="process or podman.")] = RuntimeName.process,
    source: Annotated[Path | None, typer.Option(help="Project tree to release (default: the one this command runs from).")] = None,
    health_timeout: Annotated[float | None, typer.Option(help="Seconds the new release has to answer /health 200.")] = None,
    history: Annotated[bool, typer.Option("--history", help="List past deploys and exit.")] = False,
    base_image: Annotated[str, typer.Option(help="podman: the image the Containerfile builds FROM.")] = DEFAULT_BASE_IMAGE,
) -> None:
    """Deploy SERVICE from the source tree: validate, build, back up, start, verify, or roll back."""
    cfg = settings_or_exit()
    if history:
        _print_history(cfg, service)
        return
    if service is None:
        err_console.print("✗ missing SERVICE: allowed: " + ", ".join(SERVICES))
        raise typer.Exit(2)
    _selected([service])
    with exclusive(cfg):
        result = _deployer(cfg, runtime, base_image).deploy(service, source, health_timeout)
    _report(result)


@commands.command()
def rollback(
    service: Annotated[str, typer.Argument(help="The service to return to its previous release.")],
    runtime: Annotated[RuntimeName, typer.Option(help="process or podman.")] = RuntimeName.process,
) -> None:
    """Return SERVICE to the release it ran before the current one."""
    cfg = settings_or_exit()
    _selected([service])
    with exclusive(cfg):
        result = _deployer(cfg, runtime).rollback(service)
    _report(result)


def _deployer(cfg: Settings, runtime: RuntimeName, base_image: str = DEFAULT_BASE_IMAGE) -> Deployer:
    def say(line: str) -> None:
        console.print(f"· {line}", highlight=False)

    chosen = PodmanRuntime(cfg, say, base_image) if runtime is RuntimeName.podman else ProcessRuntime(cfg, say)
    return Deployer(cfg, chosen, say)


def _print_history(cfg: Settings, service: str | None) -> None:
    """Two lines per deploy: what happened, then why (a table column would be too narrow for it)."""
    entries = read_history(cfg, service)
    if not entries:
        console.print("no deploys yet")
        return
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("started_at", 0)))
        colour = "green" if e.get("ok") else "red"
        console.print(
            f"{when}  [bold]{e.get('service')}[/bold]  {e.get('runtime', 'process')} {e.get('action')} "
            f"[{colour}]{e.get('outcome')}[/{colour}]  "
            f"release {e.get('version') or '-'} (before: {e.get('previous') or '-'}, now serving: {e.get('serving') or 'nothing'})  "
            f"{e.get('duration_s', 0):.1f} s",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    {e.get('message', '')}", highlight=False, soft_wrap=True, style="dim")
