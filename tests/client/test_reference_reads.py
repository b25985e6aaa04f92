"""The tablet's reads of synced reference data: need categories from the catalogue (the built-in list
until one arrives), notices and tasks in order, a need's escalation; and ``cunsync need add`` offering the
synced categories. The township's ops are applied straight to the tablet's store, as a sync would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from click.testing import CliRunner

from client.cli import cli
from client.tablet import Tablet
from sync import reference as ref
from sync.edit import Editor
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
    assert tab.need_categories() == ["养老服务", "防汛救灾"]
    assert [e["code"] for e in tab.catalogue("need_category", include_retired=True)] == ["旧类别", "养老服务", "防汛救灾"]
    assert [n["title"] for n in tab.notices()] == ["新通知", "旧通知"]
    assert [t["title"] for t in tab.tasks()] == ["六月的任务", "没有期限的任务"]
    need = tab.create("need", {"person": tab.create("person", {"name": "李大爷"}), "category": "防汛救灾"})
    assert tab.escalation(need) is None
    from_township(tab, township, lambda ed: ed.create("escalation", {
        "unit": VILLAGE, "need": need, "category": "防汛救灾", "summary": "需要沙袋", "status": "已上报"}))
    assert tab.escalation(need)["status"] == "已上报"  # type: ignore[index]
    tab.close()


def test_need_add_offers_the_synced_categories(tmp_path: Path, township: Store) -> None:
    db = tmp_path / "t.db"
    tab = tablet(db)
    person = tab.create("person", {"name": "李大爷"})
    from_township(tab, township, lambda ed: ref.set_catalogue(ed, "need_category", "防汛救灾", name="防汛救灾"))
    tab.close()
    runner = CliRunner()
    ok = runner.invoke(cli, ["need", "add", "--db", str(db), "--person", person, "--category", "防汛救灾"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(cli, ["need", "add", "--db", str(db), "--person", person, "--category", "养老服务"])
    assert refused.exit_code == 2 and "防汛救灾" in refused.output  # the catalogue replaced the built-in list
