"""Failed logins to the operator page, throttled per client with exponential back-off.

Without it a client could offer the login form 300 tokens in 4.5 s. Now each client
may be wrong ``ui.login_free_failures`` times; each further wrong token makes it wait
``ui.login_backoff_s``, doubling with every one after, up to ``ui.login_backoff_max_s``.
While it waits, every attempt is answered ``429`` with ``Retry-After`` *before* the
token is looked at (a right token too: otherwise the wait would not slow a guesser)
and does not count as a failure. A successful login, or ``ui.login_failure_memory_s``
without a wrong token, forgets the client's failures.

A client is its IP address; IPv6 clients by their /64, since one host commonly holds a
whole /64. Behind a reverse proxy every client is the proxy, so a guesser there makes
the operator wait too: put the page behind the proxy's own login then.

The table is bounded (:data:`MAX_CLIENTS`, least recently failed first out); an
attacker with more addresses than that can make the daemon forget some of its own
failures, never another client's wait longer.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Backoff:
    """The schedule (``ui.login_*`` settings)."""

    free_failures: int
    first_s: float
    max_s: float
    memory_s: float

    def wait_s(self, failures: int) -> float:
        """The wait imposed after a client's ``failures``-th wrong token in a row."""
        beyond = failures - self.free_failures
        if beyond <= 0:
            return 0.0
        return min(self.max_s, self.first_s * 2.0 ** min(beyond - 1, 64))


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    until: float


def client_key(host: str | None) -> str:
    """The address a client's failures are counted under."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Per-client failure counts and waits. Instants come from the caller (the
    controller's injected clock). Not thread-safe: used on the event loop only."""

    def __init__(self, backoff: Backoff, *, capacity: int = MAX_CLIENTS) -> None:
        self.backoff = backoff
        self._capacity = capacity
        self._clients: OrderedDict[str, _Record] = OrderedDict()

    def _record(self, client: str, now: float) -> _Record | None:
        r = self._clients.get(client)
        if r is not None and not 0 <= now - r.last_failure <= self.backoff.memory_s:
            del self._clients[client]
            return None
        return r

    def retry_after_s(self, client: str, now: float) -> float:
        """How long ``client`` must still wait before its next attempt (0: it may try)."""
        r = self._record(client, now)
        return 0.0 if r is None else max(r.until - now, 0.0)

    def failed(self, client: str, now: float) -> float:
        """Count a wrong token from ``client``; the wait it now has (0 while free)."""
        r = self._record(client, now)
        failures = 1 if r is None else r.failures + 1
        wait = self.backoff.wait_s(failures)
        self._clients.pop(client, None)
        while len(self._clients) >= self._capacity:
            self._clients.popitem(last=False)
        self._clients[client] = _Record(failures, now, now + wait)
        return wait

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
