"""The daemon's uplink check: one HTTP request across the uplink per inquisitor tick.

An :class:`~stoic.predict.uplink.UplinkCheck` for ``inquisitor.uplink_check_url`` (the
cluster API's ``/readyz``, the object store's endpoint: anything on the far side of the
site's uplink). Any HTTP answer, an error status included, means the far side was
reached, so the link is up; a connection error or no answer within
``inquisitor.uplink_check_timeout_s`` means it is down. Each check opens a connection of
its own: a pooled one could outlive the link and say nothing of it.

An ``https`` URL whose certificate this host does not trust (a cluster API signed by
the cluster's own CA) also counts as up: the far side completed a TLS handshake, which
is all a reachability check asks, and nothing is sent to it or read from it.
"""

from __future__ import annotations

import ssl

import httpx

from stoic.logging import get_logger

log = get_logger(__name__)


class HttpUplinkCheck:
    """Up when ``url`` answers within ``timeout_s`` (module docstring)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def __call__(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                await client.get(self.url)
        except httpx.ConnectError as exc:
            if _untrusted_certificate(exc):
                return True  # the far side answered the handshake (module docstring)
            log.debug("uplink check failed", url=self.url, error=repr(exc))
            return False
        except httpx.HTTPError as exc:
            log.debug("uplink check failed", url=self.url, error=repr(exc))
            return False
        return True


def _untrusted_certificate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
