"""Type aliases shared by the engine, the node and the tablet."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, TypeAlias

#: A device's stable identifier, e.g. ``"tab-3f2a..."`` or ``"node-510903001000"``.
Device: TypeAlias = str
#: An op's identity: the device that made it and that device's counter.
OpId: TypeAlias = tuple[str, int]
#: A record id: a UUIDv7 in its canonical 36-character text form.
RecordId: TypeAlias = str
#: A 12-digit statistical division code.
UnitCode: TypeAlias = str
#: A hybrid logical clock reading: milliseconds << 16 | logical counter.
Timestamp: TypeAlias = int
#: A field value as it travels and is stored: anything MessagePack and JSON both carry.
Value: TypeAlias = Any

#: China Standard Time (UTC+8, no daylight saving): the time the people using cunsync live in, whatever
#: zone a node's system runs in.
CHINA_TIME = dt.timezone(dt.timedelta(hours=8), "北京时间")


def china_time(seconds: float | None = None) -> dt.datetime:
    """The wall-clock time in China (``CHINA_TIME``, whatever the system's zone) at ``seconds`` since the
    epoch, or now: naive, as records and forms write a date or time (``2024-05-01T09:30``)"""
    return dt.datetime.fromtimestamp(time.time() if seconds is None else seconds, CHINA_TIME).replace(tzinfo=None)


#: Op kinds.
SET = 0
ADD = 1
REMOVE = 2
KIND_NAMES = {SET: "set", ADD: "add", REMOVE: "remove"}

#: Tier ranks: a higher rank wins among concurrent writes.
TIER_RANK: dict[str, int] = {"village": 1, "township": 2, "county": 3, "city": 4}
TIER_NAME: dict[int, str] = {rank: name for name, rank in TIER_RANK.items()}

#: The register that marks a record deleted. A delete against a concurrent edit is a conflict.
DELETED = "_deleted"

#: Fields a delete leaves live (besides the record's unit): where a merged duplicate went.
SURVIVES_DELETE = ("merged_into",)
