"""The web dashboard: server-rendered pages over the orchestrator's public API.

The browser talks only to the dashboard. The dashboard holds the API key, calls the orchestrator
with it, and relays a task's event stream on its own origin, so the key never reaches a page.
Each page is a router in `pages/`; what they share is the `Site` (`site.py`).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from urllib.parse import quote as urlquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from aistack import preflight
from aistack.config import Settings
from aistack.dashboard.pages import auth, config, controls, deploy, learning, overview, stats, tasks
from aistack.dashboard.security import CONTENT_SECURITY_POLICY, ContentSecurityPolicy, CsrfFailed, LoginRequired, session_secret
from aistack.dashboard.site import HERE, Site
from aistack.web import check_bind, error_body, serve


def create_app(settings: Settings) -> FastAPI:
    site = Site(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await site.close()

    app = FastAPI(title="aistack dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.site = site
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="aistack_dashboard",
        same_site="strict",
        https_only=False,  # served on plain HTTP on loopback; the cookie is still HttpOnly and signed
        max_age=settings.dashboard_session_max_hours * 3600,  # no session outlives this (see security.Sessions)
    )
    app.add_middleware(ContentSecurityPolicy)  # added last, so outermost: on every answer the app makes
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_pages(app, site)
    for page in (auth, overview, tasks, stats, controls, config, deploy, learning):
        app.include_router(page.router)
    return app


def _install_error_pages(app: FastAPI, site: Site) -> None:
    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _: LoginRequired) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={urlquote(request.url.path)}", status_code=303)
        return JSONResponse(error_body("log in first: open /login"), status_code=401)

    @app.exception_handler(CsrfFailed)
    async def _csrf_failed(request: Request, _: CsrfFailed) -> Response:
        message = "The form was out of date (CSRF check). Reload the page and try again."
        return site.render(request, "error.html", 403, title="Form expired", message=message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)
        message = "No such page." if exc.status_code == 404 else str(exc.detail)
        return site.render(request, "error.html", exc.status_code, title=f"Error {exc.status_code}", message=message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, _: Exception) -> Response:
        # Starlette answers a crash from its outermost layer, outside every middleware: the policy is
        # set here, and nothing is rendered (the templates may be what failed). The log has the traceback.
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        if "text/html" not in request.headers.get("accept", ""):
            return JSONResponse(error_body("internal error: see the dashboard's log"), status_code=500, headers=headers)
        return PlainTextResponse("Internal error: see the dashboard's log.", status_code=500, headers=headers)


def run(settings: Settings) -> int:
    """`aistack serve dashboard`: wait for the orchestrator (pre-flight), then serve until stopped."""
    check_bind(settings.aistack_bind_address, settings.api_key)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per probe
    preflight.before_serve(settings, "dashboard")
    serve(create_app(settings), settings.aistack_bind_address, settings.dashboard_port, settings.log_level)
    return 0
