import pytest

from relay.config import LimitsConfig
from relay.errors import BadCandidate, TooManyCandidates
from relay.offer import parse_trickle
from signaling.context import IceServer, link_headers
from signaling.ratelimit import RateLimiter
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
    fragment = parse_trickle(
        "a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 3f1c.local 5001 typ host\r\na=end-of-candidates\r\n", LimitsConfig())
    assert (fragment.ufrag, fragment.pwd, fragment.end) == ("abcd", "secret", True)
    assert [(c.ip, c.port) for c in fragment.candidates] == [("127.0.0.1", 5000)], "mDNS names are skipped"
    with pytest.raises(BadCandidate):
        parse_trickle("{json: 1}", LimitsConfig())


@pytest.mark.parametrize("line", [
    "a=candidate:1 1 udp 2130706431 example.com 5000 typ host",  # a name the agent would resolve
    "a=candidate:1 1 udp 2130706431 127.0.0.1 0 typ host",
    "a=candidate:1 9 udp 2130706431 127.0.0.1 5000 typ host",
    "a=candidate:1 1 sctp 2130706431 127.0.0.1 5000 typ host",
    "a=candidate:garbage",
])
def test_unusable_candidates_are_refused_with_a_reason(line):
    with pytest.raises(BadCandidate):
        parse_trickle(line, LimitsConfig())


def test_a_patch_may_carry_only_so_many_candidates():
    lines = "".join(f"a=candidate:{i} 1 udp 1 127.0.0.1 {5000 + i} typ host\r\n" for i in range(21))
    with pytest.raises(TooManyCandidates):
        parse_trickle(lines, LimitsConfig(max_candidates_per_patch=20))


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
