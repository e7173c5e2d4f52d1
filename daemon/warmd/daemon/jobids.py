"""Job ids: never repeated within a daemon's life, unlikely to meet across daemons.

An id is a counter run through a keyed permutation of 48-bit numbers (a
four-round Feistel network whose round function is an integer mix with a random
key per round), written as 12 hexadecimal digits. A permutation cannot map two counts to one id, so ids never
repeat within a daemon, however many jobs it runs and whatever it has expired;
each daemon draws its own key, so its ids look random and two daemons' ids
collide only by chance. Random-looking ids also make short prefixes unique,
which is what people type.
"""
from __future__ import annotations

import itertools
import secrets

ID_DIGITS = 12
_HALF_BITS = 24
_HALF_MASK = (1 << _HALF_BITS) - 1
_ROUNDS = 4


class JobIds:
    def __init__(self, keys: list[int] | None = None) -> None:
        # A Feistel network is a permutation whatever its round function: uniqueness rests
        # on that, not on the mix, which only has to make the ids look unrelated.
        self._round_keys = keys or [secrets.randbits(2 * _HALF_BITS) for _ in range(_ROUNDS)]
        self._count = itertools.count()

    def next(self) -> str:
        n = next(self._count)
        if n >> (2 * _HALF_BITS):
            raise OverflowError("this daemon has used every job id; restart it")
        return f"{self._permute(n):0{ID_DIGITS}x}"

    def _permute(self, n: int) -> int:
        left, right = n >> _HALF_BITS, n & _HALF_MASK
        for key in self._round_keys:
            left, right = right, left ^ _mix(right, key)
        return (left << _HALF_BITS) | right


def _mix(half: int, key: int) -> int:
    """A keyed 24-bit mix (multiply and xor-shift, as in splitmix64)."""
    x = ((half ^ key) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 32)) & _HALF_MASK
