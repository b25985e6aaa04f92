"""Playwright drives Debian's chromium against a real node: the sign-in page renders in Chinese."""

from __future__ import annotations

from playwright.sync_api import Page

from e2e_harness import NodeProcess


def test_sign_in_page_renders_in_chinese(page: Page, node: NodeProcess) -> None:
    node.start()
    page.goto(node.url + "/login")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.fill("input[name=username]", "nobody")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    assert "用户名或密码错误" in page.content()
