"""The county's escalations page (吹哨报到) in real Chromium: county staff accept an escalation, assign a
department and resolve it with an answer, with fingers on the page's own forms."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

from e2e_harness import V1, NodeProcess
from server.node import Node
from sync.ops import uuid7

COUNTY = "510903000000"


def test_county_staff_take_an_escalation_from_reported_to_resolved(page: Page, tmp_path: Path) -> None:
    db = tmp_path / "county.db"
    n = Node(db, COUNTY)
    try:
        n.accounts.add("chen", "correct horse 1", role="county", unit=COUNTY)
        # as the link brings it up from the township
        n.editor("liu").create("escalation", {"unit": V1, "need": uuid7(), "category": "养老服务", "urgency": "紧急",
                                              "summary": "独居老人助餐点缺位", "status": "已上报",
                                              "escalated_at": "2024-05-01T09:30"})
    finally:
        n.close()
    county = NodeProcess(db, COUNTY).start()
    try:
        page.goto(county.url + "/login")
        page.fill("input[name=username]", "chen")
        page.fill("input[name=password]", "correct horse 1")
        page.click("button[type=submit]")
        page.goto(county.url + "/staff/escalations")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        row = page.locator("tr[data-escalation]")
        assert "独居老人助餐点缺位" in row.inner_text() and "已上报" in row.inner_text()
        page.click("button[value=accept]")
        assert "已受理" in page.locator("tr[data-escalation] .status").inner_text()
        page.click("button[value=resolve]")  # no answer yet: refused, and the page says why
        assert "请填写承办部门或答复内容" in page.locator(".error").inner_text()
        page.fill("input[name=department]", "区民政局")
        page.click("button[value=assign]")
        assert page.locator("tr[data-escalation] button[value=return]").count() == 1  # 已受理 may still go back
        page.fill("form:has(button[value=resolve]) input[name=answer]", "已协调街道食堂每日送餐")
        page.click("button[value=resolve]")
        status = page.locator("tr[data-escalation] .status").inner_text()
        assert "已办结" in status and "区民政局" in status and "已协调街道食堂每日送餐" in status
        assert page.locator("tr[data-escalation] form").count() == 0  # nothing left to do
    finally:
        county.kill()
