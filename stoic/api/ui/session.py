"""Who may see the operator page: the API's bearer token, or a login cookie made from it.

With no ``api.token`` the page is open, like the API. With one, a request is let in
when it carries either

* ``Authorization: Bearer <token>`` (scripts, ``curl``), or
* the login cookie ``stoic_ui`` that ``POST /ui/login`` sets after checking the token
  typed into the login form.

The cookie never holds the token: its value is ``<issued-at>.<HMAC-SHA256(token,
issued-at)>``, so a leaked cookie does not leak the API token, it expires after
``ui.session_ttl_s`` (checked on the server, not only by the browser), and changing
the token invalidates every cookie. It is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (the browser does not send it with a request started by another
site, which is what makes the upload and logout forms safe against cross-site request
forgery without a CSRF token), ``Path=/ui`` (the JSON API never accepts it: it keeps
bearer tokens only), and ``Secure`` when the request came over HTTPS. As a second line,
:func:`same_origin` refuses a form ``POST`` whose ``Origin`` header names another site.

All comparisons are constant-time. Nothing here writes the token into a URL or a page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "stoic_ui"
COOKIE_PATH = "/ui"
_CONTEXT = b"stoic-ui-session-v1:"


def _mac(token: str, issued: int) -> str:
    return hmac.new(token.encode(), _CONTEXT + str(issued).encode(), hashlib.sha256).hexdigest()


def session_value(token: str, issued_at: float) -> str:
    """The cookie value for a login at ``issued_at`` (epoch seconds)."""
    issued = int(issued_at)
    return f"{issued}.{_mac(token, issued)}"


def valid_session(token: str, value: str, *, now: float, ttl_s: float) -> bool:
    """Whether ``value`` is a cookie made from ``token`` and younger than ``ttl_s``."""
    issued_s, sep, mac = value.partition(".")
    if not sep or not issued_s.isdigit() or len(issued_s) > 12:
        return False
    issued = int(issued_s)
    if not -60 <= now - issued <= ttl_s:  # a minute of clock skew in the future
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, issued).encode())


def token_matches(expected: str, offered: str) -> bool:
    return secrets.compare_digest(offered.encode(), expected.encode())


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(token, credentials.strip())


def authorized(request: Request, token: str | None, *, now: float, ttl_s: float) -> bool:
    """Whether ``request`` may see the page (always, with no token configured)."""
    if token is None:
        return True
    if bearer_ok(request, token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and valid_session(token, cookie, now=now, ttl_s=ttl_s)


def set_session(
    response: Response,
    request: Request,
    token: str,
    *,
    now: float,
    ttl_s: float,
    path: str = COOKIE_PATH,
) -> None:
    response.set_cookie(
        COOKIE,
        session_value(token, now),
        max_age=int(ttl_s),
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response, request: Request, *, path: str = COOKIE_PATH) -> None:
    response.delete_cookie(
        COOKIE,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> bool:
    """False when the request's ``Origin`` (or, without one, its ``Referer``) names
    another host than the one it was sent to. Browsers send ``Origin`` with every
    form ``POST``; a request with neither header (a script) is let through, since
    it has no ambient cookie to abuse unless it was given one."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()
