"""Login throttling behind the reverse proxy (issue 14, item 12): with CTSPINE_TRUSTED_PROXIES
the lock-out is per client address from X-Forwarded-For, not one for everyone behind nginx's
address, and a client cannot dodge it by writing addresses of its own into the header."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

NGINX = "172.18.0.5"  # every request reaches gunicorn from the proxy's address


def through_nginx(client_address: str, forwarded_by_client: str = "") -> Client:
    """A client whose requests come through nginx: nginx appends the address it saw."""
    forwarded = (
        f"{forwarded_by_client}, {client_address}" if forwarded_by_client else client_address
    )
    return Client(REMOTE_ADDR=NGINX, HTTP_X_FORWARDED_FOR=forwarded)


def log_in(client: Client, password: str) -> int:
    return client.post("/accounts/login/", {"username": "alice", "password": password}).status_code


def fail_three_times(client: Client) -> None:
    for _ in range(3):
        assert log_in(client, "guess") in (200, 429)


def test_behind_the_proxy_two_clients_are_locked_out_separately(user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.CTSPINE_TRUSTED_PROXIES = 1
    attacker, alice = through_nginx("203.0.113.7"), through_nginx("198.51.100.20")
    fail_three_times(attacker)
    assert log_in(attacker, "alice-password") == 429  # locked out
    assert log_in(alice, "alice-password") == 302  # alice, from elsewhere, is not


def test_addresses_the_client_writes_itself_are_ignored(user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.CTSPINE_TRUSTED_PROXIES = 1
    for forged in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # a new address per guess ...
        assert log_in(through_nginx("203.0.113.7", forwarded_by_client=forged), "guess") in (
            200,
            429,
        )
    # ... all counted against the address nginx saw.
    assert (
        log_in(through_nginx("203.0.113.7", forwarded_by_client="10.0.0.4"), "alice-password")
        == 429
    )


def test_without_the_setting_everyone_behind_the_proxy_shares_one_lock_out(user, settings):
    # What the setting prevents: the attacker's failures lock alice out too.
    settings.AXES_FAILURE_LIMIT = 3
    settings.CTSPINE_TRUSTED_PROXIES = 0
    attacker, alice = through_nginx("203.0.113.7"), through_nginx("198.51.100.20")
    fail_three_times(attacker)
    assert log_in(alice, "alice-password") == 429


def test_a_request_not_through_the_proxies_counts_by_its_own_address(user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.CTSPINE_TRUSTED_PROXIES = 1
    fail_three_times(Client(REMOTE_ADDR="192.0.2.1"))  # no X-Forwarded-For: REMOTE_ADDR
    assert log_in(Client(REMOTE_ADDR="192.0.2.1"), "alice-password") == 429
    assert log_in(through_nginx("garbage"), "alice-password") == 302  # not an address: nginx's
