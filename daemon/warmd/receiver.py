"""asyncio glue shared by the daemon and the asyncio client: receive into one reusable buffer.

A plain ``asyncio.Protocol`` gets a fresh bytes object per read, and asyncio asks
for 256 KiB each time, which costs an mmap and a munmap per message. A
``BufferedProtocol`` reads with ``recv_into`` into a buffer kept for the
connection's life.
"""
from __future__ import annotations

import asyncio

from .protocol import RECV_SIZE, FrameReader

_EMPTY = memoryview(b"")


class BufferedReceiver(asyncio.BufferedProtocol):
    """Hands each read to ``received`` as a memoryview that is valid only during the call.

    While ``reader`` (a FrameReader) receives a large payload, reads go straight into
    that payload's buffer and ``received`` gets an empty view: the reader has the bytes.
    """

    _buffer: memoryview | None = None
    _direct = False
    reader: FrameReader

    def get_buffer(self, sizehint: int) -> memoryview:
        direct = self.reader.direct_buffer()
        if direct is not None:
            self._direct = True
            return direct
        self._direct = False
        if self._buffer is None:
            self._buffer = memoryview(bytearray(RECV_SIZE))
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self.reader.direct_received(nbytes)
            self.received(_EMPTY)
        else:
            self.received(self._buffer[:nbytes])

    def received(self, data: memoryview) -> None:
        raise NotImplementedError
