"""Ops: the immutable changes every replica exchanges, and the record ids they name."""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from .types import ADD, KIND_NAMES, REMOVE, SET, OpId

__all__ = ["Op", "uuid7", "ADD", "REMOVE", "SET"]


class Op(msgspec.Struct, frozen=True, gc=False):
    """One change to one field of one record.

    ``(site, counter)`` is the op's id: the device that made it and that device's own counter.
    ``pred`` names the ops this one supersedes: the values its author saw. ``user``, ``unit`` and
    ``tier`` say who wrote it; on a node they come from the caller's credential, never from the client.
    """

    site: str
    counter: int
    hlc: int
    coll: str
    record: str
    field: str
    kind: int
    value: Any = None
    pred: tuple[tuple[str, int], ...] = ()
    user: str = ""
    unit: str = ""
    tier: int = 1

    @property
    def id(self) -> OpId:
        return (self.site, self.counter)

    def describe(self) -> str:
        return (
            f"{self.site}#{self.counter} {KIND_NAMES.get(self.kind, self.kind)} "
            f"{self.coll}/{self.record}.{self.field}={self.value!r}"
        )


def uuid7(ms: int | None = None) -> str:
    """A UUIDv7 in canonical text form: 48 bits of milliseconds, then random bits (RFC 9562).

    Made on the device that creates the record; no server round trip.
    """
    if ms is None:
        ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
