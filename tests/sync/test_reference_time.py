"""Reference records' times (a notice's published_at, an escalation's escalated_at and answered_at) are
China time, whatever zone the node's system runs in."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from sync import Editor, Store
from sync import reference as ref


@pytest.fixture
def utc_system() -> Iterator[None]:
    "A node whose system zone is UTC (a common server default)"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


def test_reference_times_are_china_time_on_a_utc_server(utc_system: None, store: Store,
                                                          township: Editor) -> None:
    def china_now() -> str:
        return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M")

    before = china_now()
    stamp = ref.now_text()
    notice = store.get(ref.add_notice(township, "防汛通知"))
    after = china_now()
    assert stamp in (before, after)  # (the minute may turn meanwhile)
    assert notice is not None and notice.data["published_at"] in (before, after)
