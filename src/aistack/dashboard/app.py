"""The web dashboard: server-rendered pages over the orchestrator's public API.

The browser talks only to the dashboard. The dashboard holds the API key, calls the orchestrator
with it, and relays a task's event stream on its own origin, so the key never reaches a page.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from aistack import __version__, envfile
from aistack import services
from aistack.health import acheck
from aistack.config import Settings, resolve_env_file
from aistack.contracts import TERMINAL_STATUSES, IterationLimits, TaskCreate, TaskStatus
from aistack.dashboard import history
from aistack.client import RalphClient, RalphError
from aistack.dashboard.deploy import ACTIONS, DeployRunner, lifecycle_commands
from aistack.dashboard.security import (
    CSRF_FIELD,
    CsrfFailed,
    LoginRequired,
    checked_form,
    csrf_token,
    key_matches,
    logged_in,
    require_login,
    session_secret,
)
from aistack.dashboard.settings_form import LIMIT_FIELDS, grouped, rows, updates_from_form
from aistack.web import check_bind, serve

HERE = Path(__file__).parent
PAGE_SIZE = 20
OVERVIEW_PROBE_SECONDS = 3.0  # a hung service is cut here; one that is down fails at once on loopback
STATUSES = [s.value for s in TaskStatus]


def create_app(settings: Settings) -> FastAPI:
    ralph = RalphClient(settings.url("ralph-wiggum"), settings.api_key)
    probe_http = httpx.AsyncClient(trust_env=False)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await ralph.aclose()
        await probe_http.aclose()

    app = FastAPI(title="aistack dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.auth_required = settings.api_key is not None
    app.state.started = time.time()
    deploys = DeployRunner(settings)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(version=__version__, csrf_field=CSRF_FIELD, statuses=STATUSES)
    templates.env.filters["duration"] = _duration
    templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "—"

    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="aistack_dashboard",
        same_site="strict",
        https_only=False,  # served on plain HTTP on loopback; the cookie is still HttpOnly and signed
        max_age=7 * 24 * 3600,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {"csrf": csrf_token(request), "auth_required": app.state.auth_required, "flash": flash, **context},
            status_code=status_code,
        )

    def redirect(url: str, message: str | None = None, kind: str = "ok", *, request: Request) -> RedirectResponse:
        if message:
            request.session["flash"] = {"kind": kind, "text": message}
        return RedirectResponse(url, status_code=303)

    # --- errors ------------------------------------------------------------------------------------
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _: LoginRequired) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={urlquote(request.url.path)}", status_code=303)
        return JSONResponse({"detail": "log in first: open /login"}, status_code=401)

    @app.exception_handler(CsrfFailed)
    async def _csrf_failed(request: Request, _: CsrfFailed) -> Response:
        return render(
            request, "error.html", 403, title="Form expired", message="The form was out of date (CSRF check). Reload the page and try again."
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)
        message = "No such page." if exc.status_code == 404 else str(exc.detail)
        return render(request, "error.html", exc.status_code, title=f"Error {exc.status_code}", message=message)

    # --- health and login --------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        orchestrator = await acheck(probe_http, settings.health_url("ralph-wiggum"), OVERVIEW_PROBE_SECONDS)
        return {
            # Degraded only when the dashboard cannot reach the orchestrator; the orchestrator's own
            # state is shown on the Overview.
            "status": "degraded" if orchestrator.state == "down" else "healthy",
            "version": __version__,
            "uptime_seconds": round(time.time() - app.state.started, 1),
            "ralph_wiggum": orchestrator.state,
        }

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/"):
        if logged_in(request):
            return RedirectResponse(_safe_next(next), status_code=303)
        return render(request, "login.html", next=_safe_next(next), error=None)

    @app.post("/login")
    async def login(request: Request):
        form = await checked_form(request)
        target = _safe_next(str(form.get("next", "/")))
        if not key_matches(settings, str(form.get("api_key", ""))):
            return render(request, "login.html", 401, next=target, error="That is not the API key (RALPH_WIGGUM_API_KEY).")
        request.session["auth"] = True
        return RedirectResponse(target, status_code=303)

    @app.post("/logout")
    async def logout(request: Request):
        await checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # --- overview ----------------------------------------------------------------------------------
    async def overview_context() -> dict[str, Any]:
        urls = {name: settings.url(name) for name in services.NAMES}
        probes, stats = await asyncio.gather(
            asyncio.gather(*(acheck(probe_http, settings.health_url(name), OVERVIEW_PROBE_SECONDS) for name in urls)),
            _attempt(ralph.stats()),
        )
        all_facts = await asyncio.to_thread(lambda: [history.service_facts(settings, name) for name in urls])
        rows = [
            {"name": name, "url": url, "probe": result, "uptime": result.body.get("uptime_seconds", facts.uptime_seconds), "facts": facts}
            for (name, url), result, facts in zip(urls.items(), probes, all_facts)
        ]
        return {"services": rows, "stats": stats[0], "stats_error": stats[1], "checked": time.strftime("%H:%M:%S")}

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def overview(request: Request):
        return render(request, "overview.html", page="overview", **await overview_context())

    @app.get("/fragments/overview", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def overview_fragment(request: Request):
        return render(request, "_overview.html", **await overview_context())

    # --- tasks -------------------------------------------------------------------------------------
    @app.get("/tasks", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def tasks(request: Request, status: str = "", page: int = 1):
        status = status if status in STATUSES else ""
        page = max(page, 1)
        result, error = await _attempt(ralph.tasks(status or None, PAGE_SIZE, (page - 1) * PAGE_SIZE))
        pages = max(1, -(-result.total // PAGE_SIZE)) if result else 1
        return render(request, "tasks.html", page="tasks", result=result, error=error, status=status, page_no=page, pages=pages)

    async def new_task_context() -> dict[str, Any]:
        health, _ = await _attempt(ralph.health())
        limits, _ = await _attempt(ralph.limits())
        backends = [b.name for b in health.backends] if health else []
        return {"backends": backends or ["aider", "command"], "limits": limits, "workspace_root": settings.workspace_root}

    @app.get("/tasks/new", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def new_task(request: Request):
        return render(request, "new_task.html", page="new", form={}, error=None, error_field=None, **await new_task_context())

    @app.post("/tasks", dependencies=[Depends(require_login)])
    async def submit_task(request: Request):
        form = await checked_form(request)
        values = {k: str(v) for k, v in form.items() if k != CSRF_FIELD}

        def again(message: str, field: str | None, status_code: int = 422):
            return render(request, "new_task.html", status_code, page="new", form=values, error=message, error_field=field, **context)

        context = await new_task_context()
        try:
            task = _task_from_form(values)
        except _FormError as exc:
            return again(str(exc), exc.field)
        try:
            accepted = await ralph.submit(task)
        except RalphError as exc:
            return again(exc.detail, exc.field, exc.status if 400 <= exc.status < 500 else 502)
        return redirect(f"/tasks/{accepted.task_id}", f"Task accepted: {accepted.message}", request=request)

    async def task_context(task_id: str) -> dict[str, Any]:
        task = await ralph.task(checked_task_id(task_id))
        iterations, error = await _attempt(ralph.iterations(task_id))
        return {"task": task, "iterations": iterations or [], "iterations_error": error, "terminal": task.status in TERMINAL_STATUSES}

    @app.get("/tasks/{task_id}", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def task_page(request: Request, task_id: str):
        try:
            context = await task_context(task_id)
        except RalphError as exc:
            return render(request, "error.html", exc.status if exc.status >= 400 else 502, title="Task", message=exc.detail)
        return render(request, "task.html", page="tasks", **context)

    @app.get("/fragments/tasks/{task_id}", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def task_fragment(request: Request, task_id: str):
        try:
            context = await task_context(task_id)
        except RalphError as exc:
            return HTMLResponse(f'<p class="error" role="alert">{_escape(exc.detail)}</p>', status_code=502)
        return render(request, "_task.html", **context)

    @app.get("/tasks/{task_id}/diff", response_class=PlainTextResponse, dependencies=[Depends(require_login)])
    async def task_diff(task_id: str, iteration: int | None = None):
        try:
            text = await ralph.diff(checked_task_id(task_id), iteration)
        except RalphError as exc:
            return PlainTextResponse(f"(diff unavailable: {exc.detail})", status_code=502)
        return PlainTextResponse(text or "(no changes)")

    @app.get("/tasks/{task_id}/events", dependencies=[Depends(require_login)])
    async def task_events(request: Request, task_id: str):
        """Same-origin relay of the orchestrator's event stream (the API key stays here)."""
        last_id = request.headers.get("last-event-id")

        async def relay():
            try:
                async for chunk in ralph.events(checked_task_id(task_id), last_id):
                    yield chunk
            except RalphError as exc:
                yield f"event: relay_error\ndata: {json.dumps({'detail': exc.detail})}\n\n".encode()
            except httpx.HTTPError as exc:
                yield f"event: relay_error\ndata: {json.dumps({'detail': type(exc).__name__})}\n\n".encode()

        return StreamingResponse(
            relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post("/tasks/{task_id}/{action}", dependencies=[Depends(require_login)])
    async def task_action(request: Request, task_id: str, action: str):
        await checked_form(request)
        calls = {"stop": lambda: ralph.stop(task_id), "approve": lambda: ralph.decide(task_id, True), "reject": lambda: ralph.decide(task_id, False)}
        if action not in calls:
            return render(request, "error.html", 404, title="Task", message=f"unknown action {action!r}: allowed: stop, approve, reject")
        done = {"stop": "Stop requested.", "approve": "Approved: the next iteration runs.", "reject": "Rejected."}
        try:
            checked_task_id(task_id)
            await calls[action]()
        except RalphError as exc:
            return redirect(f"/tasks/{task_id}", f"{action} refused: {exc.detail}", "error", request=request)
        return redirect(f"/tasks/{task_id}", done[action], request=request)

    # --- iteration controls ------------------------------------------------------------------------
    def file_values() -> dict[str, str]:
        return envfile.read(resolve_env_file())

    async def controls_context() -> dict[str, Any]:
        live, live_error = await _attempt(ralph.limits())
        try:
            saved = envfile.validate(resolve_env_file().read_text() if resolve_env_file().is_file() else "")
        except envfile.EnvFileError:
            saved = None
        return {"live": live, "live_error": live_error, "saved": saved, "env_file": resolve_env_file()}

    @app.get("/controls", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def controls(request: Request):
        context = await controls_context()
        shown = context["live"] or (_limits_of(context["saved"]) if context["saved"] else None)
        form = shown.model_dump() if shown else {}
        return render(request, "controls.html", page="controls", form=form, error=None, error_field=None, **context)

    @app.post("/controls", dependencies=[Depends(require_login)])
    async def save_controls(request: Request):
        posted = await checked_form(request)
        form: dict[str, Any] = {name: str(posted.get(name, "")).strip() for name in LIMIT_FIELDS}
        form["ralph_adaptive_iterations"] = posted.get("ralph_adaptive_iterations") == "true"
        try:
            limits = _limits_from_form(form)
            envfile.update(resolve_env_file(), _limits_env(limits))
        except (_FormError, envfile.EnvFileError) as exc:
            context = await controls_context()
            return render(request, "controls.html", 422, page="controls", form=form, error=str(exc), error_field=exc.field, **context)
        try:
            applied = await ralph.reload_config()
        except RalphError as exc:
            return redirect(
                "/controls",
                f"Saved to {resolve_env_file()}, but the orchestrator did not apply it: {exc.detail}",
                "error",
                request=request,
            )
        if applied != limits:
            return redirect(
                "/controls",
                "Saved, but the orchestrator reports other limits (an environment variable overrides the .env?).",
                "error",
                request=request,
            )
        return redirect("/controls", "Saved to the .env and applied to the running orchestrator.", request=request)

    # --- config editor -----------------------------------------------------------------------------
    @app.get("/config", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def config_page(request: Request):
        return render(request, "config.html", page="config", groups=grouped(rows(file_values())), env_file=resolve_env_file(), error=None, error_field=None)

    @app.post("/config", dependencies=[Depends(require_login)])
    async def save_config(request: Request):
        posted = await checked_form(request)
        form = {k: str(v) for k, v in posted.items() if k != CSRF_FIELD}
        current = file_values()
        updates = updates_from_form(form, current)
        try:
            if updates:
                envfile.update(resolve_env_file(), updates)
        except envfile.EnvFileError as exc:
            return render(
                request,
                "config.html",
                422,
                page="config",
                groups=grouped(rows(current, submitted=form)),
                env_file=resolve_env_file(),
                error=str(exc),
                error_field=(exc.field or "").upper() or None,
            )
        if not updates:
            return redirect("/config", "Nothing changed.", request=request)
        message = f"Saved {len(updates)} change(s) to {resolve_env_file()} (previous version: {envfile.backup_path(resolve_env_file()).name})."
        if any(key.lower() in LIMIT_FIELDS for key in updates):
            applied, error = await _attempt(ralph.reload_config())
            message += " Iteration limits applied live." if applied else f" The orchestrator did not reload: {error}."
        others = [key for key in updates if key.lower() not in LIMIT_FIELDS]
        if others:
            message += " Other settings take effect when the services restart."
        return redirect("/config", message, request=request)

    # --- deploy ------------------------------------------------------------------------------------
    def deploy_context() -> dict[str, Any]:
        available = lifecycle_commands()
        rows = [{"name": name, "facts": history.service_facts(settings, name)} for name in services.NAMES]
        return {"available": available, "actions": ACTIONS, "services": rows, "job": deploys.last, "earlier": deploys.earlier_log()}

    @app.get("/deploy", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def deploy_page(request: Request):
        return render(request, "deploy.html", page="deploy", **deploy_context())

    @app.get("/fragments/deploy", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    async def deploy_fragment(request: Request):
        return render(request, "_deploy_log.html", **deploy_context())

    @app.post("/deploy/{service}/{action}", dependencies=[Depends(require_login)])
    async def run_deploy(request: Request, service: str, action: str):
        await checked_form(request)
        if action not in lifecycle_commands():
            return redirect("/deploy", f"`aistack {action}` is not available in this installation.", "error", request=request)
        try:
            deploys.start(service, action)
        except ValueError as exc:
            return redirect("/deploy", str(exc), "error", request=request)
        return redirect("/deploy", f"Started `aistack {action} {service}`.", request=request)

    return app


# --- helpers ---------------------------------------------------------------------------------------


class _FormError(ValueError):
    def __init__(self, message: str, field: str | None):
        super().__init__(message)
        self.field = field


_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def checked_task_id(task_id: str) -> str:
    """A task id as the orchestrator makes them; anything else (`..`, `%2F`...) could change the
    orchestrator URL the dashboard calls, so it is refused here."""
    if not _TASK_ID.fullmatch(task_id):
        raise RalphError(404, f"no task with id {task_id[:100]!r}", "task_id")
    return task_id


async def _attempt(call) -> tuple[Any, str | None]:
    """(result, None) or (None, the orchestrator's one-line error)."""
    try:
        return await call, None
    except RalphError as exc:
        return None, exc.detail


def _task_from_form(values: dict[str, str]) -> TaskCreate:
    """The submit form → TaskCreate; a bad field raises `_FormError` naming it."""

    def optional(name: str) -> str | None:
        return values.get(name, "").strip() or None

    body: dict[str, Any] = {
        "prompt": values.get("prompt", "").strip(),
        "backend": values.get("backend", "").strip() or "aider",
        "workspace": optional("workspace"),
        "check_command": optional("check_command"),
        "completion_promise": optional("completion_promise"),
        "require_approval": values.get("require_approval") == "true",
    }
    if values.get("limit_mode") == "fixed":
        raw = values.get("max_iterations", "").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise _FormError(f"max_iterations: a whole number of at least 1 is needed (got {raw!r})", "max_iterations")
        body["max_iterations"] = int(raw)
    context_text = values.get("context", "").strip()
    if context_text:
        try:
            context = json.loads(context_text)
        except ValueError as exc:
            raise _FormError(f"context: not valid JSON ({exc.msg} at line {exc.lineno})", "context") from None
        if not isinstance(context, dict):
            raise _FormError("context: a JSON object is needed, e.g. {\"files\": [\"app.py\"]}", "context")
        body["context"] = context
    try:
        return TaskCreate.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else None
        raise _FormError(f"{field}: {err['msg']}", field) from None


def _limits_from_form(form: dict[str, Any]) -> IterationLimits:
    values: dict[str, Any] = {"ralph_adaptive_iterations": form["ralph_adaptive_iterations"]}
    for name in LIMIT_FIELDS:
        if name == "ralph_adaptive_iterations":
            continue
        raw = form[name]
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
            raise _FormError(f"{name.upper()}: a whole number from 1 to 10000 is needed (got {raw!r})", name)
        values[name] = int(raw)
    for name in ("ralph_max_iterations_simple", "ralph_max_iterations_default", "ralph_max_iterations_complex"):
        if values[name] > values["ralph_max_iterations_cap"]:
            raise _FormError(
                f"{name.upper()}={values[name]} is above the cap RALPH_MAX_ITERATIONS_CAP={values['ralph_max_iterations_cap']}",
                name,
            )
    return IterationLimits.model_validate(values)


def _limits_env(limits: IterationLimits) -> dict[str, str]:
    return {name.upper(): str(value).lower() for name, value in limits.model_dump().items()}


def _limits_of(settings: Settings) -> IterationLimits:
    return IterationLimits.model_validate({name: getattr(settings, name) for name in LIMIT_FIELDS})


def _safe_next(target: str) -> str:
    """Only same-site paths: no open redirect through ?next=."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def run(settings: Settings) -> int:
    """`aistack serve dashboard`: wait for the orchestrator (pre-flight), then serve until stopped."""
    from aistack import preflight

    check_bind(settings.aistack_bind_address, settings.api_key)
    preflight.before_serve(settings, "dashboard")
    serve(create_app(settings), settings.aistack_bind_address, settings.dashboard_port, settings.log_level)
    return 0
