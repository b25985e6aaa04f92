"""Tests for sync.ops: the Op struct and UUIDv7 record ids."""

from __future__ import annotations

import random
import re
import uuid

import msgspec
import pytest

from sync.ops import ADD, SET, Op, uuid7

T0 = 1_700_000_000_000
CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.mark.parametrize("ms", [None, 0, T0, 2**48 - 1])
def test_uuid7_is_an_rfc_9562_version_7_uuid(ms: int | None) -> None:
    text = uuid7(ms)
    assert CANONICAL.match(text)
    u = uuid.UUID(text)
    assert str(u) == text
    assert (u.int >> 76) & 0xF == 7  # version nibble
    assert (u.int >> 62) & 0b11 == 0b10  # variant bits 10
    assert u.variant == uuid.RFC_4122
    assert u.version == 7
    if ms is not None:
        assert u.int >> 80 == ms  # the first 48 bits are the milliseconds


def test_uuid7_ids_sort_in_time_order() -> None:
    made = [uuid7(T0 + i) for i in range(0, 5000, 7)]
    shuffled = random.Random(7).sample(made, len(made))
    assert sorted(shuffled) == made


def test_uuid7_is_unique() -> None:
    assert len({uuid7(T0) for _ in range(10_000)}) == 10_000
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_op_id_and_describe() -> None:
    op = Op("tab-7", 42, 1, "person", "r", "name", SET, "张三", (("tab-7", 41),))
    assert op.id == ("tab-7", 42)
    assert op.describe() == "tab-7#42 set person/r.name='张三'"
    assert Op("tab-7", 43, 1, "person", "r", "groups", ADD, "儿童").describe().startswith("tab-7#43 add ")


def test_op_defaults_and_immutability() -> None:
    op = Op("tab-7", 1, 1, "person", "r", "name", SET)
    assert (op.value, op.pred, op.user, op.unit, op.tier) == (None, (), "", "", 1)
    with pytest.raises(AttributeError):
        op.value = "x"  # type: ignore[misc]


def test_op_round_trips_through_msgpack() -> None:
    op = Op("tab-7", 2, 3, "person", "r", "groups", ADD, "儿童", (("tab-7", 1),), "u", "510903001001", 1)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(op), type=Op) == op
