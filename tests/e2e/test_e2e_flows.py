"""Reference data down and escalations up, across real nodes: a township and a county served by hypercorn
on loopback, a city node's database driven in-process (it is only ever a client), links synced with
``server.relay.sync_link`` as the node's scheduler would, and real tablets under the township.

    city (in-process) ──sync_link──▶ county (hypercorn) ──sync_link──▶ township (hypercorn) ◀── tablets
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from client.cli import cli
from client.tablet import SyncFailed, Tablet
from e2e_harness import TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess, op_count
from server.node import Node
from server.reference import publish_units
from server.relay import LinkError, LinkSyncResult, LinkUnreachable, link_progress, sync_link
from sync import reference as ref
from sync import units as unitlib
from sync.errors import InvalidValue, ReadOnly
from sync.hlc import HLC
from sync.schema import CATEGORIES
from sync.ops import Op, uuid7
from sync.types import SET, TIER_RANK
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, decode, encode, pack_ops, unpack_ops

pytestmark = pytest.mark.e2e
COUNTY = "510903000000"  # 船山区
CITY = "510900000000"  # 遂宁市
OTHER_COUNTY = "510904000000"  # 安居区
PASSWORD = "correct horse 1"
RESIDENT = {"name": "张秀英", "phone": "13800138000", "id_number": "51090319480301123X",
            "address": "育才路12号3单元", "description": "独居需要助餐，女儿在外地"}


def link_token(db: Path, unit: str, upper: str) -> tuple[str, str]:
    "A link credential the node at ``db`` issues to the node above it: (device, token)"
    n = Node(db, unit)
    try:
        return n.add_device(upper, f"{unitlib.tier_of(upper)}-link", tier=unitlib.tier_of(upper))
    finally:
        n.close()


def relay(db: Path, unit: str, url: str, token: str) -> LinkSyncResult:
    "One scheduled link sync of the node at ``db`` with the node below it at ``url``"
    n = Node(db, unit)
    try:
        return sync_link(n, url, token)
    finally:
        n.close()


@contextmanager
def on(db: Path, unit: str) -> Iterator[Node]:
    n = Node(db, unit)
    try:
        yield n
    finally:
        n.close()


@dataclass
class Chain:
    city_db: Path
    county_db: Path
    county: NodeProcess
    township: NodeProcess
    county_token: str  # the county's link credential on the township
    county_device: str
    city_token: str  # the city's link credential on the county

    def down(self) -> tuple[LinkSyncResult, LinkSyncResult]:
        "The city syncs with the county, then the county with the township"
        return (relay(self.city_db, CITY, self.county.url, self.city_token),
                relay(self.county_db, COUNTY, self.township.url, self.county_token))


@pytest.fixture
def chain(tmp_path: Path, node_db: Path, node: NodeProcess) -> Iterator[Chain]:
    city_db, county_db = tmp_path / "city.db", tmp_path / "county.db"
    with on(city_db, CITY):
        pass
    with on(county_db, COUNTY) as c:
        c.accounts.add("chen", PASSWORD, role="county", unit=COUNTY)
    with on(node_db, TOWNSHIP) as t:
        t.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP)
    county_device, county_token = link_token(node_db, TOWNSHIP, COUNTY)
    _, city_token = link_token(county_db, COUNTY, CITY)
    county = NodeProcess(county_db, COUNTY).start()
    node.start()
    try:
        yield Chain(city_db, county_db, county, node, county_token, county_device, city_token)
    finally:
        county.kill()


# -- staff over HTTP --------------------------------------------------------------------------------

def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


@contextmanager
def signed_in(url: str, username: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    "A client signed in as a staff member, and the headers its state-changing requests carry"
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as c:
        r = c.post("/login", data={"username": username, "password": PASSWORD, "csrf": _csrf(c.get("/login").text)})
        assert r.status_code == 303, r.text
        yield c, {"x-csrf-token": _csrf(c.get("/staff", follow_redirects=True).text)}  # county: /rollup


def _ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def _assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


# -- reference data down ------------------------------------------------------------------------------

def test_a_catalogue_change_made_at_the_city_reaches_a_tablet(chain: Chain, enrol: Enrol,
                                                              make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    assert tab.need_categories() == list(CATEGORIES)  # the built-in list until a catalogue arrives
    with on(chain.city_db, CITY) as city:
        ed = city.editor("市民政局")
        for i, code in enumerate(("养老服务", "儿童关爱", "防汛救灾")):
            ref.set_catalogue(ed, "need_category", code, name=code, order=i)
        ref.set_catalogue(ed, "service_type", "上门探访", name="上门探访")
        ref.add_notice(ed, "汛期安全通知", "各村做好汛期巡查")
        unitlib.load_units(city.store.db, unitlib.SAMPLE_TREE)
        assert publish_units(city) == 16  # 遂宁市 and everything under it
    with on(chain.county_db, COUNTY) as county:
        ref.add_task(county.editor("区民政局"), "高龄老人走访", due_date="2024-06-30")
    to_county, to_township = chain.down()
    assert to_county.pushed > 0 and to_township.pushed > to_county.pushed  # the county relays and adds its own
    tab.sync()
    assert tab.need_categories() == ["养老服务", "儿童关爱", "防汛救灾", *CATEGORIES[2:]]  # added to the built-ins
    # a category the city added is one a worker can record, and the township accepts it
    person = tab.create("person", {"name": "李大爷"})
    need = tab.create("need", {"person": person, "category": "防汛救灾"})
    with pytest.raises(InvalidValue):
        tab.create("need", {"person": person, "category": "没有的类别"})
    tab.sync()
    with on(chain.township.db, TOWNSHIP) as t:
        assert t.store.get(need).data["category"] == "防汛救灾"  # type: ignore[union-attr]
    assert [e["code"] for e in tab.catalogue("service_type")] == ["上门探访"]
    assert [(n["title"], n["unit"]) for n in tab.notices()] == [("汛期安全通知", CITY)]
    assert [(t["title"], t["due_date"]) for t in tab.tasks()] == [("高龄老人走访", "2024-06-30")]
    # the unit tree: the tablet's own village and the units above it, not a neighbouring village
    assert {r.data["code"] for r in tab.list("unit")} == {CITY, COUNTY, TOWNSHIP, V1}
    with on(chain.township.db, TOWNSHIP) as t:  # the township holds its villages, not another county
        assert {r.data["code"] for r in t.store.records("unit")} == {CITY, COUNTY, TOWNSHIP, V1, V2, "510903001003"}
    # the city retires a category: the tablet stops offering it at its next sync
    with on(chain.city_db, CITY) as city:
        ref.set_catalogue(city.editor("市民政局"), "need_category", "儿童关爱", retired=True)
    second = chain.down()
    assert second[0].pushed == 1 and second[1].pushed == 1  # only what changed
    tab.sync()
    assert tab.need_categories() == ["养老服务", "防汛救灾", *CATEGORIES[2:]]
    with on(chain.county_db, COUNTY) as county:
        progress = {p["child"]: p for p in link_progress(county)}
    assert progress[TOWNSHIP]["pushed_total"] == to_township.pushed + 1


def test_sample_units_the_city_takes_out_of_its_tree_are_withdrawn_below(chain: Chain, enrol: Enrol,
                                                                          make_tablet: MakeTablet,
                                                                          tmp_path: Path) -> None:
    tab, other = make_tablet(enrol(V1, "王芳")[1]), make_tablet(enrol(V2, "李娜")[1])
    with on(chain.city_db, CITY) as city:
        unitlib.load_units(city.store.db, unitlib.SAMPLE_TREE)
        assert publish_units(city) == 16
    chain.down()
    tab.sync()
    other.sync()
    assert {r.data["code"] for r in other.list("unit")} == {CITY, COUNTY, TOWNSHIP, V2}
    # the city imports the real tree: 育才路街道 and 育才社区 are in it, the other sample units are not
    real = tmp_path / "real.csv"
    real.write_text("code,name\n510900000000,遂宁市\n510903000000,船山区\n510903001000,育才路街道\n"
                    "510903001001,育才社区\n", encoding="utf-8")
    r = CliRunner().invoke(cli, ["units", "import", "--db", str(chain.city_db), str(real)])
    assert r.exit_code == 0 and "withdrew 10 of them" in r.output, r.output  # 4 of the 14 were never published
    chain.down()
    tab.sync()
    other.sync()
    with on(chain.township.db, TOWNSHIP) as t:  # the township drops its two invented villages
        assert {r.data["code"] for r in t.store.records("unit")} == {CITY, COUNTY, TOWNSHIP, V1}
        assert {r.data["code"] for r in t.store.records("unit", include_deleted=True)} == {
            CITY, COUNTY, TOWNSHIP, V1, V2, "510903001003"}
    assert {r.data["code"] for r in tab.list("unit")} == {CITY, COUNTY, TOWNSHIP, V1}
    assert {r.data["code"] for r in other.list("unit")} == {CITY, COUNTY, TOWNSHIP}  # its village's name is gone


def test_concurrent_reference_edits_at_two_tiers_resolve_by_tier(chain: Chain, enrol: Enrol,
                                                                  make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    with on(chain.city_db, CITY) as city:
        rid = ref.set_catalogue(city.editor("市"), "need_category", "心理支持", name="心理支持")
    chain.down()
    # the city and the county rename the same entry before either hears of the other's change
    with on(chain.city_db, CITY) as city:
        ref.set_catalogue(city.editor("市"), "need_category", "心理支持", name="心理疏导")
    with on(chain.county_db, COUNTY) as county:
        ref.set_catalogue(county.editor("县"), "need_category", "心理支持", name="心理关爱")
    chain.down()
    tab.sync()
    with on(chain.county_db, COUNTY) as county:
        assert county.store.get(rid).data["name"] == "心理疏导"  # type: ignore[union-attr]
        assert len(county.store.state(rid)["name"]) == 2  # both live: concurrent, no conflict kept open
        assert county.store.get(rid).conflicts == []  # type: ignore[union-attr]
    assert tab.catalogue("need_category")[0]["name"] == "心理疏导"  # the city beats the county
    assert tab.conflicts() == []
    # a county edit made after seeing the city's value replaces it (it names both in pred)
    with on(chain.county_db, COUNTY) as county:
        ref.set_catalogue(county.editor("县"), "need_category", "心理支持", name="心理健康")
    chain.down()
    tab.sync()
    assert tab.catalogue("need_category")[0]["name"] == "心理健康"
    # the same entry created independently at two tiers is one record; the city's values win
    with on(chain.city_db, CITY) as city:
        ref.set_catalogue(city.editor("市"), "need_category", "法律援助", name="法律援助", order=5)
    with on(chain.county_db, COUNTY) as county:
        ref.set_catalogue(county.editor("县"), "need_category", "法律援助", name="法律服务", order=1)
    chain.down()
    tab.sync()
    [entry] = [e for e in tab.catalogue("need_category") if e["code"] == "法律援助"]
    assert (entry["name"], entry["order"], entry["unit"]) == ("法律援助", 5, CITY)


def test_a_tablet_cannot_author_reference_data(chain: Chain, enrol: Enrol, make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    with pytest.raises(ReadOnly):
        ref.add_notice(tab.editor, "村里自己的通知")
    before = op_count(chain.township.db)
    for coll, values in (("notice", {"unit": V1, "title": "村里自己的通知"}),
                         ("catalogue", {"unit": V1, "kind": "need_category", "code": "x", "name": "x"}),
                         ("escalation", {"unit": V1, "need": uuid7(), "category": "其他", "summary": "x"})):
        with tab.store.transaction():
            rid = tab.editor.create(coll, values)  # the library would refuse: go round it
        with pytest.raises(SyncFailed) as exc:
            tab.sync()
        assert (exc.value.status, exc.value.code) == (403, "read_only")
        tab.store.forget([rid])
        tab._set("acked", str(tab.store.conn.execute("SELECT max_counter FROM sites WHERE device = ?",
                                                     (tab.device,)).fetchone()[0]))
    assert op_count(chain.township.db) == before


# -- the link credential: what it may carry ----------------------------------------------------------------

def _link_post(chain: Chain, ops: list[Op], cursor: int = 0) -> httpx.Response:
    req = SyncRequest(protocol=PROTOCOL_VERSION, device=chain.county_device, cursor=cursor, ops=pack_ops(ops))
    return httpx.post(chain.township.url + "/api/sync", content=encode(req), timeout=30,
                      headers={"authorization": f"Bearer {chain.county_token}", "content-type": MSGPACK})


def _op(coll: str, record: str, field: str, value: Any, *, unit: str = COUNTY, site: str | None = None,
        counter: int = 1, tier: int | None = None) -> Op:
    return Op(site or f"node-{unit}", counter, HLC().now(), coll, record, field, SET, value, (), "x", unit,
              TIER_RANK[unitlib.tier_of(unit)] if tier is None else tier)


def test_a_county_link_carries_no_personal_record_either_way(chain: Chain, enrol: Enrol,
                                                              make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    person = tab.create("person", {k: RESIDENT[k] for k in ("name", "phone", "id_number", "address")})
    need = tab.create("need", {"person": person, "category": "养老服务", "description": RESIDENT["description"]})
    tab.sync()
    before = op_count(chain.township.db)
    # pushing persons, needs or services over the link is refused, whoever claims to author them
    for coll, rid, field, value in (("person", uuid7(), "unit", V1), ("person", person, "name", "李四"),
                                    ("need", need, "status", "已关闭"), ("service", uuid7(), "unit", V1)):
        _assert_error(_link_post(chain, [_op(coll, rid, field, value)]), 403, "collection_forbidden")
    assert op_count(chain.township.db) == before
    # an escalation op must not write into a person record by naming its id
    _assert_error(_link_post(chain, [_op("escalation", person, "summary", "x")]), 403, "out_of_scope")
    # a pull over the link brings escalations only
    with on(chain.township.db, TOWNSHIP) as t:
        t.editor("liu").create("escalation", {"unit": V1, "need": need, "category": "养老服务",
                                              "summary": "助餐点缺位", "status": "已上报"})
    r = _link_post(chain, [])
    assert r.status_code == 200, r.text
    ops, _ = unpack_ops(decode(r.content, SyncResponse).ops)
    assert ops and {o.coll for o in ops} == {"escalation"}
    assert not any(RESIDENT[k] in str(o.value) for o in ops for k in RESIDENT)


def test_relayed_ops_from_a_lower_tier_or_forged_authors_are_refused(chain: Chain) -> None:
    before = op_count(chain.township.db)
    notice = uuid7()
    for op in (
        _op("notice", notice, "unit", TOWNSHIP, unit=TOWNSHIP),  # authored by the township itself
        _op("notice", notice, "unit", V1, unit=V1),  # by a village
        _op("notice", notice, "unit", COUNTY, unit=OTHER_COUNTY),  # by another county
        _op("notice", notice, "unit", COUNTY, site="node-510900000000"),  # the city's device, the county's unit
        _op("notice", notice, "unit", COUNTY, site="tab-123456"),  # a tablet's device
        _op("notice", notice, "unit", COUNTY, tier=TIER_RANK["city"]),  # the county claiming the city's tier
        _op("notice", notice, "unit", COUNTY, unit="bogus", tier=3),
    ):
        _assert_error(_link_post(chain, [op]), 403, "forged_op")
    # the city's ops relayed by the county are accepted; a notice for another county's units is not
    _assert_error(_link_post(chain, [_op("notice", notice, "unit", OTHER_COUNTY)]), 403, "out_of_scope")
    assert op_count(chain.township.db) == before
    city_notice = [_op("notice", notice, "unit", CITY, unit=CITY),
                   _op("notice", notice, "title", "市里的通知", unit=CITY, counter=2)]
    assert _link_post(chain, city_notice).status_code == 200
    assert op_count(chain.township.db) == before + 2
    assert _link_post(chain, city_notice).status_code == 200  # a retry is harmless
    tampered = [_op("notice", notice, "title", "改过的通知", unit=CITY, counter=2)]
    _assert_error(_link_post(chain, tampered), 403, "forged_op")
    assert op_count(chain.township.db) == before + 2


def test_a_link_credential_is_only_for_an_upper_node(chain: Chain, enrol: Enrol) -> None:
    with on(chain.township.db, TOWNSHIP) as t:
        with pytest.raises(Exception, match="is not"):
            t.add_device(CITY, "city", tier="county")  # a city unit at the county tier is no link
        with pytest.raises(Exception, match="is not"):
            t.add_device(OTHER_COUNTY, "elsewhere", tier="county")
    # a village token is no link credential: the county node says so and writes nothing
    _, village_token = enrol(V2, "赵")
    with on(chain.county_db, COUNTY) as county, pytest.raises(LinkError) as exc:
        sync_link(county, chain.township.url, village_token)
    assert exc.value.code == "wrong_link_credential"


# -- escalation up (吹哨报到) ------------------------------------------------------------------------------

def _scan(db: Path, words: list[str]) -> list[str]:
    "Which of the words appear anywhere in a database's files (the file, its WAL)"
    blob = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    return [w for w in words if w.encode() in blob]


def test_an_escalation_round_trips_and_no_personal_field_reaches_the_county(
        chain: Chain, enrol: Enrol, make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    person = tab.create("person", {k: RESIDENT[k] for k in ("name", "phone", "id_number", "address")})
    need = tab.create("need", {"person": person, "category": "养老服务", "urgency": "较急",
                               "description": RESIDENT["description"]})
    tab.sync()
    assert tab.escalation(need) is None
    with signed_in(chain.township.url, "liu") as (c, h):
        made = _ok(c.post("/api/staff/escalations", json={"need": need, "summary": "独居老人助餐点缺位，需区民政协调"},
                          headers=h), 201)
        _assert_error(c.post("/api/staff/escalations", json={"need": need, "summary": "再报一次"}, headers=h),
                      400, "already_escalated")
        _assert_error(c.post("/api/staff/escalations", json={"need": uuid7(), "summary": "x"}, headers=h),
                      404, "not_found")
        _assert_error(c.post(f"/api/staff/escalations/{made['id']}/accept", json={}, headers=h), 403, "forbidden")
    up = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert up.pulled > 0
    with signed_in(chain.county.url, "chen") as (c, h):
        [row] = _ok(c.get("/api/staff/escalations"))
        assert (row["id"], row["unit"], row["category"], row["urgency"], row["status"]) == (
            made["id"], V1, "养老服务", "较急", "已上报")
        page = c.get("/staff/escalations")
        assert page.status_code == 200 and "独居老人助餐点缺位" in page.text and "受理" in page.text
        _assert_error(c.post(f"/api/staff/escalations/{made['id']}/resolve", json={"answer": "x"}, headers=h),
                      400, "wrong_status")
        _ok(c.post(f"/api/staff/escalations/{made['id']}/accept", json={}, headers=h))
        _ok(c.post(f"/api/staff/escalations/{made['id']}/assign", json={"department": "区民政局"}, headers=h))
        _assert_error(c.post(f"/api/staff/escalations/{made['id']}/resolve", json={"answer": " "}, headers=h),
                      400, "invalid_value")
        done = _ok(c.post(f"/api/staff/escalations/{made['id']}/resolve",
                          json={"answer": "已协调街道食堂每日送餐"}, headers=h))
        assert done["status"] == "已办结" and done["answered_at"]
        _assert_error(c.post(f"/api/staff/escalations/{made['id']}/accept", json={}, headers={}), 403, "csrf")
    down = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert down.pushed == 6 and down.pulled == 0  # accepted (and the village); department; resolved, answer, at
    with signed_in(chain.township.url, "liu") as (c, _):
        [row] = _ok(c.get("/api/staff/escalations"))
        assert (row["status"], row["department"], row["answer"]) == ("已办结", "区民政局", "已协调街道食堂每日送餐")
    tab.sync()
    got = tab.escalation(need)
    assert got is not None
    assert (got["status"], got["department"], got["answer"]) == ("已办结", "区民政局", "已协调街道食堂每日送餐")
    # nothing personal ever reached the county: not in its records, not in its op log, not in its files
    words = [RESIDENT[k] for k in RESIDENT]
    assert _scan(chain.township.db, words) == words  # the scan finds them where they are
    assert _scan(chain.county_db, words) == []
    with on(chain.county_db, COUNTY) as county:
        assert county.store.records("person") == county.store.records("need") == []


# -- the link's progress: resumable, repeatable, restored nodes ---------------------------------------------

def test_a_link_sync_repeated_after_lost_answers_changes_nothing(chain: Chain, enrol: Enrol,
                                                                 make_tablet: MakeTablet) -> None:
    tab = make_tablet(enrol(V1, "王芳")[1])
    with on(chain.county_db, COUNTY) as county:
        ref.add_notice(county.editor("区"), "通知")
        ref.add_task(county.editor("区"), "任务")
    with on(chain.township.db, TOWNSHIP) as t:
        need = tab.create("need", {"person": tab.create("person", {"name": "李大爷"}), "category": "其他"})
        tab.sync()
        t.editor("liu").create("escalation", {"unit": V1, "need": need, "category": "其他", "summary": "s"})
    first = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert first.pushed > 0 and first.pulled > 0
    township_ops, county_ops = op_count(chain.township.db), op_count(chain.county_db)
    # as if every answer had been lost: the county starts over, and both sides end as they were
    with on(chain.county_db, COUNTY) as county:
        county.store.conn.execute("UPDATE relay_links SET cursor = 0, cursor_check = '', pushed_seq = 0")
    again = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert (again.pushed, again.pulled) == (first.pushed, first.pulled)
    assert (op_count(chain.township.db), op_count(chain.county_db)) == (township_ops, county_ops)
    quiet = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert (quiet.pushed, quiet.pulled, quiet.rounds) == (0, 0, 1)


def test_a_lower_node_restored_from_a_backup_gets_everything_again(chain: Chain, tmp_path: Path) -> None:
    backup = tmp_path / "before.db"
    with on(chain.township.db, TOWNSHIP) as t:
        t.backup(backup)
        # an escalation made after the backup: the restore loses it on the township, not on the county
        esc = t.editor("liu").create("escalation", {"unit": V1, "need": uuid7(), "category": "其他",
                                                    "summary": "备份之后的事项", "status": "已上报"})
    assert relay(chain.county_db, COUNTY, chain.township.url, chain.county_token).pulled == 5
    with on(chain.county_db, COUNTY) as county:
        ref.add_notice(county.editor("区"), "恢复前的通知")
    with signed_in(chain.county.url, "chen") as (c, h):
        _ok(c.post(f"/api/staff/escalations/{esc}/accept", json={}, headers=h))
    assert relay(chain.county_db, COUNTY, chain.township.url, chain.county_token).pushed == 6
    chain.township.stop()
    Node.restore(chain.township.db, backup)  # the notice and the escalation are gone; the epoch is new
    chain.township.start()
    again = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
    assert again.pushed == 6  # everything again, and the link is not stuck on the escalation it lost
    with on(chain.township.db, TOWNSHIP) as t:
        assert [n["title"] for n in ref.notices(t.store)] == ["恢复前的通知"]
        assert t.store.get(esc).data == {"unit": V1, "status": "已受理"}  # type: ignore[union-attr]


def test_an_unreachable_lower_node_is_reported_and_nothing_changes(chain: Chain) -> None:
    with on(chain.county_db, COUNTY) as county:
        ref.add_notice(county.editor("区"), "通知")
    chain.township.stop()
    with on(chain.county_db, COUNTY) as county, pytest.raises(LinkUnreachable):
        sync_link(county, chain.township.url, chain.county_token)
    with on(chain.county_db, COUNTY) as county:
        assert link_progress(county) == []
    chain.township.start()
    assert relay(chain.county_db, COUNTY, chain.township.url, chain.county_token).pushed == 4


def test_a_county_sends_each_township_its_own_answers_and_everyone_the_notices(
        chain: Chain, tmp_path: Path) -> None:
    other_unit, other_village = "510903002000", "510903002001"
    other_db = tmp_path / "other-township.db"
    with on(other_db, other_unit) as o:
        o.editor("zhou").create("escalation", {"unit": other_village, "need": uuid7(), "category": "其他",
                                               "summary": "另一个街道的事项", "status": "已上报"})
    _, other_token = link_token(other_db, other_unit, COUNTY)
    other = NodeProcess(other_db, other_unit).start()
    try:
        with on(chain.township.db, TOWNSHIP) as t:
            mine = t.editor("liu").create("escalation", {"unit": V1, "need": uuid7(), "category": "其他",
                                                         "summary": "本街道的事项", "status": "已上报"})
        for url, token in ((chain.township.url, chain.county_token), (other.url, other_token)):
            assert relay(chain.county_db, COUNTY, url, token).pulled == 5
        with on(chain.county_db, COUNTY) as county:
            ref.add_notice(county.editor("区"), "全区通知")
            county.editor("chen").update(mine, {"status": "已受理"})
        to_mine = relay(chain.county_db, COUNTY, chain.township.url, chain.county_token)
        to_other = relay(chain.county_db, COUNTY, other.url, other_token)
        assert (to_mine.pushed, to_other.pushed) == (5, 4)  # the notice to both; the answer to its township
        with on(other_db, other_unit) as o:
            assert [n["title"] for n in ref.notices(o.store)] == ["全区通知"]
            assert o.store.get(mine) is None
            assert [e["summary"] for e in ref.escalations(o.store)] == ["另一个街道的事项"]
        with on(chain.township.db, TOWNSHIP) as t:
            assert t.store.get(mine).data["status"] == "已受理"  # type: ignore[union-attr]
            assert [e["summary"] for e in ref.escalations(t.store)] == ["本街道的事项"]
        with on(chain.county_db, COUNTY) as county:
            assert {p["child"] for p in link_progress(county)} == {TOWNSHIP, other_unit}
    finally:
        other.kill()
