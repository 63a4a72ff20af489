"""Relay errors; signaling maps each to an HTTP or WebSocket code."""


class RelayError(Exception):
    """Base class for refusals the relay makes on purpose."""


class HostAlreadyLive(RelayError):
    """Another host identity is publishing in this room."""


class RoomNotLive(RelayError):
    """The room does not exist or has no host (and never had one recently)."""


class CapacityExceeded(RelayError):
    """A configured limit (rooms, viewers per room) is reached."""


class RoomClosed(RelayError):
    """The room was closed while the request was in flight."""


class GuestSlotsFull(RelayError):
    """The room already has the configured number of guests on mic."""


class PkBusy(RelayError):
    """A room of a PK request is already linked (or is the same room)."""
