import pytest

from signaling.context import IceServer, link_headers
from signaling.errors import HttpError
from signaling.ratelimit import RateLimiter
from signaling.sdp import parse_trickle_fragment
from tests.unit.fakes import FakeClock


class Ctx:
    def __init__(self, servers):
        self.ice_servers = servers


def test_link_headers_follow_rfc_9725():
    links = link_headers(Ctx((IceServer(("stun:stun.example.net",)),
                              IceServer(("turn:turn.example.net?transport=udp",), "user", "pass"))))
    assert links[0] == '<stun:stun.example.net>; rel="ice-server"'
    assert links[1] == ('<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; '
                        'credential="pass"; credential-type="password"')


def test_trickle_fragment_parsing():
    ufrag, pwd, candidates, end = parse_trickle_fragment(
        "a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")
    assert (ufrag, pwd, end) == ("abcd", "secret", True)
    assert candidates == ["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"]
    with pytest.raises(HttpError):
        parse_trickle_fragment("{json: 1}")


def test_rate_limiter_allows_bursts_then_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.allow("a") == pytest.approx(0.5)
    assert limiter.allow("b") == 0, "other clients have their own bucket"
    clock.now += 0.5
    assert limiter.allow("a") == 0


def test_rate_limiter_forgets_old_clients():
    limiter = RateLimiter(rate=1, burst=1, max_keys=2, clock=FakeClock())
    for key in "abc":
        limiter.allow(key)
    assert limiter.allow("a") == 0, "a was evicted and starts with a full bucket"
