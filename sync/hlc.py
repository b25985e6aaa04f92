"""Hybrid logical clocks.

A timestamp is one integer: wall-clock milliseconds shifted left 16 bits, plus a logical counter in the
low 16 bits. Integers compare, sort and encode compactly, and every replica orders them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .types import Timestamp

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
#: How far ahead of the receiver an op's clock may be before it is refused (5 minutes).
MAX_AHEAD_MS = 5 * 60 * 1000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def pack(ms: int, logical: int = 0) -> Timestamp:
    return (ms << LOGICAL_BITS) | logical


def physical_ms(ts: Timestamp) -> int:
    "The wall-clock part of a timestamp, in milliseconds since the epoch"
    return ts >> LOGICAL_BITS


def logical(ts: Timestamp) -> int:
    return ts & LOGICAL_MASK


class HLC:
    """A hybrid logical clock.

    ``offset_ms`` corrects a device clock known to be wrong: the tablet sets it from the server's time
    at each sync, so a tablet whose clock is days ahead stamps corrected times from then on.
    """

    def __init__(
        self, last: Timestamp = 0, *, clock: Callable[[], int] = wall_ms, offset_ms: int = 0
    ) -> None:
        self.last = last
        self.clock = clock
        self.offset_ms = offset_ms

    def wall(self) -> Timestamp:
        return pack(self.clock() + self.offset_ms)

    def now(self) -> Timestamp:
        "A timestamp greater than every one this clock has issued or observed"
        self.last = max(self.last + 1, self.wall())
        return self.last

    def observe(self, remote: Timestamp) -> Timestamp:
        "Catch up with a timestamp seen from another replica"
        self.last = max(self.last + 1, remote + 1, self.wall())
        return self.last


def skew_ms(remote: Timestamp, local_wall_ms: int) -> int:
    "How far a remote timestamp is ahead (positive) or behind (negative) a local wall clock"
    return physical_ms(remote) - local_wall_ms
