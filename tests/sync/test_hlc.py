"""Tests for sync.hlc: hybrid logical clocks packed into one integer."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sync.hlc import HLC, LOGICAL_MASK, MAX_AHEAD_MS, logical, pack, physical_ms, skew_ms

T0 = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


def test_now_is_strictly_monotonic_even_when_the_wall_clock_stalls_or_steps_back() -> None:
    readings = iter([T0, T0, T0, T0 - 5000, T0 - 5000, T0 + 1])
    clock = HLC(clock=lambda: next(readings))
    stamps = [clock.now() for _ in range(6)]
    assert stamps == sorted(set(stamps))
    assert physical_ms(stamps[0]) == T0
    # the clock stepped back 5 s: the physical part holds, the logical part counts on
    assert [physical_ms(s) for s in stamps[:5]] == [T0] * 5
    assert [logical(s) for s in stamps[:5]] == [0, 1, 2, 3, 4]
    # the wall clock moved past the clock's reading: it takes over again
    assert stamps[5] == pack(T0 + 1)


def test_now_follows_the_wall_clock() -> None:
    clock = HLC(clock=itertools.count(T0, 1000).__next__)
    assert [clock.now() for _ in range(3)] == [pack(T0), pack(T0 + 1000), pack(T0 + 2000)]


def test_observe_catches_up_with_a_remote_clock_far_ahead() -> None:
    clock = HLC(clock=lambda: T0)
    before = clock.now()
    remote = pack(T0 + 3 * DAY_MS, 7)
    seen = clock.observe(remote)
    assert seen > remote
    later = [clock.now() for _ in range(3)]
    assert before < remote < seen < later[0] < later[1] < later[2]
    assert all(physical_ms(t) == T0 + 3 * DAY_MS for t in later)


def test_observe_of_an_old_timestamp_still_moves_forward() -> None:
    clock = HLC(clock=lambda: T0)
    first = clock.now()
    assert clock.observe(pack(T0 - DAY_MS)) > first


def test_offset_corrects_a_device_clock_that_is_wrong() -> None:
    days_ahead = 3 * DAY_MS
    tablet = HLC(clock=lambda: T0 + days_ahead, offset_ms=-days_ahead)
    assert physical_ms(tablet.now()) == T0
    tablet.offset_ms = 500
    assert physical_ms(tablet.now()) == T0 + days_ahead + 500


def test_starting_value_is_kept() -> None:
    clock = HLC(pack(T0 + DAY_MS), clock=lambda: T0)
    assert clock.now() == pack(T0 + DAY_MS) + 1


@given(ms=st.integers(0, 2**47), lg=st.integers(0, LOGICAL_MASK))
def test_pack_round_trips(ms: int, lg: int) -> None:
    ts = pack(ms, lg)
    assert (physical_ms(ts), logical(ts)) == (ms, lg)


@given(ms=st.integers(0, 2**47), lg=st.integers(0, LOGICAL_MASK - 1))
def test_packed_timestamps_order_as_ms_then_logical(ms: int, lg: int) -> None:
    assert pack(ms, lg) < pack(ms, lg + 1) < pack(ms + 1, 0)


def test_skew() -> None:
    assert skew_ms(pack(T0 + 90_000, 12), T0) == 90_000
    assert skew_ms(pack(T0 - 4000), T0) == -4000
    assert skew_ms(pack(T0), T0) == 0
    assert MAX_AHEAD_MS == 5 * 60 * 1000
