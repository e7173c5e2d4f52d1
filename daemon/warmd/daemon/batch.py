"""What the daemon writes while it handles one read from a client, let go together.

A pipelining client's requests arrive many to a read. Held here, the replies
leave as one write per client instead of one per frame, and the ledger's lines
as one write: before the clients' replies when they name a new job (a client
never learns of a job that the ledger could not name after a crash), after them
otherwise. Reads from workers are not batched: a job's end goes to its clients
at once, ahead of the bookkeeping that follows it.
"""
from __future__ import annotations

from typing import Any

from ..protocol import LARGE, FdPiece
from .ledger import Ledger


class WriteBatch:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.active = False
        self._held: dict[Any, list[bytes]] = {}
        self._sizes: dict[Any, int] = {}

    def begin(self) -> None:
        self.active = True
        self.ledger.hold()

    def hold(self, conn: Any, data: bytes) -> None:
        self._held.setdefault(conn, []).append(data)
        self._sizes[conn] = self._sizes.get(conn, 0) + len(data)

    def held_bytes(self, conn: Any) -> int:
        return self._sizes.get(conn, 0)

    def release(self, conn: Any) -> list:
        """Take back what is held for ``conn``, which is closing: the ledger goes first."""
        if conn not in self._held:
            return []
        self.ledger.flush(keep_holding=True)
        self._sizes.pop(conn, None)
        return _joined(self._held.pop(conn))

    def end(self) -> None:
        self.active = False
        # A new job's first line goes before any client can learn its id; other lines
        # (a start after a wait in the queue, an end) after the clients' news.
        ledger_first = self.ledger.news
        if ledger_first:
            self.ledger.flush()
        held, self._held = self._held, {}
        self._sizes = {}
        for conn, chunks in held.items():
            conn.write(_joined(chunks))
        if not ledger_first:
            self.ledger.flush()


def _joined(chunks: list) -> list:
    """The chunks as few pieces: small ones joined, a large payload left as it is."""
    out, small = [], []
    for chunk in chunks:
        if len(chunk) < LARGE and not isinstance(chunk, FdPiece):  # descriptors keep their piece
            small.append(chunk)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(chunk)
    if small:
        out.append(b"".join(small))
    return out
