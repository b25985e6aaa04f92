"""``ShortTerm``, what the workbench and the tablet app keep in memory for the next request (notices after
a form, enrolment codes' pages, searches): bounded in number and age, the oldest going first; ``take`` reads
once, ``peek`` again and again; ``clear`` forgets all (the tablet app, when it locks)."""

from __future__ import annotations

from sync.shortterm import ShortTerm


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_taken_once_and_peeked_until_it_is_too_old() -> None:
    clock = Clock()
    kept: ShortTerm[str, str] = ShortTerm(10, 60, clock=clock)
    kept.put("a", "one")
    kept.put("b", "two")
    assert kept.take("a") == "one" and kept.take("a") is None
    assert kept.take("nothing") is None
    clock.now += 59
    assert kept.peek("b") == kept.peek("b") == "two"
    clock.now += 1
    assert kept.peek("b") is None and len(kept) == 0  # too old: gone
    kept.put("c", "three")
    clock.now += 60
    kept.put("d", "four")  # c, never read, goes when it is too old, however much room there is
    assert len(kept) == 1 and kept.take("d") == "four"


def test_putting_replaces_the_value_and_makes_room_by_dropping_the_oldest() -> None:
    clock = Clock()
    kept: ShortTerm[tuple[str, str], int] = ShortTerm(3, 60, clock=clock)
    for n, key in enumerate("abc"):
        kept.put(("session", key), n)
        clock.now += 1
    kept.put(("session", "a"), 10)  # a again: now the newest
    kept.put(("session", "d"), 3)  # full: b, the oldest, goes
    assert [kept.peek(("session", k)) for k in "abcd"] == [10, None, 2, 3]
    assert kept.peek(("another session", "a")) is None
    kept.put(("session", "e"), 4)  # and c
    assert len(kept) == 3 and [kept.take(("session", k)) for k in "acde"] == [10, None, 3, 4]


def test_clear_forgets_every_value() -> None:
    kept: ShortTerm[str, str] = ShortTerm(10, 60, clock=Clock())
    kept.put("a", "one")
    kept.put("b", "two")
    kept.clear()
    assert len(kept) == 0 and kept.peek("a") is None and kept.peek("b") is None
    kept.put("c", "three")
    assert kept.peek("c") == "three"
