"""Relay errors: each is a refusal made on purpose, with a reason a client can act on.

Signaling maps each class to one HTTP status and error code (``signaling.errors.RELAY_ERRORS``).
"""


class RelayError(Exception):
    """Base class for refusals the relay makes on purpose."""


# -- the request itself is unusable (400, 422) --------------------------------------------------------


class BadOffer(RelayError):
    """The SDP offer cannot be used; the message says why."""


class NoCommonCodec(RelayError):
    """The offer lists none of the codecs this room (or gateway) uses."""


class BadCandidate(RelayError):
    """A trickled ICE candidate (or the fragment holding it) cannot be parsed or used."""


class TooManyCandidates(RelayError):
    """More remote candidates than one PATCH or one session may carry."""


class IceRestartUnsupported(RelayError):
    """A trickle PATCH with a new ufrag: an ICE restart, which the gateway does not offer."""


# -- who may do what (403, 404) -----------------------------------------------------------------------


class Banned(RelayError):
    """The identity is banned from this room."""


class NotOnMic(RelayError):
    """A guest grant, but the room has not (or no longer) put this identity on mic."""


class PkLinkEnded(RelayError):
    """A PK partner's grant to view a room whose link with it has ended."""


class RoomNotLive(RelayError):
    """The room does not exist or has no host (and never had one recently)."""


class UnknownSession(RelayError):
    """No such session (ended, or never existed)."""


# -- state that changed or conflicts (409) ------------------------------------------------------------


class HostAlreadyLive(RelayError):
    """Another host identity is publishing in this room."""


class GuestSlotsFull(RelayError):
    """The room already has the configured number of guests on mic."""


class RoomClosed(RelayError):
    """The room was closed while the request was in flight."""


class SessionReplaced(RelayError):
    """A newer session of the same identity took over while this one negotiated."""


class PkBusy(RelayError):
    """A room of a PK request is already linked (or is the same room)."""


# -- the gateway cannot take more now (503) -----------------------------------------------------------


class CapacityExceeded(RelayError):
    """A configured limit (rooms, viewers per room, viewers per process, media ports) is reached."""


class Overloaded(RelayError):
    """The event loop lags behind: new sessions are refused until it catches up."""
