"""Optional bearer-token authentication (``api.token``; none = open).

Everything is protected when a token is set, except ``/healthz`` and ``/readyz``
(orchestrators probe them without credentials) and the OpenAPI pages (they describe
the API, they expose no data). ``/metrics`` *is* protected: it reveals batch volumes
and runtime names, and Prometheus sends a bearer token natively
(``authorization: {credentials: ...}`` in the scrape config). The comparison is
constant-time.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stoic.api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="api.token from the settings")


def check_token(expected: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Raise a 401 :class:`ApiError` unless ``credentials`` carry ``expected``."""
    if expected is None:
        return
    challenge = {"WWW-Authenticate": 'Bearer realm="stoic"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token>)",
            headers=challenge,
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "wrong bearer token", headers=challenge)


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """FastAPI dependency: the app's configured token must be presented."""
    check_token(request.app.state.api_token, credentials)
