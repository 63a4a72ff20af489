"""The real gateway, deliberately broken: it drops 5 % of video frames (every packet of them).

For the test that a broken gateway makes the load verdict FAIL. Frames are picked by RTP
timestamp (a hash), so every packet of a dropped frame goes, and viewers see what a real
forwarding bug would cause: a missing frame, a broken picture until the next keyframe.
"""

from __future__ import annotations

import sys

from relay.publication import Publication

DROP_PERCENT = 5
_original = Publication.on_rtp


def _broken_on_rtp(self: Publication, ssrc: int, seq: int, timestamp: int, marker: bool, payload: bytes,
                   arrival: float) -> None:
    if self.kind == "video" and (timestamp * 2654435761 >> 7) % 100 < DROP_PERCENT:
        return
    _original(self, ssrc, seq, timestamp, marker, payload, arrival)


Publication.on_rtp = _broken_on_rtp  # type: ignore[method-assign]


def main() -> int:
    import gateway.cli

    return gateway.cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
