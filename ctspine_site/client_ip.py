"""The client's address, as login throttling (django-axes) counts failures by it.

Behind a reverse proxy every request reaches Django from the proxy's address (``REMOTE_ADDR``):
throttled per address, anyone could lock any user out for everyone. With
``CTSPINE_TRUSTED_PROXIES`` = N (1 for the nginx of ``docker-compose.yml``), the address is taken
from ``X-Forwarded-For`` instead: each proxy appends the address it received the request from, so
the N-th entry from the right is what the outermost trusted proxy saw. Entries further left were
written by the client and are ignored (trusting them would let a client pick a fresh address for
every guess).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings


def client_ip(request) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or behind ``CTSPINE_TRUSTED_PROXIES`` proxies the
    address the outermost one received the request from (``REMOTE_ADDR`` when the header does not
    hold that many valid entries, e.g. a request that did not come through the proxies)."""
    remote = request.META.get("REMOTE_ADDR")
    proxies = int(getattr(settings, "CTSPINE_TRUSTED_PROXIES", 0))
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < proxies:
        return remote
    candidate = hops[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote
