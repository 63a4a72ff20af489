"""Who may do what over room events (roles as a socket acts with them now, see ``Sender.role``)."""

from __future__ import annotations

from signaling.events.ports import Sender, StageRoom, StageRooms
from signaling.events.protocol import ClientFrame, ProtocolError

HOSTS = ("host", "admin")  # PK battles, inviting guests, and what the host is told
MODERATORS = ("host", "guest", "admin")  # mute, unmute, kick
BANNERS = ("host", "admin")


def require_host(rooms: StageRooms, sender: Sender, frame: ClientFrame) -> StageRoom:
    """The sender's room, if the sender acts as its host (or an admin); else ``not_allowed``."""
    room = rooms.get(sender.room)
    if sender.role not in HOSTS or room is None:
        raise ProtocolError("not_allowed", f"only the host may {frame.type.replace('_', ' ')}", frame.ref)
    return room
