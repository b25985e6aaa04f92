"""The tablet's reads of synced reference data: need categories and service types, the built-in list with
the synced catalogue's entries, notices and tasks in order, a need's escalation; and ``cunsync need add``
and ``service add`` offering them. The township's ops are applied straight to the tablet's store, as a sync would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from click.testing import CliRunner

from client.cli import cli
from client.tablet import Tablet
from sync import reference as ref
from sync.edit import Editor
from sync.errors import InvalidValue
from sync.schema import CATEGORIES
from sync.store import Store

VILLAGE, TOWNSHIP = "510903001001", "510903001000"


def tablet(path: Path) -> Tablet:
    tab = Tablet(path)
    for k, v in (("device", "tab-ref-1"), ("user", "王芳"), ("unit", VILLAGE), ("tier", "village")):
        tab.store.set_meta(k, v)
    return tab


@pytest.fixture
def township() -> Iterator[Store]:
    "The township node's replica, one per test (a device never reuses a counter)"
    with Store() as s:
        yield s


def from_township(tab: Tablet, node: Store, write: object) -> None:
    "Author at the township's replica with ``write(editor)`` and deliver all its ops to the tablet"
    ed = Editor(node, device=f"node-{TOWNSHIP}", user="liu", unit=TOWNSHIP, tier="township")
    write(ed)  # type: ignore[operator]
    tab.store.apply([op for _, op in node.ops_since(0)])


def test_the_tablet_reads_what_the_township_published(tmp_path: Path, township: Store) -> None:
    tab = tablet(tmp_path / "t.db")
    assert tab.need_categories() == list(CATEGORIES) and tab.notices() == tab.tasks() == []

    def publish(ed: Editor) -> None:
        ref.set_catalogue(ed, "need_category", "防汛救灾", name="防汛救灾", order=2)
        ref.set_catalogue(ed, "need_category", "养老服务", name="养老服务", order=1)
        ref.set_catalogue(ed, "need_category", "旧类别", name="旧类别", order=0, retired=True)
        ref.add_notice(ed, "旧通知", published_at="2024-01-01T08:00")
        ref.add_notice(ed, "新通知", published_at="2024-05-01T08:00")
        ref.add_task(ed, "没有期限的任务")
        ref.add_task(ed, "六月的任务", due_date="2024-06-30")

    from_township(tab, township, publish)
    assert tab.need_categories() == ["养老服务", "儿童关爱", "防汛救灾", *CATEGORIES[2:]]
    assert [e["code"] for e in tab.catalogue("need_category", include_retired=True)] == ["旧类别", "养老服务", "防汛救灾"]
    assert [n["title"] for n in tab.notices()] == ["新通知", "旧通知"]
    assert [t["title"] for t in tab.tasks()] == ["六月的任务", "没有期限的任务"]
    need = tab.create("need", {"person": tab.create("person", {"name": "李大爷"}), "category": "防汛救灾"})
    assert tab.escalation(need) is None
    from_township(tab, township, lambda ed: ed.create("escalation", {
        "unit": VILLAGE, "need": need, "category": "防汛救灾", "summary": "需要沙袋", "status": "已上报"}))
    assert tab.escalation(need)["status"] == "已上报"  # type: ignore[index]
    tab.close()


def test_a_catalogue_adds_to_the_built_in_list_and_overrides_its_entries(tmp_path: Path, township: Store) -> None:
    tab = tablet(tmp_path / "t.db")

    def publish(ed: Editor) -> None:
        ref.set_catalogue(ed, "service_type", "防汛救灾", name="防汛救灾", order=11)
        ref.set_catalogue(ed, "service_type", "上门探访", name="上门探访")  # no order: last
        ref.set_catalogue(ed, "service_type", "其他", name="其他", order=12)  # moved after 防汛救灾
        ref.set_catalogue(ed, "service_type", "家政服务", name="家政服务", retired=True)  # hidden
        ref.set_catalogue(ed, "service_type", "应急转移", name="应急转移", order=3)  # a tie: then by code

    from_township(tab, township, publish)
    assert tab.service_types() == ["养老服务", "儿童关爱", "困难救助", "应急转移", "助残服务", "医疗健康", "生活物资",
                                   "心理支持", "就业帮扶", "防汛救灾", "其他", "上门探访"]
    assert tab.need_categories() == list(CATEGORIES), "each catalogue on its own"
    # a record's own value is kept among the choices, even one no longer offered
    assert ref.offered(tab.store, "service_type", "家政服务")[-2:] == ["上门探访", "家政服务"]
    assert ref.offered(tab.store, "service_type", "养老服务") == tab.service_types()
    tab.close()


def test_a_built_in_entry_is_retired_or_moved_without_retyping_its_name(tmp_path: Path, township: Store) -> None:
    tab = tablet(tmp_path / "t.db")

    def publish(ed: Editor) -> None:
        ref.set_catalogue(ed, "need_category", "养老服务", retired=True)
        ref.set_catalogue(ed, "need_category", "其他", order=0)
        with pytest.raises(InvalidValue, match="needs a name"):  # not a built-in: it needs one
            ref.set_catalogue(ed, "need_category", "防汛救灾", order=3)

    from_township(tab, township, publish)
    assert tab.need_categories() == ["其他", *[c for c in CATEGORIES if c not in ("养老服务", "其他")]]
    assert {e["code"]: e["name"] for e in ref.catalogue(tab.store, "need_category", include_retired=True)} == {
        "养老服务": "养老服务", "其他": "其他"}
    tab.close()


def test_need_and_service_add_offer_the_synced_catalogues(tmp_path: Path, township: Store) -> None:
    db = tmp_path / "t.db"
    tab = tablet(db)
    person = tab.create("person", {"name": "李大爷"})

    def publish(ed: Editor) -> None:
        ref.set_catalogue(ed, "need_category", "防汛救灾", name="防汛救灾")
        ref.set_catalogue(ed, "service_type", "上门探访", name="上门探访")
        ref.set_catalogue(ed, "service_type", "家政服务", name="家政服务", retired=True)

    from_township(tab, township, publish)
    tab.close()
    runner = CliRunner()
    for args in (["need", "add", "--category", "防汛救灾"], ["need", "add", "--category", "养老服务"],
                 ["service", "add", "--type", "上门探访"], ["service", "add", "--type", "养老服务"]):
        ok = runner.invoke(cli, [*args, "--db", str(db), "--person", person])
        assert ok.exit_code == 0, ok.output
    for args, option in ((["need", "add", "--category", "没有的类别"], "--category"),
                         (["service", "add", "--type", "家政服务"], "--type")):
        refused = runner.invoke(cli, [*args, "--db", str(db), "--person", person])
        assert refused.exit_code == 2 and option in refused.output and "养老服务" in refused.output, refused.output
    tab = tablet(db)
    assert sorted(s.data["service_type"] for s in tab.list("service")) == ["上门探访", "养老服务"]
    tab.close()
