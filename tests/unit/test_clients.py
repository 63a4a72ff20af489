"""Who the client is behind trusted proxies (signaling/clients.py): pure logic."""

from __future__ import annotations

import pytest

from signaling.clients import AddressSet, client_address

PROXIES = AddressSet(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


@pytest.mark.parametrize("peer, forwarded, client", [
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # an untrusted peer is the client, whatever it claims
    ("127.0.0.1", None, "127.0.0.1"),  # the proxy itself, no header
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # two proxies in a row
    ("127.0.0.1", "192.0.2.66, 198.51.100.1", "198.51.100.1"),  # a spoofed hop before the real client
    ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),  # only trusted hops: the chain's origin
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),  # malformed: believe nothing beyond the proxy
    ("127.0.0.1", "198.51.100.1, garbage", "127.0.0.1"),
    ("fd00::1", "2001:db8::7", "2001:db8::7"),
    ("::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),  # a v4-mapped peer of a dual-stack socket
    (None, None, "unknown"),
])
def test_client_address(peer: str | None, forwarded: str | None, client: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == client


def test_nothing_is_trusted_by_default_and_huge_headers_are_cut() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", AddressSet([])) == "127.0.0.1"
    chain = ", ".join(["10.0.0.1"] * 10000) + ", 198.51.100.1"
    assert client_address("127.0.0.1", chain, PROXIES) == "198.51.100.1"
    assert "198.51.100.77" in AddressSet(["198.51.100.0/24"]) and "198.51.101.1" not in AddressSet(["198.51.100.0/24"])
    assert "garbage" not in PROXIES and None not in PROXIES
