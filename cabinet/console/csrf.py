"""CSRF: every form carries the login session's token in a hidden `csrf` field, checked in
constant time before any action; the session cookie is SameSite=Strict and HttpOnly, so another
site can neither send it nor read the token. The login form, before any session exists, uses a
double-submit token: a random cookie that the form must repeat."""
from __future__ import annotations

import hmac
import secrets

from starlette.responses import Response

SESSION_COOKIE = "cabinet_console"
LOGIN_COOKIE = "cabinet_console_login"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(expected: str | None, given: object) -> bool:
    """The token given matches the one expected (an absent or empty one never does)."""
    return bool(expected) and isinstance(given, str) and bool(given) and \
        hmac.compare_digest(expected.encode(), given.encode())


def set_cookie(response: Response, name: str, value: str, *, path: str, secure: bool,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=path, httponly=True, samesite="strict",
                        secure=secure, max_age=max_age)
