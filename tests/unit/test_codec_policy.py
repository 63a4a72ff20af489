"""Which codecs a session may use: pure functions of the offer, the room and the configuration."""

import pytest

from relay.codec_policy import check_ingest, ingest_preferences, playback_plan, playback_preferences
from relay.errors import NoCommonCodec
from relay.offer import OfferedMedia
from relay.ports import CodecInfo

CONFIGURED = {"video": ("VP8", "H264"), "audio": ("opus",)}
VP8 = CodecInfo("video/VP8", 90000)
H264 = CodecInfo("video/H264", 90000)
OPUS = CodecInfo("audio/opus", 48000, 2)


def media(kind: str, *codecs: str) -> OfferedMedia:
    return OfferedMedia(kind, kind[0], "sendrecv", codecs)


@pytest.mark.parametrize(("room", "as_guest", "viewers", "video"), [
    ({}, False, False, ["VP8", "H264"]),  # a new room: the configured preference
    ({"video": H264}, False, False, ["VP8", "H264"]),  # nobody negotiated the old codec: free again
    ({"video": H264}, False, True, ["video/H264"]),  # waiting viewers hold a returning host to it
    ({"video": H264}, True, False, ["video/H264", "VP8"]),  # a guest is steered to it, others allowed
    ({"video": VP8}, True, True, ["video/VP8", "H264"]),
])
def test_ingest_preferences(room, as_guest, viewers, video):
    assert ingest_preferences(CONFIGURED, room, as_guest=as_guest, room_has_viewers=viewers)["video"] == video


def test_an_ingest_offer_needs_an_accepted_codec_for_every_track():
    check_ingest([media("video", "video/H264"), media("audio", "audio/opus")], {"video": ["VP8", "H264"],
                                                                               "audio": ["opus"]})
    with pytest.raises(NoCommonCodec, match="this room needs H264"):
        check_ingest([media("video", "video/VP8")], {"video": ["video/H264"], "audio": ["opus"]})


def test_the_first_mline_of_a_kind_shows_the_host_and_others_are_costream_slots():
    offer = [media("video", "video/VP8"), media("audio", "audio/opus"), media("video", "video/H264"),
             media("audio", "audio/opus"), media("video", "video/VP8")]
    assert playback_plan(offer, {"video": VP8, "audio": OPUS}, max_slots=2) == [
        ("video", 0), ("audio", 0), ("video", 1), ("audio", 1)]  # the third video is past max_slots


def test_slot_zero_must_share_the_hosts_codec_but_a_costream_slot_need_not():
    with pytest.raises(NoCommonCodec, match="VP8"):
        playback_plan([media("video", "video/H264")], {"video": VP8}, max_slots=4)
    plan = playback_plan([media("video", "video/VP8"), media("video", "video/H264")], {"video": VP8}, max_slots=4)
    assert plan == [("video", 0), ("video", 1)]


def test_an_offer_with_nothing_for_the_rooms_tracks_is_refused():
    with pytest.raises(NoCommonCodec, match="audio, video"):
        playback_plan([OfferedMedia("application", "d", "sendrecv", ())], {"video": VP8, "audio": OPUS}, 4)


def test_playback_preference_puts_the_hosts_codec_first():
    assert playback_preferences(H264, ["VP8", "H264"]) == ["video/H264", "VP8"]
