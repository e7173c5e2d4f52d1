"""asyncio glue shared by the daemon and the asyncio client: receive into one reusable buffer.

A plain ``asyncio.Protocol`` gets a fresh bytes object per read, and asyncio asks
for 256 KiB each time, which costs an mmap and a munmap per message. A
``BufferedProtocol`` reads with ``recv_into`` into a buffer kept for the
connection's life.
"""
from __future__ import annotations

import asyncio

from .protocol import RECV_SIZE


class BufferedReceiver(asyncio.BufferedProtocol):
    """Hands each read to ``received`` as a memoryview that is valid only during the call,
    with the descriptors that came with it (see ``warmd.unixtransport``)."""

    _buffer: memoryview | None = None
    _files: list | tuple = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buffer is None:
            self._buffer = memoryview(bytearray(RECV_SIZE))
        return self._buffer

    def files_received(self, files: list) -> None:
        self._files = files

    def buffer_updated(self, nbytes: int) -> None:
        files, self._files = self._files, []
        self.received(self._buffer[:nbytes], files)

    def received(self, data: memoryview, files: list) -> None:
        raise NotImplementedError
