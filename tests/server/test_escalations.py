"""Escalation summaries (吹哨报到) go up to the county, which sees no personal data: a summary holding an ID
number, a mobile number, or the name, ID number, phone or address of the need's resident (however it is
spaced or dotted) is refused (400
``personal_data``, nothing written), over the staff API and on the workbench page, which keeps the typed
text so staff can correct it (as it does for a summary over the length limit)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from server.escalations import personal_data
from server.node import Node
from staff_world import Signed, World, make_world
from e2e_harness import V1
from sync.store import Record

pytestmark = pytest.mark.e2e

FINISHED = ("已解决", "已关闭", "已取消")
RESIDENT = {"name": "张秀英", "id_number": "51090319420308001X", "phone": "0825-2223344", "address": "和平街17号3单元"}


def setup(n: Node, ids: dict[str, Any]) -> None:
    staff = n.editor("liu")
    person = staff.create("person", {"unit": V1, **RESIDENT})
    ids["need"] = staff.create("need", {"unit": V1, "person": person, "category": "养老服务", "status": "待处理"})
    ids["need2"] = staff.create("need", {"unit": V1, "person": person, "category": "生活物资", "status": "待处理"})
    ids["need3"] = staff.create("need", {"unit": V1, "person": person, "category": "医疗健康", "status": "待处理"})
    for status in FINISHED:
        ids[status] = staff.create("need", {"unit": V1, "person": person, "category": "其他", "status": status})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("escalations"), setup)


@pytest.fixture(scope="module")
def liu(world: World) -> Signed:
    return world.sign_in("liu")


def _escalations(world: World) -> list[Record]:
    with closing(world.open()) as n:
        return list(n.store.records("escalation"))


REFUSED = [
    ("独居，身份证 510903194501010023，需要助餐", ["id_number"]),  # anyone's ID number
    ("老人电话 138 0000 1111，需要助餐", ["phone"]),  # any mobile number, spaced
    ("联系 +86-139-0000-2222", ["phone"]),
    ("张秀英独居，需要助餐", ["name"]),  # the resident's name
    ("证件 51090319420308001x，需协调", ["id_number"]),  # the resident's ID number, typed in lower case
    ("座机 0825 2223344，需协调", ["phone"]),  # the resident's landline
    # typed with a Chinese IME in full-width mode, or grouped with other separators
    ("老人电话 １３８００００１１１１，需要助餐", ["phone"]),
    ("老人电话 138－0000－1111，需要助餐", ["phone"]),  # full-width dash
    ("老人电话 138.0000.1111 或 138·0000·2222", ["phone"]),
    ("座机 （０８２５）２２２３３４４，需协调", ["phone"]),  # the resident's landline, full-width
    ("座机 0825—2223344，需协调", ["phone"]),  # an em dash
    ("证件 ５１０９０３１９４５０１０１００２３，需协调", ["id_number"]),
    # the resident's name with separators in it, full-width or not
    ("张 秀英老人独居，需每日送餐", ["name"]),
    ("张·秀英老人独居，需每日送餐", ["name"]),
    ("张-秀英老人独居，需每日送餐", ["name"]),
    ("张\u3000秀英老人独居，需每日送餐", ["name"]),  # a full-width space
    # her address, or its house number with the street or the unit
    ("老人住和平街17号3单元，独居，需每日送餐", ["address"]),
    ("老人住和平街 17 号，独居", ["address"]),
    ("老人住１７号３单元，独居", ["address"]),
    (f"{RESIDENT['name']}（身份证{RESIDENT['id_number']}，电话13800001111）需要助餐", ["name", "id_number", "phone"]),
]


@pytest.mark.parametrize(("summary", "found"), REFUSED)
def test_a_summary_with_personal_data_is_refused_and_nothing_is_written(
        world: World, liu: Signed, summary: str, found: list[str]) -> None:
    r = liu.client.post("/api/staff/escalations", json={"need": world.ids["need"], "summary": summary},
                        headers={"x-csrf-token": liu.csrf})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["details"]) == ("personal_data", {"found": found})
    assert _escalations(world) == []


@pytest.mark.parametrize("summary", [
    "独居高龄老人助餐点缺位，需区民政协调",
    "本村 12 户需要助餐，2024-06-30 前每周 3 次",  # counts and dates are no phone or ID number
    "村委会 510903001001 辖区内缺少助餐点",  # a unit code
    "秀英路口助餐点关闭",  # part of the resident's name is not her name
    "和平街助餐点关闭，3单元17户需要助餐",  # her street, and numbers, are not her address
    "和平街217号3单元助餐点关闭",  # another house: its number is not hers (217号 is not 17号)
    "本村１２户需要助餐，２０２４．０６．３０前每周３次",  # full-width counts and dates neither
])
def test_a_summary_without_personal_data_passes(summary: str) -> None:
    person = Record(id="p", coll="person", unit=V1, deleted=False, data=RESIDENT, conflicts=[], seq=1)
    assert personal_data(summary, person) == []


def test_the_workbench_says_so_in_chinese_and_keeps_the_typed_text(world: World, liu: Signed) -> None:
    need = world.ids["need"]
    typed = "张秀英独居，电话 13800001111，需要助餐"
    r = liu.post(f"/staff/records/{need}/escalate", {"summary": typed})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert m and m.group(1) == "情况说明里有居民的姓名、电话。县区看不到居民的个人信息，请删去后再上报。", r.text
    assert re.search(r'<textarea name="summary"[^>]*>' + re.escape(typed) + "</textarea>", r.text), r.text
    assert f'action="/staff/records/{need}/escalate"' in r.text  # the need's page, its form there to correct
    assert _escalations(world) == []
    typed = "张·秀英住和平街17号3单元，需要助餐"
    r = liu.post(f"/staff/records/{need}/escalate", {"summary": typed})
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert m and m.group(1) == "情况说明里有居民的姓名、住址。县区看不到居民的个人信息，请删去后再上报。", r.text
    assert re.search(r'<textarea name="summary"[^>]*>' + re.escape(typed) + "</textarea>", r.text), r.text
    assert _escalations(world) == []
    # over the limit: said so, with the limit, and the text kept to shorten
    long = "独居老人需要助餐，" * 223  # 2007 characters
    r = liu.post(f"/staff/records/{need}/escalate", {"summary": long})
    assert r.status_code == 400, r.text
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert m and m.group(1) == "情况说明太长了（2007 字），应为不超过 2000 字的文字。请删减后再上报。", r.text
    assert re.search(r'<textarea name="summary"[^>]*>' + re.escape(long) + "</textarea>", r.text)
    assert _escalations(world) == []
    # corrected, it goes up
    assert liu.notice(liu.post(f"/staff/records/{need}/escalate", {"summary": "独居老人需要助餐"})).startswith("已上报县区")
    [esc] = _escalations(world)
    assert esc.data["summary"] == "独居老人需要助餐"


@pytest.mark.parametrize(("user", "may"), [("liu", True), ("county", True), ("city", False), ("admin", False)])
def test_the_roll_up_links_the_escalations_page_for_those_who_may_open_it_and_it_refuses_others_in_chinese(
        world: World, user: str, may: bool) -> None:
    who = world.sign_in(user)
    assert ('href="/staff/escalations"' in who.get("/rollup").text) == may
    r = who.get("/staff/escalations")
    assert r.headers["content-type"].startswith("text/html"), r.text
    if may:
        assert r.status_code == 200 and "吹哨报到" in r.text, r.text
    else:
        m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
        assert r.status_code == 403 and m and m.group(1).startswith("您的账户没有这项权限"), r.text


def test_the_county_pages_form_after_signing_out_or_with_a_stale_token_answers_in_chinese(world: World) -> None:
    "A form left open: a stale page's token gets the Chinese 403 page, a session signed out goes to /login"
    county = world.sign_in("county")
    esc = "0190a0a0-0000-7000-8000-000000000001"
    stale = county.post(f"/staff/escalations/{esc}", {"action": "accept"}, csrf=False)
    assert stale.status_code == 403 and stale.headers["content-type"].startswith("text/html"), stale.text
    assert "页面已过期" in stale.text
    assert county.post("/logout").status_code == 303
    r = county.post(f"/staff/escalations/{esc}", {"action": "accept"})
    assert r.status_code == 303 and r.headers["location"] == "/login", r.text


@pytest.mark.parametrize(("address", "summary", "found"), [
    ("和平街十七号三单元", "老人住和平街十七号，独居", ["address"]),
    ("和平街十七号三单元", "老人住十七号三单元，独居", ["address"]),
    ("和平街十七号三单元", "老人住和平街17号，独居", ["address"]),  # her address, in the other numerals
    ("和平街17号3单元", "老人住和平街十七号，独居", ["address"]),
    ("幸福村二组十五号", "老人住幸福村二组十五号，独居", ["address"]),
    ("幸福村二组十五号", "老人住幸福村 二组 十五号，独居", ["address"]),
    # ordinary words with a numeral, and another house, pass
    ("和平街十七号三单元", "一老一小家庭，三个月未领补贴，和平街助餐点关闭", []),
    ("和平街十七号三单元", "和平街二十七号助餐点关闭", []),  # 二十七号 is not 十七号
    ("和平街十七号三单元", "和平街一百一十七号助餐点关闭", []),
    ("幸福村二组十五号", "幸福村二组十户需要助餐，每周三次", []),
])
def test_an_address_in_chinese_numerals_is_found_as_in_arabic_ones(address: str, summary: str,
                                                                     found: list[str]) -> None:
    her = Record("0190a0a0-0000-7000-8000-000000000001", "person", V1, False,
                 {"name": "张秀英", "address": address}, [], 1)
    assert personal_data(summary, her) == found


def test_her_house_number_is_never_cut_to_match_another_building() -> None:
    "At 和平街117号5单元, the run 17号5单元 is no part of her address: 幸福路17号5单元 is another building"
    her = Record("0190a0a0-0000-7000-8000-000000000001", "person", V1, False,
                 {"name": "张秀英", "address": "和平街117号5单元"}, [], 1)
    assert personal_data("幸福路17号5单元楼道照明损坏，需协调维修", her) == []
    assert personal_data("老人住和平街117号5单元，独居", her) == ["address"]


def test_township_staff_withdraw_an_escalation_with_a_reason_the_county_may_read(world: World, liu: Signed) -> None:
    "Withdrawn (已撤回): the reason goes through the summary's personal-data check; the county's page offers no step"
    need = world.ids["need2"]
    liu.notice(liu.post(f"/staff/records/{need}/escalate", {"summary": "生活物资缺口大，需区里协调"}))
    [esc] = [e.id for e in _escalations(world) if e.data["need"] == need]
    row = _row(liu.get("/staff/escalations").text, esc)
    assert 'value="withdraw"' in row and "撤回原因" in row and 'value="accept"' not in row

    r = liu.post(f"/staff/escalations/{esc}", {"action": "withdraw", "answer": "张 秀英已搬到和平街17号3单元"})
    assert r.status_code == 303 and r.headers["location"] == "/staff/escalations?error=personal_data", r.text
    said = re.search(r'<p class="error" role="alert">(.*?)</p>', liu.get(r.headers["location"]).text, re.S)
    assert said and said.group(1).startswith("撤回原因里有居民的个人信息"), said
    r = liu.post(f"/staff/escalations/{esc}", {"action": "withdraw", "answer": "长" * 2001})
    assert r.headers["location"] == "/staff/escalations?error=too_long", r.text
    said = re.search(r'<p class="error" role="alert">(.*?)</p>', liu.get(r.headers["location"]).text, re.S)
    assert said and said.group(1) == "撤回原因太长了，应为不超过 2000 字的文字。请删减后再撤回。", said
    refused = liu.post(f"/staff/escalations/{esc}", {"action": "accept"})  # the county's step
    said = re.search(r'<p class="error" role="alert">(.*?)</p>', refused.text, re.S)
    assert refused.status_code == 403 and said, refused.text
    assert said.group(1) == "受理、分派、办结和退回由县区工作人员办理；镇街可以撤回本镇街上报的事项。"
    assert [e.data["status"] for e in _escalations(world) if e.id == esc] == ["已上报"]
    county = world.sign_in("county")
    refused = county.post(f"/staff/escalations/{esc}", {"action": "withdraw", "answer": "不需要了"})
    assert refused.status_code == 403 and "撤回由上报的镇街工作人员办理" in refused.text, refused.text

    assert liu.post(f"/staff/escalations/{esc}", {"action": "withdraw", "answer": "镇街已协调解决"}).status_code == 303
    [got] = [e.data for e in _escalations(world) if e.id == esc]
    assert (got["status"], got["answer"]) == ("已撤回", "镇街已协调解决")
    row = _row(county.get("/staff/escalations").text, esc)
    assert "已撤回" in row and "撤回原因：镇街已协调解决" in row and "<form" not in row
    r = county.post(f"/staff/escalations/{esc}", {"action": "accept"})
    assert r.headers["location"] == "/staff/escalations?error=wrong_status", r.text
    # the need is still open: its page offers 上报县区 again, and it may go up again
    assert f'action="/staff/records/{need}/escalate"' in liu.get(f"/staff/records/{need}").text
    assert liu.notice(liu.post(f"/staff/records/{need}/escalate", {"summary": "物资仍然不够，请区里协调"})
                      ).startswith("已上报县区")
    assert sorted(e.data["status"] for e in _escalations(world) if e.data["need"] == need) == ["已上报", "已撤回"]


def test_the_county_returns_an_escalation_it_accepted_on_the_page_as_over_the_api(world: World, liu: Signed) -> None:
    "已上报 or 已受理 may go back (已退回), with the reason: the page offers 退回 for both"
    need = world.ids["need3"]
    liu.notice(liu.post(f"/staff/records/{need}/escalate", {"summary": "需要区里协调就医"}))
    [esc] = [e.id for e in _escalations(world) if e.data["need"] == need]
    county = world.sign_in("county")
    assert 'value="return"' in _row(county.get("/staff/escalations").text, esc)
    assert county.post(f"/staff/escalations/{esc}", {"action": "accept"}).status_code == 303
    row = _row(county.get("/staff/escalations").text, esc)
    assert "已受理" in row and 'value="resolve"' in row and 'value="return"' in row
    r = county.post(f"/staff/escalations/{esc}", {"action": "return", "answer": "应由镇街协调卫生院"})
    assert r.status_code == 303 and r.headers["location"] == "/staff/escalations", r.text
    [got] = [e.data for e in _escalations(world) if e.id == esc]
    assert (got["status"], got["answer"]) == ("已退回", "应由镇街协调卫生院")


@pytest.mark.parametrize("status", FINISHED)
def test_a_finished_need_is_not_escalated_and_its_page_says_why(world: World, liu: Signed, status: str) -> None:
    "Resolved, closed or cancelled: no 上报县区 on its page; the API refuses it (need_closed), a stale form in Chinese"
    need = world.ids[status]
    said = f"这条需求{status}，不能上报县区。如果问题还没有解决，请先把需求重新打开（改为“服务中”或“待处理”），再上报。"
    page = liu.get(f"/staff/records/{need}").text
    assert f'action="/staff/records/{need}/escalate"' not in page and f'id="not-escalatable">{said}</p>' in page
    r = liu.client.post("/api/staff/escalations", json={"need": need, "summary": "独居老人需要助餐"},
                        headers={"x-csrf-token": liu.csrf})
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["details"]) == ("need_closed", {"need": need, "status": status})
    r = liu.post(f"/staff/records/{need}/escalate", {"summary": "独居老人需要助餐"})  # a page opened before
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert m and m.group(1) == said, r.text
    assert [e for e in _escalations(world) if e.data["need"] == need] == []


def _row(page: str, escalation: str) -> str:
    "The escalations page's row of one escalation"
    row = page[page.index(f'data-escalation="{escalation}"'):]
    return row[:row.index("</tr>")]
