"""One iteration of aider in a workspace, and the bookkeeping around runs: one run per workspace,
at most AIDER_MAX_PARALLEL at once (more wait their turn), cancellable by run id."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aistack.aider_wrapper import gitstate, invocation
from aistack.aider_wrapper.errors import find_fatal
from aistack.aider_wrapper.runner import Ending, run_process, tokens_spent
from aistack.config import Settings
from aistack.contracts import ExecuteResult, Sampling, TokenCounts
from aistack.gitcli import GitError
from aistack.llm_routing import Router
from aistack.sandbox import Sandbox, installation

log = logging.getLogger("aistack.aider_wrapper")

VERSION_TIMEOUT_SECONDS = 60
KEEP_RUN_FOLDERS = 50
# aider's repo map keeps a tags cache in the repository root; the wrapper removes one a run made.
TAGS_CACHE_GLOB = ".aider.tags.cache.v*"


@dataclass(frozen=True)
class AiderCheck:
    """Whether aider can run, found once at start."""

    path: Path | None
    version: str | None
    problem: str | None  # why not, for people

    @property
    def available(self) -> bool:
        return self.problem is None


def check_aider(settings: Settings, files: invocation.AiderFiles) -> AiderCheck:
    """`aider --version` once (blocking: call it in a thread)."""
    path = invocation.find_aider(settings)
    if path is None:
        return AiderCheck(None, None, "aider is not installed: run ./scripts/setup.sh or set AIDER_BIN")
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_SECONDS,
            env=invocation.aider_env(settings, files), stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except FileNotFoundError:
        return AiderCheck(path, None, f"aider not found at {path}: run ./scripts/setup.sh or set AIDER_BIN")
    except PermissionError:
        return AiderCheck(path, None, f"{path} is not executable")
    except subprocess.TimeoutExpired:
        return AiderCheck(path, None, f"`{path} --version` did not answer within {VERSION_TIMEOUT_SECONDS} s")
    except OSError as exc:
        return AiderCheck(path, None, f"cannot run {path}: {exc.strerror or exc}")
    version = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not version.startswith("aider"):
        return AiderCheck(path, None, f"`{path} --version` failed (exit {done.returncode}): {version or done.stderr.strip()[:200]}")
    return AiderCheck(path, version, None)


class Busy(Exception):
    """The workspace (or run id) already has a run."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class ActiveRun:
    run_id: str
    workspace: Path
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class RunRegistry:
    def __init__(self, max_parallel: int) -> None:
        self.slots = asyncio.Semaphore(max_parallel)
        self._by_workspace: dict[Path, ActiveRun] = {}
        self._by_id: dict[str, ActiveRun] = {}

    def claim(self, workspace: Path, run_id: str | None) -> ActiveRun:
        if workspace in self._by_workspace:
            raise Busy(f"workspace {workspace} already has a run ({self._by_workspace[workspace].run_id})", "workspace")
        if run_id and run_id in self._by_id:
            raise Busy(f"run {run_id} is already running", "run_id")
        run = ActiveRun(run_id or uuid.uuid4().hex, workspace)
        self._by_workspace[workspace] = run
        self._by_id[run.run_id] = run
        return run

    def release(self, run: ActiveRun) -> None:
        self._by_workspace.pop(run.workspace, None)
        if self._by_id.get(run.run_id) is run:
            del self._by_id[run.run_id]
        run.finished.set()

    def get(self, run_id: str) -> ActiveRun | None:
        return self._by_id.get(run_id)


@dataclass(frozen=True)
class Job:
    """A validated request: every path resolved and confined already."""

    prompt: str
    workspace: Path  # top of a git work tree
    files: list[Path]
    read_only_files: list[Path]
    timeout_seconds: int
    task: str  # which LLM server it goes to follows this (the caller's task id, else the workspace)
    test_command: str | None = None  # context.test_command: aider's --auto-test
    sampling: Sampling | None = None  # the run's own temperature and seed (a retry with diversity)


async def execute(
    settings: Settings,
    files: invocation.AiderFiles,
    aider: AiderCheck,
    sandbox: Sandbox,
    router: Router,
    job: Job,
    run: ActiveRun,
    registry: RunRegistry,
    on_output: Callable[[str], None] | None = None,
) -> ExecuteResult:
    """Wait for a slot, run aider once (`on_output` is told its output as it is read), and
    describe what happened."""
    started = time.monotonic()

    def result(status: str, output: str = "", error: str | None = None, files_modified: list[str] | None = None,
               exit_code: int | None = None, completed: bool = False, transient: bool = False,
               tokens: TokenCounts | None = None) -> ExecuteResult:  # fmt: skip
        return ExecuteResult(
            status=status, output=output, error=error, files_modified=files_modified or [],
            duration_seconds=round(time.monotonic() - started, 3), exit_code=exit_code,
            completed=completed, transient=transient, tokens=tokens or TokenCounts(),
        )  # fmt: skip

    # Queue for a slot, but let a cancel end the wait.
    slot = asyncio.create_task(registry.slots.acquire())
    cancelled = asyncio.create_task(run.cancel.wait())
    await asyncio.wait({slot, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    cancelled.cancel()
    if not slot.done() or run.cancel.is_set():
        slot.cancel()
        if slot.done() and not slot.cancelled():
            registry.slots.release()
        return result("error", error="cancelled")
    try:
        with router.route(job.task) as llm_url:
            if llm_url is None:
                return result("error", error=router.problem(), transient=True)
            return await _run_in_slot(settings, files, aider, sandbox, router, llm_url, job, run, result, on_output)
    except GitError as exc:
        return result("error", error=str(exc))
    except OSError as exc:  # aider vanished since the start, or the data dir is not writable
        return result("error", error=f"could not run aider: {exc.strerror or exc}")
    finally:
        registry.slots.release()


async def _run_in_slot(
    settings: Settings,
    files: invocation.AiderFiles,
    aider: AiderCheck,
    sandbox: Sandbox,
    router: Router,
    llm_url: str,
    job: Job,
    run: ActiveRun,
    result: Callable[..., ExecuteResult],
    on_output: Callable[[str], None] | None,
) -> ExecuteResult:
    if aider.path is None:  # the app answers 503 before this: said here for the type's sake too
        return result("error", error="aider is not installed")
    # aider would retry an unreachable LLM for a minute; find out in a moment instead (and the
    # router moves the task: the orchestrator's retry goes to another server).
    problem = await router.confirm(llm_url)
    if problem:
        return result("error", error=problem, transient=True)

    folder = files.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    run_files = invocation.RunFiles(folder)
    run_files.message.write_text(job.prompt, encoding="utf-8")
    model_settings = invocation.write_run_model_settings(settings, run_files, job.sampling) if job.sampling else files.model_settings
    await asyncio.to_thread(_prune_runs, files.runs)  # file-system work stays off the event loop

    caches_before = set(job.workspace.glob(TAGS_CACHE_GLOB))
    before = await gitstate.snapshot(job.workspace)
    cmd = invocation.aider_command(
        settings, aider.path, files, run_files,
        edit=[str(p) for p in job.files], read_only=[str(p) for p in job.read_only_files],
        timeout_seconds=job.timeout_seconds, llm_url=llm_url, test_command=job.test_command,
        model_settings=model_settings,
    )  # fmt: skip
    log.info("run %s of task %s in %s: %s", run.run_id, job.task, job.workspace, " ".join(cmd[1:]))
    # aider stages the files it creates (`git add`): unlike a command agent's, its git metadata is writable
    jail = sandbox.jail(
        job.workspace, writable=[files.home, folder],
        readable=[files.model_settings, files.model_metadata, files.env_file, installation(aider.path)],
        git_writable=True,
    )  # fmt: skip
    outcome = await run_process(cmd, job.workspace, invocation.aider_env(settings, files), job.timeout_seconds, run.cancel, jail, on_output)
    for cache in set(job.workspace.glob(TAGS_CACHE_GLOB)) - caches_before:
        await asyncio.to_thread(shutil.rmtree, cache, ignore_errors=True)
    after = await gitstate.snapshot(job.workspace)

    common = dict(
        output=outcome.output,
        files_modified=gitstate.changed_paths(before, after),
        exit_code=outcome.exit_code,
        completed=outcome.ending is Ending.exited,
        tokens=tokens_spent(run_files.analytics, outcome.output),
    )
    log.info("run %s ended: %s, exit %s, files %s", run.run_id, outcome.ending.value, outcome.exit_code, common["files_modified"])
    if outcome.ending is Ending.cancelled:
        return result("error", error="cancelled", **common)
    if outcome.ending is Ending.timeout:
        return result("error", error=f"aider timed out after {job.timeout_seconds} s", **common)
    fatal = outcome.fatal or find_fatal(outcome.output)
    if fatal:
        if fatal.transient:
            await router.confirm(llm_url)  # gone, not just busy: its tasks move (the probe says which)
        return result("error", error=fatal.error, transient=fatal.transient, **common)
    if outcome.exit_code != 0:
        last = next((line.strip() for line in reversed(outcome.output.splitlines()) if line.strip()), "no output")
        return result("error", error=f"aider exited with code {outcome.exit_code}: {last[:300]}", **common)
    return result("success", **common)


def _prune_runs(runs: Path) -> None:
    """Keep the newest KEEP_RUN_FOLDERS run folders (for looking into a run after the fact)."""
    folders = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name)
    for old in folders[:-KEEP_RUN_FOLDERS]:
        shutil.rmtree(old, ignore_errors=True)
