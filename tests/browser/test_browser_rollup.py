"""The county's roll-up page in Chromium: county staff sign in and land on it; it shows the townships'
needs, services and resolution with inline SVG charts, each township's freshness, and, when a township
cannot be reached, its last figures with their age."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from client.tablet import Tablet
from e2e_harness import NodeProcess, no_sleep
from server import links, schedule
from server.node import Node
from tiers_harness import PASSWORD, node_env

COUNTY, TOWNSHIP, VILLAGE = "510903000000", "510903001000", "510903001001"


@pytest.fixture
def county(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    "A township with a tablet's work in it, and its county, linked and pulled once"
    tdb, cdb = tmp_path / "township.db", tmp_path / "county.db"
    t = Node(tdb, TOWNSHIP)
    try:
        _, tablet_token = t.add_device(VILLAGE, "王芳")
        _, link_token = t.add_device(COUNTY, "county-link", tier="county")
    finally:
        t.close()
    with node_env(CUNSYNC_SUPPRESS_BELOW="0", CUNSYNC_PULL_MINUTES="0"):
        township = NodeProcess(tdb, TOWNSHIP).start()
        c = Node(cdb, COUNTY)
        try:
            c.accounts.add("xian", PASSWORD, role="county", display_name="县民政局-李科长")
            links.add_link(c.store, COUNTY, TOWNSHIP, township.url, link_token)
        finally:
            c.close()
        county = NodeProcess(cdb, COUNTY).start()
    tab = Tablet.init(tmp_path / "tablet.db", township.url, tablet_token, sleep=no_sleep)
    try:
        for i in range(4):
            p = tab.create("person", {"unit": VILLAGE, "name": f"测试{i}", "groups": ["老年人"]})
            n = tab.create("need", {"unit": VILLAGE, "person": p, "category": "养老服务", "status": "待处理"})
            tab.update(n, {"status": "服务中"})
            if i % 2:
                tab.update(n, {"status": "已解决"})
            tab.create("service", {"unit": VILLAGE, "person": p, "service_type": "养老服务",
                                   "served_at": f"2026-{9 + i % 2:02d}-05T10:00", "minutes": 30})
        tab.sync()
    finally:
        tab.close()
    _pull(cdb)
    try:
        yield township, county
    finally:
        county.kill()
        township.kill()


def _pull(db: Path) -> None:
    n = Node(db, COUNTY)
    try:
        schedule.pull_all(n)
    finally:
        n.close()


def test_county_staff_land_on_the_roll_up_with_charts_and_freshness(page: Page,
                                                                      county: tuple[NodeProcess, NodeProcess]) -> None:
    township, node = county
    page.goto(node.url + "/login")
    page.fill("input[name=username]", "xian")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/rollup")
    assert "船山区" in page.get_by_test_id("rollup-title").inner_text()
    assert page.get_by_test_id("needs-total").inner_text() == "4"
    assert page.get_by_test_id("resolution-rate").inner_text() == "50.0%"
    assert page.get_by_test_id("services-total").inner_text() == "4"
    assert page.locator("svg.chart").count() == 3
    row = page.get_by_test_id("needs").locator(f"tr[data-unit='{TOWNSHIP}']")
    assert "育才路街道" in row.inner_text()
    fresh = page.get_by_test_id("freshness").locator(f"tr[data-unit='{TOWNSHIP}']")
    assert "正常" in fresh.inner_text() and fresh.get_attribute("class") == ""
    with page.expect_download() as dl:
        page.click("text=导出 Excel")
    assert dl.value.suggested_filename.endswith(".xlsx")

    township.kill()  # the township goes away; the county keeps its last figures
    _pull(node.db)
    page.reload()
    fresh = page.get_by_test_id("freshness").locator(f"tr[data-unit='{TOWNSHIP}']")
    assert "无法获取最新数据" in fresh.inner_text() and "stale" in (fresh.get_attribute("class") or "")
    assert fresh.get_by_test_id("age").inner_text() in ("刚刚", "1 分钟前")
    assert page.get_by_test_id("needs-total").inner_text() == "4"
