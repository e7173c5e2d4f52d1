"""Job ids: never repeated within a daemon's life, unlikely to meet across daemons.

An id is a counter run through a keyed permutation of 48-bit numbers (a
four-round Feistel network with BLAKE2b as its round function), written as 12
hexadecimal digits. A permutation cannot map two counts to one id, so ids never
repeat within a daemon, however many jobs it runs and whatever it has expired;
each daemon draws its own key, so its ids look random and two daemons' ids
collide only by chance. Random-looking ids also make short prefixes unique,
which is what people type.
"""
from __future__ import annotations

import hashlib
import itertools
import secrets

ID_DIGITS = 12
_HALF_BITS = 24
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 4


class JobIds:
    def __init__(self, key: bytes | None = None) -> None:
        key = secrets.token_bytes(16) if key is None else key
        self._round_keys = [hashlib.blake2b(key, digest_size=16, person=b"warmd-id-%d" % i).digest()
                            for i in range(_ROUNDS)]
        self._count = itertools.count()

    def next(self) -> str:
        n = next(self._count)
        if n >> (2 * _HALF_BITS):
            raise OverflowError("this daemon has used every job id; restart it")
        return f"{self._permute(n):0{ID_DIGITS}x}"

    def _permute(self, n: int) -> int:
        left, right = n >> _HALF_BITS, n & _HALF_MASK
        for key in self._round_keys:
            digest = hashlib.blake2b(right.to_bytes(3, "big"), digest_size=3, key=key).digest()
            left, right = right, left ^ int.from_bytes(digest, "big")
        return (left << _HALF_BITS) | right
