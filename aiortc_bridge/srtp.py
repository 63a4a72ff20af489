"""SRTP with buffers sized for the packet, replacing pylibsrtp's fixed 1500-byte buffer.

pylibsrtp's ``Session`` copies every packet into one 1500-byte buffer: ``protect`` refuses RTP over
1356 bytes (1500 minus the 144-byte trailer allowance) and ``unprotect`` raises ``ValueError`` for a
datagram over 1500 bytes, which aiortc's DTLS loop does not catch. Encoders legally send up to the
path MTU, so both directions get a buffer of their own here, large enough for any datagram the
media ports accept plus the trailer, and a right-sized temporary one beyond that.

The libsrtp context itself stays pylibsrtp's (its lifetime is tied to the ``Session`` object kept
here); only the buffer and the length cell are ours, allocated once per context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pylibsrtp
from pylibsrtp import _binding

_ffi: Any = _binding.ffi
_lib: Any = _binding.lib

# libsrtp's worst-case trailers (tag + MKI; SRTCP adds its 4-byte index).
RTP_TRAILER = 16 + 128
RTCP_TRAILER = 4 + 16 + 128
# The buffer every context keeps: the largest datagram a media port accepts, with room to spare.
BUFFER_SIZE = 4096


class SrtpContext:
    """One direction of one DTLS transport's SRTP, with the same methods as ``pylibsrtp.Session``.

    Errors are ``pylibsrtp.Error`` (what aiortc already catches), never ``ValueError``.
    """

    __slots__ = ("_session", "_srtp", "_cdata", "buffer", "_length")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # owns the libsrtp context (freed when it is collected)
        self._srtp = session._srtp[0]
        self._cdata = _ffi.new("char[]", BUFFER_SIZE)
        self.buffer: Any = _ffi.buffer(self._cdata)
        self._length = _ffi.new("int *")

    def _run(self, func: Callable[..., int], data: bytes, trailer: int) -> bytes:
        n = len(data)
        if n + trailer <= BUFFER_SIZE:
            cdata, buffer = self._cdata, self.buffer
        else:  # rare: a datagram larger than any MTU; sized for it instead of refused
            cdata = _ffi.new("char[]", n + trailer)
            buffer = _ffi.buffer(cdata)
        buffer[0:n] = data
        length = self._length
        length[0] = n
        rc = func(self._srtp, cdata, length)
        if rc:
            raise pylibsrtp.Error(f"libsrtp error {rc}")
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect(self, packet: bytes) -> bytes:
        return self._run(_lib.srtp_protect, packet, RTP_TRAILER)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._run(_lib.srtp_protect_rtcp, packet, RTCP_TRAILER)

    def unprotect(self, packet: bytes) -> bytes:
        return self._run(_lib.srtp_unprotect, packet, 0)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        return self._run(_lib.srtp_unprotect_rtcp, packet, 0)

    def unprotect_or_none(self, packet: bytes) -> bytes | None:
        """``unprotect`` for a receive loop: None for a replayed, forged or corrupt packet."""
        n = len(packet)
        if n > BUFFER_SIZE:
            return None
        self.buffer[0:n] = packet
        length = self._length
        length[0] = n
        if _lib.srtp_unprotect(self._srtp, self._cdata, length):
            return None
        return self.buffer[0 : length[0]]  # type: ignore[no-any-return]

    def seal(self, n: int) -> bytes | None:
        """Protect the ``n``-byte RTP packet already written at the start of :attr:`buffer`.

        The send path writes header and payload straight into the buffer, so the only object made
        per packet is the ``bytes`` handed to ``sendto`` (uvloop may queue it without copying).
        None if it does not fit or libsrtp refuses it.
        """
        if n + RTP_TRAILER > BUFFER_SIZE:
            return None
        length = self._length
        length[0] = n
        if _lib.srtp_protect(self._srtp, self._cdata, length):
            return None
        return self.buffer[0 : length[0]]  # type: ignore[no-any-return]
