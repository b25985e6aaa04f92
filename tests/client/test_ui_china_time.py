"""The tablet app's times are China time whatever zone the tablet's system is set to, as the township's
pages show them: the service form's default time, 上次同步, the times beside a conflict's competing
values, and the day from which the needs list counts a need overdue; and so are the commands' default
service time and last sync. No node runs here (see ``test_ui``).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from pathlib import Path

from click.testing import CliRunner

from client.cli import cli
from client.tablet import Tablet
from client.ui import TabletApp
from sync.ops import Op
from sync.types import CHINA_TIME, SET, TIER_RANK
from test_ui import PIN, TestClient, client, db, people, post, tapp, unlocked  # noqa: F401 (fixtures)

#: 2026-12-03 15:40 in China: 07:40 UTC
AFTERNOON = dt.datetime(2026, 12, 3, 15, 40, tzinfo=CHINA_TIME)


def test_the_service_forms_time_is_china_time(away_from_china: str, tapp: TabletApp, unlocked: TestClient) -> None:
    pid = people(tapp)["张三"]
    page = unlocked.get("/services/new", params={"person": pid}).text
    (shown,) = re.findall(r'id="served_at" name="served_at" value="([^"]*)"', page)
    now = dt.datetime.now(CHINA_TIME).replace(tzinfo=None)
    assert abs(dt.datetime.fromisoformat(shown) - now) < dt.timedelta(minutes=2)
    # saved as shown: a service dated now is not refused as ahead of the clock
    r = post(unlocked, tapp, "/services/new", {"person": pid, "service_type": "养老服务", "served_at": shown})
    assert r.status_code == 303
    (svc,) = tapp.read(lambda t: t.list("service"))
    assert svc.data["served_at"] == shown


def test_last_sync_and_conflict_times_are_china_time(away_from_china: str, tapp: TabletApp,
                                                     unlocked: TestClient) -> None:
    pid = people(tapp)["张三"]

    def township_phone(tab: Tablet) -> None:
        "A township correction made at AFTERNOON that did not see the tablet's phone: a conflict"
        hlc = int(AFTERNOON.timestamp() * 1000) << 16
        tab.store.apply([Op("node-510903001000", 1, hlc, "person", pid, "phone", SET, "13899990000", (),
                            "刘主任", "510903001000", TIER_RANK["township"])])
        tab.store.set_meta("last_sync", str(int(AFTERNOON.timestamp())))

    tapp.read(township_phone)
    page = unlocked.get("/sync").text
    assert re.search(r'id="last-sync">2026-12-03 15:40<', page)
    assert "刘主任" in page and "12-03 15:40" in page
    assert "2026-12-03 15:40" in unlocked.get("/").text  # home's 上次同步


def test_a_need_is_overdue_from_the_day_after_its_due_date_in_china(away_from_china: str, tapp: TabletApp,
                                                                    unlocked: TestClient) -> None:
    pid = people(tapp)["张三"]
    today = dt.datetime.now(CHINA_TIME).date()
    days = {d: (today + dt.timedelta(days=d)).isoformat() for d in (-1, 0, 1)}
    for due in days.values():
        r = post(unlocked, tapp, "/needs/new", {"person": pid, "category": "养老服务", "due_date": due})
        assert r.status_code == 303
    page = unlocked.get("/needs").text
    assert re.findall(r'class="overdue"> · 截止 ([0-9-]+)<', page) == [days[-1]]
    assert all(f"截止 {due}" in page for due in days.values())


def test_the_commands_service_time_and_last_sync_are_china_time(away_from_china: str, db: Path) -> None:
    with Tablet(db, pin=PIN) as tab:
        (pid,) = (p.id for p in tab.list("person"))
        tab.store.set_meta("last_sync", str(int(AFTERNOON.timestamp())))
    run = functools.partial(CliRunner().invoke, cli, env={"CUNSYNC_PIN": PIN})
    r = run(["service", "add", "--db", str(db), "--person", pid, "--type", "养老服务"])
    assert r.exit_code == 0, r.output
    with Tablet(db, pin=PIN) as tab:
        (svc,) = tab.list("service")
    now = dt.datetime.now(CHINA_TIME).replace(tzinfo=None)
    assert abs(dt.datetime.fromisoformat(svc.data["served_at"]) - now) < dt.timedelta(minutes=2)
    r = run(["status", "--db", str(db)])
    assert r.exit_code == 0 and "last sync   2026-12-03 15:40:00 (China time)" in r.output, r.output
