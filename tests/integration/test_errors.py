"""Every refusal of WHIP/WHEP has a precise status and JSON error, and hurts no live session."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aiohttp
import pytest
from aioice import stun
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from multidict import CIMultiDict

from tests.integration.conftest import GatewayProcess, dev_token
from tests.integration.peers import LOOPBACK, Host, MovingBarTrack, Viewer, post_sdp
from tests.integration.test_forwarding import close_all

CONFIG = """
[limits]
max_rooms = 2
max_viewers_per_room = 1
max_body_bytes = 16384
retry_after = 7
[rooms]
empty_room_grace_s = 0.5
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = GatewayProcess([], CONFIG, tmp_path_factory.mktemp("gw-errors"))
    yield proc
    proc.stop()


async def offer_sdp(kinds: tuple[str, ...] = ("video", "audio"), direction: str = "sendonly") -> str:
    pc = RTCPeerConnection(LOOPBACK)
    for kind in kinds:
        if direction == "sendonly" and kind == "video":
            pc.addTransceiver(MovingBarTrack(), direction="sendonly")
        else:
            pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def expect_error(response_info: tuple[int, str, CIMultiDict[str]], status: int, code: str) -> CIMultiDict[str]:
    got_status, body, headers = response_info
    assert got_status == status, f"expected {status} {code}, got {got_status}: {body}"
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    assert f'"code": "{code}"' in body, body
    assert "Traceback" not in body
    return headers


async def wait_for_free_room_slot(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    """Rooms of earlier tests expire after the 0.5 s empty-room grace; the HTTP API has no event."""
    token = await dev_token(http, gateway.base, "any", "admin")
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        async with http.get(gateway.base + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
            rooms = (await r.json())["rooms"]
        if len(rooms) < 2:
            return
        assert asyncio.get_running_loop().time() < deadline, f"rooms never expired: {rooms}"
        await asyncio.sleep(0.1)


async def test_whip_without_token_is_401(gateway, http):
    async with http.post(f"{gateway.base}/whip/a", data=await offer_sdp(),
                         headers={"Content-Type": "application/sdp"}) as r:
        await expect_error((r.status, await r.text(), CIMultiDict(r.headers)), 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_whip_with_garbage_token_is_401(gateway, http):
    await expect_error(await post_sdp(http, f"{gateway.base}/whip/a", "not.a.jwt", await offer_sdp()),
                       401, "unauthorized")


async def test_whip_with_token_for_another_room_is_403(gateway, http):
    token = await dev_token(http, gateway.base, "other", "host")
    await expect_error(await post_sdp(http, f"{gateway.base}/whip/a", token, await offer_sdp()), 403, "forbidden")


async def test_whip_with_viewer_token_is_403(gateway, http):
    token = await dev_token(http, gateway.base, "a", "viewer")
    await expect_error(await post_sdp(http, f"{gateway.base}/whip/a", token, await offer_sdp()), 403, "forbidden")


async def test_whip_wrong_content_type_is_415(gateway, http):
    token = await dev_token(http, gateway.base, "a", "host")
    async with http.post(f"{gateway.base}/whip/a", data="{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token}"}) as r:
        await expect_error((r.status, await r.text(), CIMultiDict(r.headers)), 415, "unsupported_media_type")


async def test_an_offer_arriving_in_many_pieces_is_read_whole(gateway, http):
    """A body is read to its end, not as far as the first read got: an 8-m-line offer (a player with co-stream
    slots, ~20 KB) arriving in pieces was cut off and refused as bad SDP whenever its tail was still on the way."""
    host = Host(gateway.base, "pieces", await dev_token(http, gateway.base, "pieces", "host"))
    await host.publish(http)
    viewer = RTCPeerConnection(LOOPBACK)
    try:
        for kind in ("video",) * 4 + ("audio",) * 4:
            viewer.addTransceiver(kind, direction="recvonly")
        await viewer.setLocalDescription(await viewer.createOffer())
        body = viewer.localDescription.sdp.encode()

        async def pieces():  # type: ignore[no-untyped-def]
            for start in range(0, len(body), 700):
                yield body[start:start + 700]
                await asyncio.sleep(0.005)  # the network's pace between segments, not a synchronization

        token = await dev_token(http, gateway.base, "pieces", "viewer")
        async with http.post(f"{gateway.base}/whep/pieces", data=pieces(), headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
        async with http.delete(gateway.base + location, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
    finally:
        await viewer.close()
        await host.stop(http)
    # max_rooms = 2: the next tests need this room gone (rooms.empty_room_grace_s after its last session).
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with http.get(f"{gateway.base}/rooms/pieces") as r:
            if r.status == 404:
                break
        assert asyncio.get_running_loop().time() < deadline, "room 'pieces' did not close"
        await asyncio.sleep(0.1)


async def test_whip_oversized_body_is_413(gateway, http):
    token = await dev_token(http, gateway.base, "a", "host")
    big = (await offer_sdp()) + "a=x-padding:" + "x" * 20000 + "\r\n"
    await expect_error(await post_sdp(http, f"{gateway.base}/whip/a", token, big), 413, "body_too_large")


@pytest.mark.parametrize("sdp, why", [
    ("hello", "must start with 'v=0'"),
    ("", "empty SDP"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no audio or video"),
])
async def test_whip_malformed_sdp_is_400_with_reason(gateway, http, sdp, why):
    token = await dev_token(http, gateway.base, "a", "host")
    status, body, _ = await post_sdp(http, f"{gateway.base}/whip/a", token, sdp)
    assert status == 400 and why in body, body


async def test_whip_recvonly_offer_is_400(gateway, http):
    token = await dev_token(http, gateway.base, "a", "host")
    status, body, _ = await post_sdp(http, f"{gateway.base}/whip/a", token,
                                     await offer_sdp(("video",), "recvonly"))
    assert status == 400 and "needs the client to send" in body, body


async def test_whip_unsupported_codec_is_400(gateway, http):
    token = await dev_token(http, gateway.base, "a", "host")
    sdp = (await offer_sdp(("audio",), "sendonly")).replace("opus/48000/2", "G722/8000")
    sdp = re.sub(r"a=rtpmap:(\d+) (?!G722)\S+\r\n", "", sdp)
    status, body, _ = await post_sdp(http, f"{gateway.base}/whip/a", token, sdp)
    assert status == 400 and "no_common_codec" in body, body


async def test_unknown_session_is_404(gateway, http):
    token = await dev_token(http, gateway.base, "a", "host")
    async with http.delete(f"{gateway.base}/whip/a/deadbeef", headers={"Authorization": f"Bearer {token}"}) as r:
        await expect_error((r.status, await r.text(), CIMultiDict(r.headers)), 404, "unknown_session")


async def test_whep_for_a_room_that_never_went_live_is_404(gateway, http):
    token = await dev_token(http, gateway.base, "nobody", "viewer")
    headers = await expect_error(
        await post_sdp(http, f"{gateway.base}/whep/nobody", token, await offer_sdp(direction="recvonly")),
        404, "room_not_live")
    assert headers["Retry-After"] == "7"


async def test_bad_room_name_is_400(gateway, http):
    token = await dev_token(http, gateway.base, "a", "viewer")
    await expect_error(await post_sdp(http, f"{gateway.base}/whep/bad%20name%21", token, await offer_sdp()),
                       400, "bad_room_name")
    async with http.get(f"{gateway.base}/rooms/bad%20name%21") as r:
        await expect_error((r.status, await r.text(), CIMultiDict(r.headers)), 400, "bad_room_name")


async def test_refusals_around_a_live_room(gateway, http):
    """409 second host, 503 at room and viewer limits, 400 codec mismatch, 412 ETag;
    the live host and viewer keep streaming through all of it."""
    host = Host(gateway.base, "live", await dev_token(http, gateway.base, "live", "host", "alice"))
    await host.publish(http)
    viewer = Viewer(gateway.base, "live", await dev_token(http, gateway.base, "live", "viewer"))
    await viewer.watch(http)
    second_room_host = None
    try:
        await asyncio.wait_for(viewer.first_video.wait(), 10)

        intruder = await dev_token(http, gateway.base, "live", "host", "mallory")
        await expect_error(await post_sdp(http, f"{gateway.base}/whip/live", intruder, await offer_sdp()),
                           409, "host_already_live")

        # max_viewers_per_room = 1
        another = await dev_token(http, gateway.base, "live", "viewer")
        headers = await expect_error(
            await post_sdp(http, f"{gateway.base}/whep/live", another, await offer_sdp(direction="recvonly")),
            503, "capacity")
        assert headers["Retry-After"] == "7"

        # max_rooms = 2: a second room fits, a third does not
        second_room_host = Host(gateway.base, "second", await dev_token(http, gateway.base, "second", "host"))
        await second_room_host.publish(http)
        third = await dev_token(http, gateway.base, "third", "host")
        headers = await expect_error(await post_sdp(http, f"{gateway.base}/whip/third", third, await offer_sdp()),
                                     503, "capacity")
        assert headers["Retry-After"] == "7"

        # a viewer that can only take H264 cannot watch a VP8 host
        await viewer.stop(http)
        pc = RTCPeerConnection(LOOPBACK)
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType == "video/H264"])
        await pc.setLocalDescription(await pc.createOffer())
        status, body, _ = await post_sdp(http, f"{gateway.base}/whep/live",
                                         await dev_token(http, gateway.base, "live", "viewer"),
                                         pc.localDescription.sdp)
        await pc.close()
        assert status == 400 and "no_common_codec" in body and "VP8" in body, body

        # PATCH with a stale ETag
        viewer = Viewer(gateway.base, "live", await dev_token(http, gateway.base, "live", "viewer"))
        await viewer.watch(http)
        async with http.patch(gateway.base + viewer.location, data="a=end-of-candidates\r\n", headers={
                "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": '"stale"',
                "Authorization": f"Bearer {viewer.token}"}) as r:
            await expect_error((r.status, await r.text(), CIMultiDict(r.headers)), 412, "etag_mismatch")

        # nothing above disturbed the live room
        await viewer.wait_frames(30, 10)
    finally:
        peers = [p for p in (host, viewer, second_room_host) if p is not None]
        await asyncio.gather(*(p.stop(http) for p in peers), return_exceptions=True)


async def test_trickled_candidates_connect_a_host_that_offered_none(gateway, http):
    """GStreamer-style WHIP: offer without candidates, then PATCH them (RFC 8840 fragment)."""
    await wait_for_free_room_slot(gateway, http)
    token = await dev_token(http, gateway.base, "trickle", "host")
    host = Host(gateway.base, "trickle", token)
    host.pc.addTransceiver(MovingBarTrack(), direction="sendonly")
    await host.pc.setLocalDescription(await host.pc.createOffer())
    full = host.pc.localDescription.sdp
    candidates = [line for line in full.splitlines() if line.startswith("a=candidate:")]
    bare = "".join(line + "\r\n" for line in full.splitlines()
                   if not line.startswith(("a=candidate:", "a=end-of-candidates")))
    status, answer, headers = await post_sdp(http, f"{gateway.base}/whip/trickle", token, bare)
    assert status == 201, answer
    assert "a=setup:passive" in answer, "gateway must be the DTLS server for WHIP"
    host.location = headers["Location"]
    await host.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    ufrag = next(line for line in full.splitlines() if line.startswith("a=ice-ufrag:"))
    pwd = next(line for line in full.splitlines() if line.startswith("a=ice-pwd:"))
    fragment = "\r\n".join([ufrag, pwd, "m=video 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", *candidates,
                            "a=end-of-candidates"]) + "\r\n"
    viewer = None
    try:
        async with http.patch(gateway.base + host.location, data=fragment, headers={
                "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": headers["ETag"],
                "Authorization": f"Bearer {token}"}) as r:
            assert r.status == 204, await r.text()
        viewer = Viewer(gateway.base, "trickle", await dev_token(http, gateway.base, "trickle", "viewer"))
        await viewer.watch(http)
        await asyncio.wait_for(viewer.first_video.wait(), 10)
    finally:
        await asyncio.gather(*(p.stop(http) for p in (host, viewer) if p is not None), return_exceptions=True)


async def test_cors_preflight_and_exposed_headers(gateway, http):
    async with http.options(f"{gateway.base}/whip/a", headers={
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST"}) as r:
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Accept-Post"] == "application/sdp"
    async with http.post(f"{gateway.base}/whip/a", data="x", headers={
            "Origin": "http://example.test", "Content-Type": "application/sdp"}) as r:
        assert "Location" in r.headers["Access-Control-Expose-Headers"]


async def test_dev_token_route_rejects_bad_role(gateway, http):
    async with http.get(f"{gateway.base}/dev/token?room=a&role=king") as r:
        assert r.status == 400 and "bad_role" in await r.text()


_ = aiohttp


async def test_two_offers_of_one_host_at_once_never_answer_500(gateway, http):
    """A host that retries while its first offer is still negotiating: one wins, the other gets 409."""
    await wait_for_free_room_slot(gateway, http)
    token = await dev_token(http, gateway.base, "twice", "host", "same-host")
    offers = [await offer_sdp(), await offer_sdp()]
    results = await asyncio.gather(*(post_sdp(http, f"{gateway.base}/whip/twice", token, o) for o in offers))
    statuses = sorted(status for status, _, _ in results)
    assert 500 not in statuses and 201 in statuses, results
    for status, body, headers in results:
        assert status == 201 or '"code": "session_replaced"' in body, body
        if status == 201:  # the offers came from closed peers: end the session rather than wait it out
            async with http.delete(gateway.base + headers["Location"], headers={"Authorization": f"Bearer {token}"}):
                pass


async def test_viewers_negotiating_together_past_the_rooms_cap_are_told_it_is_full(gateway, http):
    """They all pass the first check; the room fills while they negotiate: a 503 capacity (in a cluster the
    viewer then goes to an edge), not a 409 saying the room changed."""
    await wait_for_free_room_slot(gateway, http)
    host = Host(gateway.base, "rush", await dev_token(http, gateway.base, "rush", "host", "rush-host"))
    await host.publish(http)
    try:
        tokens = [await dev_token(http, gateway.base, "rush", "viewer", f"rush{i}") for i in range(4)]
        offers = [await offer_sdp(direction="recvonly") for _ in tokens]
        results = await asyncio.gather(*(post_sdp(http, f"{gateway.base}/whep/rush", token, offer)
                                         for token, offer in zip(tokens, offers, strict=True)))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [201, 503, 503, 503], [(status, body[:120]) for status, body, _ in results]
        for status, body, headers in results:
            if status == 503:
                assert '"code": "capacity"' in body, body
            else:
                token = tokens[[r[0] for r in results].index(201)]
                async with http.delete(gateway.base + headers["Location"],
                                       headers={"Authorization": f"Bearer {token}"}):
                    pass
    finally:
        await close_all(http, host)


class HeldStunServer(asyncio.DatagramProtocol):
    """A STUN server on 127.0.0.1 that holds every binding request until released, then answers them.

    A gateway configured with it cannot finish gathering ICE candidates, so it cannot write its answer
    to an offer, until the test says so (aioice gives up on the server after 5 s).
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requested = asyncio.Event()
        self.released = False
        self._held: list[tuple[stun.Message, tuple[str, int]]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return
        if self.released:
            self._answer(request, addr)
        else:
            self._held.append((request, addr))
            self.requested.set()

    def _answer(self, request: stun.Message, addr: tuple[str, int]) -> None:
        response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)

    def release(self) -> None:
        self.released = True
        for request, addr in self._held:
            self._answer(request, addr)
        self._held.clear()


async def test_viewer_arriving_while_the_host_negotiates_is_told_to_wait(http, tmp_path):
    """While the host's offer is being answered the room is not live yet: 404 + Retry-After, not a codec error.

    "Negotiating" is the span between the host's session claiming the room and its tracks being published,
    which happens once the gateway has its answer. A gateway whose STUN server holds the binding request
    is provably inside that span: it is gathering candidates for the host's answer. The viewer is sent
    then, and the host is released only after the viewer's 404 came back. Then a viewer gets 201.
    """
    loop = asyncio.get_running_loop()
    transport, held_stun = await loop.create_datagram_endpoint(HeldStunServer, local_addr=("127.0.0.1", 0))
    stun_port = transport.get_extra_info("sockname")[1]
    config = f'[limits]\nretry_after = 7\n[[ice.servers]]\nurls = ["stun:127.0.0.1:{stun_port}"]\n'
    gateway = await asyncio.to_thread(GatewayProcess, [], config, tmp_path)
    host: Host | None = None
    viewer: Viewer | None = None
    publishing: asyncio.Future[None] | None = None
    try:
        host = Host(gateway.base, "early", await dev_token(http, gateway.base, "early", "host", "alice"))
        viewer_token = await dev_token(http, gateway.base, "early", "viewer")
        admin = {"Authorization": f"Bearer {await dev_token(http, gateway.base, 'any', 'admin')}"}
        viewer_sdp = await offer_sdp(direction="recvonly")
        publishing = asyncio.ensure_future(host.publish(http))  # POST, then apply the answer; asserts 201
        try:
            await asyncio.wait_for(held_stun.requested.wait(), 10)
        except TimeoutError:
            raise AssertionError("the gateway never asked its STUN server while answering the host") from None
        async with http.get(gateway.base + "/api/stats", headers=admin) as r:
            rooms = {room["room"]: room for room in (await r.json())["rooms"]}
        assert rooms["early"]["host"] == "alice" and not rooms["early"]["live"], rooms  # claimed, not published

        headers = await expect_error(await post_sdp(http, f"{gateway.base}/whep/early", viewer_token, viewer_sdp),
                                     404, "room_not_live")
        assert headers["Retry-After"] == "7", headers
        assert not publishing.done(), "the host's answer was no longer held when the viewer was answered"

        held_stun.release()
        await asyncio.wait_for(publishing, 10)
        viewer = Viewer(gateway.base, "early", viewer_token)
        await viewer.watch(http)  # asserts 201
        try:
            await asyncio.wait_for(viewer.first_video.wait(), 10)
        except TimeoutError:
            raise AssertionError("the viewer admitted after the host went live got no video") from None
    finally:
        held_stun.release()
        if publishing is not None:  # let the host get its session URL, so it can end it cleanly
            await asyncio.wait_for(asyncio.gather(publishing, return_exceptions=True), 10)
        await close_all(http, *(p for p in (viewer, host) if p is not None))
        await asyncio.to_thread(gateway.stop)
        transport.close()

