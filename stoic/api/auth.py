"""Optional bearer-token authentication (``api.token``; none = open).

Everything is protected when a token is set, except ``/healthz`` and ``/readyz``
(orchestrators probe them without credentials) and the OpenAPI pages (they describe
the API, they expose no data). ``/metrics`` *is* protected: it reveals batch volumes
and runtime names, and Prometheus sends a bearer token natively
(``authorization: {credentials: ...}`` in the scrape config). The comparison is
constant-time.

The token is checked twice: by :mod:`stoic.api.admission`, from the headers alone and
before any route reads a byte of the body, and by :func:`require_token` on each
protected route, so that a route stays protected whatever sits in front of it.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stoic.api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="api.token from the settings")


def refusal(expected: str | None, scheme: str | None, credentials: str | None) -> ApiError | None:
    """The 401 for a request whose ``Authorization`` is ``scheme credentials``, or None
    when it carries ``expected`` (or no token is configured)."""
    if expected is None:
        return None
    challenge = {"WWW-Authenticate": 'Bearer realm="stoic"'}
    if scheme is None or credentials is None or scheme.lower() != "bearer":
        return ApiError(
            401,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token>)",
            headers=challenge,
        )
    if not secrets.compare_digest(credentials.encode(), expected.encode()):
        return ApiError(401, "unauthorized", "wrong bearer token", headers=challenge)
    return None


def header_refusal(expected: str | None, authorization: str | None) -> ApiError | None:
    """:func:`refusal` for a raw ``Authorization`` header value (or its absence)."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if not scheme or not credentials.strip():
        return refusal(expected, None, None)
    return refusal(expected, scheme, credentials.strip())


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """FastAPI dependency: the app's configured token must be presented (a second line:
    :mod:`stoic.api.admission` has checked it before any body was read)."""
    error = refusal(
        request.app.state.api_token,
        credentials.scheme if credentials else None,
        credentials.credentials if credentials else None,
    )
    if error is not None:
        raise error
