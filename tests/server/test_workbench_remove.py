"""A resident who moved to another township or died, taken out of the township's records from the record's
page (迁出/注销): a form with the reason, a confirm step, then the resident's open needs cancelled and the
resident deleted, all by the node's Editor, so that a tablet's concurrent edit shows as a conflict. The
tablets drop the resident at their next sync, the figures no longer count it, and the workbench keeps
its page and history."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import escalations
from server.auth import Staff
from server.node import Node
from server.relay import sync_link
from server.snapshots import figures
from staff_world import browser_form
from sync.reference import escalations as list_escalations
from sync.types import DELETED
from test_pullcache import TOWNSHIP, V1
from test_relay import COUNTY, serve
from test_staff_stale_forms import Desk


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path / "township.db")
    yield d
    d.close()


@pytest.fixture
def county(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "county.db", COUNTY)
    yield n
    n.close()


def resident(desk: Desk) -> dict[str, str]:
    "张秀英 of village 1, with two open needs, a resolved one and a service, synced to the node"
    ed = desk.tab.editor
    ids = {"person": ed.create("person", {"unit": V1, "name": "张秀英", "groups": ["老年人"], "notes": "独居"})}
    for key, status in (("waiting", "待处理"), ("serving", "服务中"), ("resolved", "已解决")):
        ids[key] = ed.create("need", {"unit": V1, "person": ids["person"], "category": "养老服务", "status": status})
    ids["service"] = ed.create("service", {"unit": V1, "person": ids["person"], "need": ids["resolved"],
                                           "service_type": "养老服务", "served_at": "2025-05-01T09:30"})
    desk.sync()
    return ids


def post(desk: Desk, action: str, page: str, **typed: str) -> Any:
    "Send the page's form posting to ``action`` as a browser does, with what staff typed or chose"
    return desk.client.post(action, data={**browser_form(page, action), **typed})


def notice(desk: Desk, r: Any) -> str:
    assert r.status_code == 303, r.text
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', desk.client.get(r.headers["location"]).text, re.S)
    assert found is not None
    return found.group(1)


def error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert found is not None, r.text
    return found.group(1)


def residents(desk: Desk) -> dict[tuple[str, ...], list[int | None]]:
    return {tuple(c.k): c.v for c in figures(desk.node.store, TOWNSHIP)["residents"]}


def test_a_resident_is_removed_after_a_confirm_step_and_the_tablet_drops_it(desk: Desk) -> None:
    ids = resident(desk)
    pid, action = ids["person"], f"/staff/records/{ids['person']}/remove"
    page = desk.client.get(f"/staff/records/{pid}").text
    form = page[page.index('id="remove"'):]
    assert "迁出或注销" in form and "请先由新村/社区的平板登记" in form
    assert re.findall(r"<option>([^<]*)</option>", form[:form.index("</select>")]) == ["迁出到其他镇街", "去世", "其他"]
    assert residents(desk)[(V1, "老年人")] == [1]

    before = desk.node.store.max_seq()
    ask = post(desk, action, page, reason="去世", note="2026年11月20日去世")
    assert ask.status_code == 200, ask.text
    confirm = ask.text[ask.text.index('id="remove-confirm"'):]
    confirm = confirm[:confirm.index('<div class="card')]
    assert "确认把张秀英移出本镇街的记录？" in confirm and "2026年11月20日去世" in confirm
    assert "以下 2 条未完成的需求将改为“已取消”" in confirm
    assert ids["waiting"] in confirm and ids["serving"] in confirm and ids["resolved"] not in confirm
    assert desk.node.store.max_seq() == before, "asking to confirm writes nothing"

    said = notice(desk, post(desk, action, ask.text))  # 确认移出: the confirm form, as the browser sends it
    assert said.startswith("已将张秀英移出本镇街（去世），2 条未完成的需求已改为“已取消”。")
    store = desk.node.store
    written = store.ops_since(before)
    assert {(op.record, op.field, op.value) for _, op in written} >= {
        (ids["waiting"], "status", "已取消"), (ids["serving"], "status", "已取消"), (pid, DELETED, True)}
    assert {(op.user, op.tier) for _, op in written} == {("liu", 2)}  # the staff member, at the township's tier
    (notes,) = [op.value for _, op in written if op.field == "notes"]
    assert re.fullmatch(r"独居\n\d{4}-\d{2}-\d{2} 移出本镇街（去世）：2026年11月20日去世", notes)
    rec = store.get(pid)
    assert rec is not None and rec.deleted and rec.conflicts == []
    assert store.get(ids["resolved"]).data["status"] == "已解决"  # type: ignore[union-attr]
    assert (V1, "老年人") not in residents(desk) and (V1, "合计") not in residents(desk)

    desk.sync()  # the tablet's next sync
    assert pid not in desk.tab.people()
    assert [desk.tab.store.get(ids[k]).data["status"] for k in ("waiting", "serving", "resolved")] == [  # type: ignore[union-attr]
        "已取消", "已取消", "已解决"]

    page = desk.client.get(f"/staff/records/{pid}").text  # kept on the workbench, as removed
    assert "<h2>张秀英</h2>" in page and '<span class="chip red">已移出</span>' in page
    assert "由 刘（镇街）移出本镇街的记录" in page and "移出本镇街（去世）：2026年11月20日去世" in page
    assert 'id="remove"' not in page and 'action="/staff/records/' + pid + '"' not in page
    history = page[page.index('class="tight history"'):]
    assert "已删除" in history and "已取消" not in history  # the person's own changes; the needs keep theirs
    need = desk.client.get(f"/staff/records/{ids['waiting']}").text  # its needs lead to it, by name
    assert f'居民：<a href="/staff/records/{pid}">张秀英</a> <span class="chip red">已移出</span>' in need
    assert '<span class="muted">待处理</span> → <b>已取消</b>' in need  # in its history
    again = desk.client.post(action, data={"csrf": desk.hidden(page, "csrf"), "reason": "去世", "confirm": "1"})
    assert "张秀英已经移出本镇街" in error(again, 400)


def test_a_tablets_concurrent_edit_of_a_removed_resident_shows_as_a_conflict(desk: Desk) -> None:
    ids = resident(desk)
    pid = ids["person"]
    desk.tab.editor.update(pid, {"phone": "13800001111"})  # offline, before the removal reaches it
    desk.tab.editor.update(ids["waiting"], {"status": "已分派"})
    page = desk.client.get(f"/staff/records/{pid}").text
    ask = post(desk, f"/staff/records/{pid}/remove", page, reason="迁出到其他镇街", note="迁往凤凰社区")
    notice(desk, post(desk, f"/staff/records/{pid}/remove", ask.text))

    desk.sync()
    for store in (desk.node.store, desk.tab.store):  # both sides hold the same open conflicts
        assert store.get(pid).conflicts == [DELETED]  # type: ignore[union-attr]
        assert store.get(ids["waiting"]).conflicts == ["status"]  # type: ignore[union-attr]
    conflicts = desk.client.get("/staff/conflicts").text
    card = conflicts[conflicts.index(f'data-record="{pid}"'):]
    assert "13800001111" in card and "确认删除" in card and "保留这条记录" in card


def test_removal_refusals_write_nothing(desk: Desk) -> None:
    ids = resident(desk)
    pid = ids["person"]
    action = f"/staff/records/{pid}/remove"
    csrf = desk.hidden(desk.client.get(f"/staff/records/{pid}").text, "csrf")
    before = desk.node.store.count_ops()

    def refused(status: int, **form: str) -> str:
        return error(desk.client.post(action, data={"csrf": csrf, "confirm": "1", **form}), status)

    assert "页面已过期" in error(desk.client.post(action, data={"reason": "去世", "confirm": "1"}), 403)
    assert refused(400) == "请选择移出的原因：迁出到其他镇街、去世、其他。"
    assert refused(400, reason="搬家") == "请选择移出的原因：迁出到其他镇街、去世、其他。"
    assert refused(400, reason="其他", note="  ") == "原因选“其他”时，请在说明里写明原因。"
    assert "说明太长了（1999 字）" in refused(400, reason="其他", note="长" * 1999)  # with the notes, over 2000
    assert "没有找到" in error(desk.client.post(f"/staff/records/{ids['waiting']}/remove",
                                               data={"csrf": csrf, "reason": "去世", "confirm": "1"}), 404)
    assert desk.node.store.count_ops() == before
    assert not desk.node.store.get(pid).deleted  # type: ignore[union-attr]


def test_the_confirm_step_asks_again_when_her_needs_or_her_record_changed_since_it_was_shown(desk: Desk) -> None:
    ids = resident(desk)
    pid, action = ids["person"], f"/staff/records/{ids['person']}/remove"
    ask = post(desk, action, desk.client.get(f"/staff/records/{pid}").text, reason="迁出到其他镇街", note="迁往凤凰社区")
    assert "以下 2 条未完成的需求将改为“已取消”" in ask.text
    late = desk.tab.editor.create("need", {"unit": V1, "person": pid, "category": "医疗健康", "status": "待处理"})
    desk.sync()  # a need recorded meanwhile, which the confirm page did not list
    before = desk.node.store.max_seq()
    again = post(desk, action, ask.text)
    assert error(again, 409).startswith("内容已变化，请重新确认")
    assert "以下 3 条未完成的需求将改为“已取消”" in again.text and late in again.text  # what is there now
    desk.tab.editor.update(pid, {"phone": "13800001111"})  # then her record, changed on a tablet
    desk.sync()
    third = post(desk, action, again.text)
    assert error(third, 409).startswith("内容已变化，请重新确认")
    desk.tab.editor.update(late, {"status": "服务中"})  # then one of the needs listed
    desk.sync()
    fourth = post(desk, action, third.text)
    assert error(fourth, 409).startswith("内容已变化，请重新确认")
    assert {op.user for _, op in desk.node.store.ops_since(before)} == {"张丽"}  # the tablet's edits only
    assert not desk.node.store.get(pid).deleted  # type: ignore[union-attr]
    said = notice(desk, post(desk, action, fourth.text))  # confirmed on what is there now
    assert said.startswith("已将张秀英移出本镇街（迁出到其他镇街），3 条未完成的需求已改为“已取消”。")


def test_removing_her_withdraws_the_escalations_of_her_needs_at_the_county(desk: Desk, county: Node) -> None:
    """One the county accepted before; one it accepts while she is removed (its step wins by tier: withdrawn
    again); one of a need the township resolved since (not cancelled: the answer does not say so)"""
    ids = resident(desk)
    liu, chen = Staff("liu", "township", TOWNSHIP), Staff("chen", "county", COUNTY)
    accepted = escalations.escalate(desk.node, liu, ids["waiting"], "独居老人需每日送餐")
    racing = escalations.escalate(desk.node, liu, ids["serving"], "需要县医院上门看诊")
    met = desk.node.editor("liu").create("need", {"unit": V1, "person": ids["person"], "category": "生活物资",
                                                   "status": "服务中"})
    finished = escalations.escalate(desk.node, liu, met, "需要区里调拨物资")
    desk.node.editor("liu").update(met, {"status": "已解决"})  # met by the township itself; still open above
    _, token = desk.node.add_device(COUNTY, "区-link", tier="county")
    pid, action = ids["person"], f"/staff/records/{ids['person']}/remove"
    with serve(desk.node) as link:
        sync_link(county, "http://township", token, client=link)  # the county pulls both
        escalations.act(county, chen, accepted, "accept")
        sync_link(county, "http://township", token, client=link)  # its step comes down
        escalations.act(county, chen, racing, "accept")  # not yet heard below when she is removed

        ask = post(desk, action, desk.client.get(f"/staff/records/{pid}").text, reason="去世", note="11月20日在家中去世")
        assert ask.text.count("已上报县区，将撤回") == 3  # the resolved need's escalation listed too
        assert "以下需求已办完，但仍在县区办理中" in ask.text
        notice(desk, post(desk, action, ask.text))
        for esc in (accepted, racing):
            got = desk.node.store.get(esc)
            assert got is not None and (got.data["status"], got.data["answer"]) == ("已撤回", "居民已故，需求已取消")
        sync_link(county, "http://township", token, client=link)  # the county's accept down, the withdrawals up

    for store in (county.store, desk.node.store):  # the same on both nodes
        assert {e: (store.get(e).data["status"], store.get(e).data["answer"])  # type: ignore[union-attr]
                for e in (accepted, racing, finished)} == {
            accepted: ("已撤回", "居民已故，需求已取消"), racing: ("已撤回", "居民已故，需求已取消"),
            finished: ("已撤回", "居民已故")}
    assert [op.user for op in county.store.record_ops(racing)][-1] == "liu"  # withdrawn again, in her name
    assert not any("11月20日" in str(op.value) for _, op in county.store.ops_since(0))  # the note stays below
    with pytest.raises(escalations.WrongStatus):
        escalations.act(county, chen, accepted, "resolve", "已协调")
    desk.sync()
    assert desk.tab.store.get(racing).data["status"] == "已撤回"  # type: ignore[union-attr]


def test_a_need_a_tablet_records_for_her_after_the_removal_is_cancelled_when_it_arrives(desk: Desk) -> None:
    "Recorded offline, before the tablet heard of the removal: kept, with its history, but not open"
    ids = resident(desk)
    pid = ids["person"]
    page = desk.client.get(f"/staff/records/{pid}").text
    notice(desk, post(desk, f"/staff/records/{pid}/remove", post(desk, f"/staff/records/{pid}/remove", page,
                                                                  reason="迁出到其他镇街").text))
    late = desk.tab.editor.create("need", {"unit": V1, "person": pid, "category": "医疗健康", "status": "待处理"})
    desk.tab.editor.update(ids["resolved"], {"status": "服务中"})  # and a finished one reopened
    desk.sync()
    store = desk.node.store
    for rid in (late, ids["resolved"]):
        ops = store.record_ops(rid)
        assert store.get(rid).data["status"] == "已取消" and not store.get(rid).deleted  # type: ignore[union-attr]
        assert (ops[-1].field, ops[-1].user, ops[-1].tier) == ("status", "liu", 2)  # the node's, for who removed her
        assert any(op.field == "status" and op.user == "张丽" for op in ops)  # the worker's own, kept
    assert desk.tab.store.get(late).data["status"] == "已取消"  # type: ignore[union-attr]  # in the same sync
    needs = {tuple(c.k): c.v for k, cs in figures(store, TOWNSHIP).items() if k.startswith("needs/") for c in cs}
    assert (V1, "医疗健康", "待处理") not in needs and needs[(V1, "医疗健康", "已取消")] == [1]


def test_an_escalation_withdrawn_and_made_again_in_the_same_minute_shows_the_new_one(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    "``escalated_at`` has minute precision: the newer id wins the tie, on the need's page and on the tablet"
    ids = resident(desk)
    need, liu = ids["waiting"], Staff("liu", "township", TOWNSHIP)
    monkeypatch.setattr(escalations, "now_text", lambda: "2026-12-03T19:19")
    first = escalations.escalate(desk.node, liu, need, "独居老人需每日送餐")
    escalations.act(desk.node, liu, first, "withdraw", "摘要写错了，重新上报")
    second = escalations.escalate(desk.node, liu, need, "独居高龄老人需每日送餐，本镇无助餐点")
    desk.sync()
    assert [e["id"] for e in list_escalations(desk.node.store, need=need)] == [second, first]
    page = desk.client.get(f"/staff/records/{need}").text
    card = page[page.index('id="escalation"'):]
    assert re.search(r'<span class="chip [^"]*">(.*?)</span>', card).group(1) == "已上报"  # type: ignore[union-attr]
    assert f'action="/staff/records/{need}/escalate"' not in card  # open: no second 上报县区
    assert [e["id"] for e in list_escalations(desk.tab.store, need=need)][0] == second  # the tablet's latest


def test_the_countys_step_on_an_escalation_no_removal_withdrew_stands(desk: Desk, county: Node) -> None:
    "Left open by an older version's removal (its need was resolved, so not cancelled): the county may take it on"
    ids = resident(desk)
    liu, chen = Staff("liu", "township", TOWNSHIP), Staff("chen", "county", COUNTY)
    esc = escalations.escalate(desk.node, liu, ids["waiting"], "独居老人需每日送餐")
    desk.node.editor("liu").update(ids["waiting"], {"status": "服务中"})
    desk.node.editor("liu").update(ids["waiting"], {"status": "已解决"})
    desk.node.editor("liu").update(ids["serving"], {"status": "已取消"})
    desk.node.editor("liu").delete(ids["person"])  # removed as an older version did: the escalation left open
    _, token = desk.node.add_device(COUNTY, "区-link", tier="county")
    with serve(desk.node) as link:
        sync_link(county, "http://township", token, client=link)
        escalations.act(county, chen, esc, "accept")
        sync_link(county, "http://township", token, client=link)
        sync_link(county, "http://township", token, client=link)
    for store in (county.store, desk.node.store):
        got = store.get(esc)
        assert got is not None and (got.data["status"], got.data.get("answer")) == ("已受理", None)


def test_a_withdrawal_racing_the_countys_accept_is_written_again(desk: Desk, county: Node) -> None:
    """Withdrawn by hand and escalated again at the township while the county accepted the first: the
    county's step wins by tier, then the township node withdraws it again with its reason, so the need has
    one open escalation on both nodes"""
    ids = resident(desk)
    liu, chen = Staff("liu", "township", TOWNSHIP), Staff("chen", "county", COUNTY)
    first = escalations.escalate(desk.node, liu, ids["waiting"], "需每日送餐")
    _, token = desk.node.add_device(COUNTY, "区-link", tier="county")
    with serve(desk.node) as link:
        sync_link(county, "http://township", token, client=link)
        escalations.act(county, chen, first, "accept")  # at the county, not yet heard below
        escalations.act(desk.node, liu, first, "withdraw", "摘要不完整，重新上报")
        second = escalations.escalate(desk.node, liu, ids["waiting"], "独居高龄老人需每日送餐，本镇无助餐点")
        sync_link(county, "http://township", token, client=link)
        sync_link(county, "http://township", token, client=link)
    for store in (county.store, desk.node.store):
        assert [(e["id"], e["status"], e.get("answer")) for e in list_escalations(store, need=ids["waiting"])] == [
            (second, "已上报", None), (first, "已撤回", "摘要不完整，重新上报")]
        assert store.get(first).conflicts == []  # type: ignore[union-attr]
    assert county.store.record_ops(first)[-1].user == "liu"  # in the name of who withdrew it
