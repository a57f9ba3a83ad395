"""Who may see the operator page: the API's bearer token, or a login session.

With no ``api.token`` the page is open, like the API. With one, a request is let in
when it carries either

* ``Authorization: Bearer <token>`` (scripts, ``curl``), or
* the login cookie ``stoic_ui`` that ``POST /ui/login`` sets after checking the token
  typed into the login form.

The cookie holds a random session id (256 bits), never the token; the session itself
lives in the daemon's memory (:class:`Sessions`), which is what lets logout revoke it:
a cookie signed with the token (the first design) stayed valid after logout until it
expired, and a copied cookie with it. A session ends when it was unused for
``ui.session_idle_s`` (the open page's refresh is use), ``ui.session_ttl_s`` after the
login however active, at logout, when the same browser logs in again (a new id each
login), and when the daemon restarts (everyone logs in
again: nothing to persist, nothing to leak from the disk). Sessions are looked up by the
SHA-256 of the id, so the lookup's timing tells nothing about the ids it holds.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (the browser does
not send it with a request started by another site, which is what makes the upload
and logout forms safe against cross-site request forgery without a CSRF token),
``Path=/ui`` (the JSON API never accepts it: it keeps bearer tokens only), and
``Secure`` when the request came over HTTPS. As a second line, :func:`same_origin`
refuses a form ``POST`` whose ``Origin`` header names another site.

Each session also holds a random **CSRF token** (:meth:`Sessions.csrf`): the operator's
action forms (cancel, retry, drain, out of service) carry it in a hidden field and the
daemon refuses a form whose field does not match the session's, on top of
``SameSite=Strict`` and the ``Origin`` check. On a daemon without ``api.token`` the page
has no login, so a visitor gets an anonymous session (the same cookie) just to hold that
token: an open page's actions still cannot be forged from another site. A request
authenticated by its ``Authorization`` header needs no CSRF token (a browser never adds
that header on its own). Logs name a session by :meth:`Sessions.handle`, a short hash
of its id, never the id.

All token comparisons are constant-time. Nothing here writes the token into a URL or a
page.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "stoic_ui"
COOKIE_PATH = "/ui"
MAX_SESSIONS = 1_000
"""Sessions held at once; a login beyond it ends the least recently used one. With a
token only its holder can open one, so this bounds memory, not an attack; on an open
daemon (no token) any visitor gets one, and the bound is what keeps them from piling
up (an evicted visitor's next action asks for a reload)."""


@dataclass(slots=True)
class _Session:
    opened_at: float
    used_at: float
    csrf: str


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class Sessions:
    """The login sessions of one daemon, in memory, by the digest of their id.

    Instants come from the caller (the controller's injected clock), so tests move time
    by hand. Not thread-safe: used on the event loop only.
    """

    def __init__(self, *, idle_s: float, lifetime_s: float, capacity: int = MAX_SESSIONS) -> None:
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self._capacity = capacity
        self._held: OrderedDict[bytes, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def _expired(self, s: _Session, now: float) -> bool:
        return not (0 <= now - s.used_at <= self.idle_s and now - s.opened_at <= self.lifetime_s)

    def open(self, now: float) -> str:
        """A new session's id (the cookie's value)."""
        for key in [k for k, s in self._held.items() if self._expired(s, now)]:
            del self._held[key]
        while len(self._held) >= self._capacity:
            self._held.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        self._held[_digest(session_id)] = _Session(now, now, secrets.token_urlsafe(32))
        return session_id

    def use(self, session_id: str, now: float) -> bool:
        """Whether ``session_id`` is a live session; if so it counts as used at ``now``.
        An expired one is ended."""
        key = _digest(session_id)
        s = self._held.get(key)
        if s is None:
            return False
        if self._expired(s, now):
            del self._held[key]
            return False
        s.used_at = now
        self._held.move_to_end(key)
        return True

    def csrf(self, session_id: str) -> str | None:
        """The CSRF token of a held session (None: no such session). Does not count as
        use: call :meth:`use` first to check that it is live."""
        s = self._held.get(_digest(session_id))
        return None if s is None else s.csrf

    @staticmethod
    def handle(session_id: str) -> str:
        """A short name of a session for the logs: 8 hex digits of its id's hash."""
        return _digest(session_id).hex()[:8]

    def revoke(self, session_id: str) -> bool:
        """End ``session_id``; False if there was no such session."""
        return self._held.pop(_digest(session_id), None) is not None


def token_matches(expected: str, offered: str) -> bool:
    return secrets.compare_digest(offered.encode(), expected.encode())


def offered_bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None without one."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def set_session(
    response: Response,
    request: Request,
    session_id: str,
    *,
    lifetime_s: float,
    path: str = COOKIE_PATH,
) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(lifetime_s),
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
