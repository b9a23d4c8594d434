"""Login (when an API key is configured) and CSRF tokens, both kept in the signed session cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

from aistack.config import Settings

CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """Raised by `require_login`; the app answers with a redirect to the login page (or 401)."""


class CsrfFailed(Exception):
    """A form post without the session's CSRF token."""


def session_secret(settings: Settings) -> str:
    """Derived from the API key when there is one, so sessions survive a dashboard restart and
    end when the key changes; otherwise random per process (there is nothing to log into)."""
    key = settings.api_key
    if key:
        return hashlib.sha256(b"aistack-dashboard-session\0" + key.encode()).hexdigest()
    return secrets.token_hex(32)


def key_matches(settings: Settings, given: str) -> bool:
    key = settings.api_key
    return key is not None and hmac.compare_digest(given.encode(), key.encode())


def logged_in(request: Request) -> bool:
    return not request.app.state.site.auth_required or request.session.get("auth") is True


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
