"""Login (when an API key is configured), its sessions and their throttle, CSRF tokens, and the
Content-Security-Policy every response carries.

The signed session cookie carries a CSRF token and, once logged in, a random session id. The
session itself lives in this process (`Sessions`): logging out forgets it, so a cookie copied
before is worth nothing after; a restart of the dashboard ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistack.config import Settings

CSRF_FIELD = "csrf_token"
SESSION_ID = "sid"
# Only the dashboard's own files, and no inline script, event handler or style attribute: markup
# that got into a page (a task's prompt, an agent's output) cannot run or restyle anything.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",  # no CDN either: the plots' library is vendored, the browser may be offline
    "script-src 'self'",
    "style-src 'self'",  # Chart.js sizes its canvas through the CSSOM, which this allows
    "img-src 'self' data:",
    "connect-src 'self'",  # the fragments' and diffs' fetches, a task's event stream (its relay is same-origin)
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
))  # fmt: skip


class LoginRequired(Exception):
    """Raised by `require_login`; the app answers with a redirect to the login page (or 401)."""


class CsrfFailed(Exception):
    """A form post without the session's CSRF token."""


def session_secret(settings: Settings) -> str:
    """Signs the cookie. Derived from the API key when there is one, so a form (the login form
    included) left open across a dashboard restart still posts; otherwise random per process
    (there is nothing to log into)."""
    key = settings.api_key
    if key:
        return hashlib.sha256(b"aistack-dashboard-session\0" + key.encode()).hexdigest()
    return secrets.token_hex(32)


def key_matches(settings: Settings, given: str) -> bool:
    key = settings.api_key
    return key is not None and hmac.compare_digest(given.encode(), key.encode())


class Sessions:
    """Logged-in sessions: id → (began, last used), in memory. A session ends at logout, after
    `idle` seconds unused, or `lifetime` seconds after it began. Background requests (a page's
    polling, its event stream) do not count as use, or an open tab would never go idle."""

    def __init__(self, idle: float, lifetime: float, clock: Callable[[], float] = time.monotonic):
        self.idle, self.lifetime, self.clock = idle, lifetime, clock
        self._open: dict[str, tuple[float, float]] = {}

    def start(self) -> str:
        now = self.clock()
        self._open = {sid: times for sid, times in self._open.items() if self._alive(times, now)}
        sid = secrets.token_urlsafe(32)
        self._open[sid] = (now, now)
        return sid

    def active(self, sid: str | None, used: bool = True) -> bool:
        """Whether `sid` is a session that has not ended; `used` counts this as its use."""
        if sid is None or (times := self._open.get(sid)) is None:
            return False
        now = self.clock()
        if not self._alive(times, now):
            del self._open[sid]
            return False
        if used:
            self._open[sid] = (times[0], now)
        return True

    def end(self, sid: str | None) -> None:
        if sid is not None:
            self._open.pop(sid, None)

    def _alive(self, times: tuple[float, float], now: float) -> bool:
        began, used = times
        return now - used <= self.idle and now - began <= self.lifetime


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Wrong keys per client address. The first `free` cost nothing; each one after locks the
    client out for twice as long as the one before (1 s, 2 s, 4 s … at most `most` s), during
    which even the right key is refused. A login resets the count, and so does an hour without
    a failure. At most `clients` addresses are remembered: the longest quiet are forgotten first."""

    def __init__(self, free: int = 3, most: float = 300.0, clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.free, self.most, self.clients, self.clock = free, most, clients, clock
        self.forget_after = 3600.0
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        entry = self._current(client)
        return max(0.0, entry.locked_until - self.clock()) if entry else 0.0

    def failed(self, client: str) -> int:
        """Count a wrong key; returns how many in a row this client has sent."""
        now = self.clock()
        entry = self._current(client) or _Failures()
        entry.count += 1
        entry.last = now
        if entry.count > self.free:
            entry.locked_until = now + min(self.most, 2.0 ** (entry.count - self.free - 1))
        self._failures[client] = entry
        self._failures.move_to_end(client)
        while len(self._failures) > self.clients:
            self._failures.popitem(last=False)
        return entry.count

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _current(self, client: str) -> _Failures | None:
        entry = self._failures.get(client)
        if entry is not None and self.clock() - max(entry.last, entry.locked_until) > self.forget_after:
            del self._failures[client]
            return None
        return entry


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _background(request: Request) -> bool:
    """A request the page makes by itself, not a person's: it does not keep a session alive."""
    path = request.url.path
    return path.startswith("/fragments/") or path.endswith("/events")


def logged_in(request: Request) -> bool:
    site = request.app.state.site
    return not site.auth_required or site.sessions.active(request.session.get(SESSION_ID), used=not _background(request))


def log_in(request: Request) -> None:
    """A fresh session (and with it a fresh CSRF token): nothing of the cookie from before the login carries over."""
    request.session.clear()
    request.session[SESSION_ID] = request.app.state.site.sessions.start()


def log_out(request: Request) -> None:
    request.app.state.site.sessions.end(request.session.get(SESSION_ID))
    request.session.clear()


def require_login(request: Request) -> None:
    """Dependency of every page but /login and /health."""
    if not logged_in(request):
        raise LoginRequired()


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request: Request):
    """The posted form, after checking its CSRF token against the session's."""
    form = await request.form()
    expected = request.session.get("csrf")
    given = str(form.get(CSRF_FIELD, ""))
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfFailed()
    return form


class ContentSecurityPolicy:
    """Sets `CONTENT_SECURITY_POLICY` on every response, error pages and static files included.
    Plain ASGI, so a task's event stream passes straight through (an `http` middleware relays
    every body through a stream of its own)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            await send(message)

        await self.app(scope, receive, with_policy)
