"""What every aistack HTTP service shares: JSON errors, the API key, and safe binding."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from aistack.config import ConfigError
from aistack.contracts import ErrorBody, first_error

API_KEY_HEADER = "X-API-Key"
PREVIEW_CHARS = 80  # of a refused value, in an error answer
log = logging.getLogger("aistack")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(f"invalid setting AISTACK_BIND_ADDRESS={host!r}: binding beyond loopback needs RALPH_WIGGUM_API_KEY set")


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes `{"detail": message, "field": name}`; nothing leaks a traceback."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field, msg = first_error(exc.errors())
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("request body is not valid JSON", "body"), status_code=422)
        got = first.get("input")
        shown = f" (got {preview(got)})" if got is not None and not isinstance(got, dict) else ""
        return JSONResponse(error_body(f"{field}: {msg}{shown}", field), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}"), status_code=500)


def preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """`repr(value)`, cut short: an error names what it refused without echoing all of it."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def error_body(message: str, field: str | None = None) -> dict[str, str]:
    """The one shape of every error answer."""
    return {"detail": message, "field": field} if field else {"detail": message}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of error answers: each status in the one shape, ErrorBody, as JSON
    (said outright: FastAPI would give a route's own media type, text for /metrics). A 422 given
    here also replaces FastAPI's own (a list of pydantic errors, which we never send)."""
    json = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"model": ErrorBody, "description": HTTPStatus(status).phrase, "content": json} for status in statuses}


def http_error(status: int, message: str, field: str | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=error_body(message, field))


def require_api_key(app: FastAPI, api_key: str | None, open_paths: tuple[str, ...] = ("/health",)) -> None:
    """With a key configured, every path but `open_paths` needs it, as a header (never in the
    URL, where access logs and proxies would keep it)."""
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, open_paths=open_paths)


def sends_key(headers: Headers, api_key: str | None) -> bool:
    """Whether a request carries `api_key` (`X-API-Key`, or `Authorization: Bearer`); compared
    in constant time. Without a configured key there is nothing to hold back: True."""
    if not api_key:
        return True
    given = headers.get(API_KEY_HEADER) or ""
    auth = headers.get("Authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:]
    return hmac.compare_digest(given.encode(), api_key.encode())


class ApiKeyMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware): nothing is added to a request that passes, and a
    streamed answer (SSE) streams as it would without it."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: tuple[str, ...]):
        self.app, self.api_key, self.open_paths = app, api_key, open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or sends_key(Headers(scope=scope), self.api_key):
            return await self.app(scope, receive, send)
        refusal = JSONResponse(error_body(f"missing or wrong API key: send it in the {API_KEY_HEADER} header"), status_code=401)
        await refusal(scope, receive, send)


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    """Run `app` with uvicorn until SIGTERM/SIGINT (graceful shutdown included)."""
    # No proxy stands in front of these services: a client may not name its own address
    # (X-Forwarded-For), which the dashboard's login throttle goes by.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug", proxy_headers=False)
