"""A township node whose disk died, restored from last night's backup: the tablets still hold every op
the node lost, and once each has synced (twice, in any order) every replica is back in step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client.tablet import SyncFailed, Tablet
from server.node import Device, Node
from sync.store import Store

from e2e_harness import (
    TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess, device_ops, enrolment_code, known_reattach_code, no_sleep,
    node_digest, populate,
)

pytestmark = pytest.mark.e2e


def _backup(db: Path, to: Path) -> None:
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _restore(node: NodeProcess, db: Path, backup: Path) -> None:
    "The operator stops the node, restores the backup (a new epoch) and starts it again"
    node.stop()
    Node.restore(db, backup)
    node.start()


def test_a_node_restored_from_a_backup_brings_every_tablet_back_in_step(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    node.start()
    a, b, c = (make_tablet(enrol(V1, user)[1], user) for user in ("a", "b", "c"))
    populate(a, 2, tag="a")
    for tab in (a, b, c):
        tab.sync()
    _backup(node_db, tmp_path / "nightly.db")
    populate(b, 2, tag="b")
    for tab in (b, a, c):
        tab.sync()
    assert all(tab.store.digest() == node_digest(node_db, V1) for tab in (a, b, c))

    node.kill()  # the disk dies; the operator restores last night's backup
    for suffix in ("", "-wal", "-shm"):
        Path(f"{node_db}{suffix}").unlink(missing_ok=True)
    (tmp_path / "nightly.db").rename(node_db)
    node.start()

    populate(b, 1, tag="b-after")  # work goes on
    for tab in (b, a, c, b, a, c):
        tab.sync()

    for tab in (a, b, c):
        assert device_ops(node_db, tab.device) == device_ops(Path(tab.path), tab.device), (
            "the tablets re-send what the node lost")
        assert tab.pending() == 0
    want = node_digest(node_db, V1)
    assert b.store.digest() == want
    assert {tab.device: tab.store.digest() == want for tab in (a, c)} == {a.device: True, c.device: True}, (
        "a tablet whose cursor is past the restored node's sequence misses what others push after "
        "the restore")


def test_cunsync_backup_while_syncing_and_restore_start_a_new_epoch(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    import threading

    from click.testing import CliRunner

    from client.cli import cli

    runner = CliRunner()
    node.start()
    a, b = (make_tablet(enrol(V1, user)[1], user) for user in ("a", "b"))
    populate(a, 30, tag="a")
    syncing = threading.Thread(target=a.sync)
    syncing.start()  # the backup runs while a tablet pushes
    r = runner.invoke(cli, ["backup", "--db", str(node_db), "--to", str(tmp_path / "nightly-backup.db")])
    syncing.join()
    assert r.exit_code == 0 and "backed up" in r.output, r.output
    assert sqlite3.connect(tmp_path / "nightly-backup.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
    b.sync()
    populate(b, 2, tag="b")
    b.sync()
    epoch = node.health()["epoch"]

    node.kill()
    r = runner.invoke(cli, ["restore", "--db", str(node_db), "--from", str(tmp_path / "nightly-backup.db")])
    assert r.exit_code == 0 and "new epoch" in r.output, r.output
    node.start()
    assert node.health()["epoch"] != epoch
    for tab in (a, b, a, b):
        tab.sync()
    want = node_digest(node_db, V1)
    for tab in (a, b):
        assert device_ops(node_db, tab.device) == device_ops(Path(tab.path), tab.device)
        assert tab.pending() == 0 and tab.store.digest() == want
    r = runner.invoke(cli, ["restore", "--db", str(node_db), "--from", str(tmp_path / "nope.db")])
    assert r.exit_code == 2  # click: the backup must exist


@pytest.mark.parametrize("first", ["worker", "township"])
def test_a_tablet_sends_a_restored_node_its_ops_of_a_record_that_left_its_village(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path, first: str
) -> None:
    """A worker registers a resident; the township, on a tablet of its own, moves the resident to another
    village, so the worker's tablet forgets the record. Then the node is restored from a backup older
    than the resident. The tablet still sends the ops it wrote for that resident: without them the node
    would hold a gap in its ops, acknowledge nothing after it, and the resident would be lost. Whichever
    tablet syncs first, the node takes both: the move names the worker's op that made the record."""
    node.start()
    wang = make_tablet(enrol(V1, "wang")[1], "wang")
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    _backup(node_db, tmp_path / "nightly.db")  # the tablets are enrolled; none of their ops is in it
    rid = wang.create("person", {"name": "李四", "phone": "13800000000"})
    wang.sync()
    staff.sync()
    staff.update(rid, {"unit": V2})
    staff.sync()
    wang.sync()
    assert wang.get(rid) is None, "the record left the worker's village"
    populate(wang, 3, tag="w")  # work goes on, offline
    mine = device_ops(Path(wang.path), wang.device)

    node.kill()  # the disk dies; the operator restores the backup
    for suffix in ("", "-wal", "-shm"):
        Path(f"{node_db}{suffix}").unlink(missing_ok=True)
    (tmp_path / "nightly.db").rename(node_db)
    node.start()
    order = (wang, staff) if first == "worker" else (staff, wang)
    order[0].sync()
    order[1].sync()  # a first sync after the restore sends all the tablet wrote again
    assert wang.pending() == 0 and staff.pending() == 0
    for tab in (staff, wang, staff):
        tab.sync()

    written = mine[3]  # the highest counter the tablet wrote
    assert device_ops(node_db, wang.device) == (written, written, 1, written), "every op the worker wrote"
    assert wang.pending() == 0 and wang.acked() == written
    for tab, unit in ((wang, V1), (staff, None)):
        assert tab.store.digest() == node_digest(node_db, unit), tab.device
    with Store(node_db) as s:
        rec = s.get(rid)
    assert rec is not None and rec.unit == V2 and rec.data["name"] == "李四"


def test_a_tablet_that_edited_its_own_resident_registered_after_the_backup_syncs_with_the_restored_node(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    "Its first request pushes only the edit (after its old acknowledgement): the node lacks the resident"
    node.start()
    tab = make_tablet(enrol(V1, "王芳")[1], "a")
    tab.create("person", {"name": "王五"})
    tab.sync()
    _backup(node_db, tmp_path / "nightly.db")
    rid = tab.create("person", {"name": "张三"})
    tab.sync()  # registered and synced the next morning
    tab.update(rid, {"phone": "13800001111"})  # then edited offline
    _restore(node, node_db, tmp_path / "nightly.db")  # a new epoch

    tab.sync()

    assert tab.pending() == 0
    assert device_ops(node_db, tab.device) == device_ops(Path(tab.path), tab.device)
    assert tab.store.digest() == node_digest(node_db, V1)


def test_two_tablets_that_edited_each_others_residents_registered_after_the_backup_both_get_through(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    "Each one's edit names a resident the restored node lacks, whose registration only the other re-sends"
    node.start()
    a, b = make_tablet(enrol(V1, "王芳")[1], "a"), make_tablet(enrol(V1, "王二")[1], "b")
    a.sync()
    b.sync()
    _backup(node_db, tmp_path / "nightly.db")
    p, q = a.create("person", {"name": "张三"}), b.create("person", {"name": "李四"})
    for tab in (a, b, a):
        tab.sync()
    a.update(q, {"phone": "13800001111"})
    b.update(p, {"phone": "13900002222"})
    _restore(node, node_db, tmp_path / "nightly.db")

    for tab in (a, b, a, b):
        tab.sync()

    want = node_digest(node_db, V1)
    for tab in (a, b):
        assert tab.pending() == 0 and tab.store.digest() == want
        assert device_ops(node_db, tab.device) == device_ops(Path(tab.path), tab.device)
    assert (a.get(q).data["phone"], b.get(p).data["phone"]) == ("13800001111", "13900002222")  # type: ignore[union-attr]


def test_a_tablet_drops_a_resident_that_left_its_village_before_the_backup_the_node_was_restored_from(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    """The worker's tablet is offline while the township moves one of its residents to another village.
    The node is then restored from a backup taken after the move: the tablet's cursor is of the old epoch,
    so it fetches the village whole (a bootstrap), which never names that resident. At its end the tablet
    drops the resident, and keeps everything it wrote meanwhile."""
    node.start()
    wang = make_tablet(enrol(V1, "wang")[1], "wang")
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")
    moved = wang.create("person", {"name": "李四", "phone": "13800000000"})
    stays = populate(wang, 2, tag="w")
    wang.sync()
    staff.sync()
    staff.update(moved, {"unit": V2})
    staff.sync()  # the worker's tablet is offline from here on: it still shows 李四 in its village
    _backup(node_db, tmp_path / "nightly.db")
    later = populate(wang, 2, tag="after")  # registered offline, after the backup
    written = device_ops(Path(wang.path), wang.device)[3]
    _restore(node, node_db, tmp_path / "nightly.db")

    report = wang.sync()

    assert wang.get(moved) is None and report.removed == 1, "the resident left the village before the backup"
    assert all(wang.get(r) is not None for r in stays + later)
    assert wang.pending() == 0 and wang.store.digest() == node_digest(node_db, V1)
    assert device_ops(node_db, wang.device) == (written, written, 1, written), "every op the worker wrote"
    staff.sync()
    assert staff.get(moved).unit == V2  # type: ignore[union-attr]


def test_a_bootstrap_in_small_pages_keeps_the_records_the_tablet_pushed_behind_them(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a restore, a tablet re-sends a few ops a request while the node pages through the village in
    record-id order: a resident whose registration reaches the node after the pages passed its id is in no
    page. The tablet pushed it, so the node has it: the tablet keeps it."""
    import client.tablet as tablet_mod

    node.start()
    a, b = make_tablet(enrol(V1, "王芳")[1], "a"), make_tablet(enrol(V1, "王二")[1], "b")
    a.sync()
    b.sync()
    _backup(node_db, tmp_path / "nightly.db")
    mine = populate(a, 3, tag="a")  # older ids than b's
    theirs = populate(b, 3, tag="b")
    for tab in (a, b, a):
        tab.sync()
    _restore(node, node_db, tmp_path / "nightly.db")
    b.sync()  # b's residents are back on the node first: pages of two records reach them early
    monkeypatch.setattr(tablet_mod, "FIRST_PUSH", 2)
    monkeypatch.setattr(tablet_mod, "PUSH_BATCH", 2)

    report = a.sync(limit=16)  # pages of two records

    assert report.rounds > 10
    assert all(a.get(r) is not None for r in mine + theirs)
    assert a.pending() == 0 and a.store.digest() == node_digest(node_db, V1)
    assert device_ops(node_db, a.device) == device_ops(Path(a.path), a.device)


def test_a_bootstrap_begun_by_an_older_tablet_version_drops_nothing_at_its_end(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    "The version before kept no list of what the pages brought: what the first pages brought must stay"
    node.start()
    a, b = make_tablet(enrol(V1, "王芳")[1], "a"), make_tablet(enrol(V1, "王二")[1], "b")
    theirs = populate(b, 3, tag="b")
    b.sync()
    a.sync()
    _backup(node_db, tmp_path / "nightly.db")
    _restore(node, node_db, tmp_path / "nightly.db")  # nothing lost, but a new epoch: the tablet bootstraps
    a.sync(limit=16, max_rounds=1)  # the first page, as an older version took it; then it was upgraded
    a.store.conn.execute("DROP TABLE bootstrap_seen")
    a.store.set_meta("bootstrap_acked", "")

    a.sync(limit=16)

    assert all(a.get(r) is not None for r in theirs)
    assert a.store.digest() == node_digest(node_db, V1)


def test_a_tablet_keeps_a_resident_the_restored_node_lacks_whose_tablet_was_lost(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, tmp_path: Path
) -> None:
    """Another tablet registered the resident after the backup, and was lost with the node's disk: this
    tablet's copy is the last one. Its bootstrap does not bring the resident, and the node, asked, does
    not hold it: the tablet keeps it."""
    node.start()
    a, b = make_tablet(enrol(V1, "王芳")[1], "a"), make_tablet(enrol(V1, "王二")[1], "b")
    a.sync()
    _backup(node_db, tmp_path / "nightly.db")
    rid = b.create("person", {"name": "李四", "phone": "13800000000"})
    b.sync()
    a.sync()
    assert a.get(rid) is not None
    _restore(node, node_db, tmp_path / "nightly.db")

    a.sync()  # b is never heard of again

    assert a.get(rid) is not None and a.get(rid).data["name"] == "李四"  # type: ignore[union-attr]
    assert a.pending() == 0 and not a._get("unseen")


def _devices(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT device, token_hash FROM devices ORDER BY device").fetchall()
    finally:
        conn.close()


def test_a_tablet_enrolled_after_the_backup_re_attaches_with_a_new_code_and_re_sends_all_its_work(
    node: NodeProcess, node_db: Path, tmp_path: Path
) -> None:
    """The restored node does not know a tablet enrolled after the backup and refuses its token. The
    township gives it a new code; the tablet re-attaches under its device id, keeping everything, and
    its next sync re-sends every op it wrote. A code for another village, or a device id the node knows,
    is refused, and nothing is written."""
    from click.testing import CliRunner

    from client.cli import cli

    runner = CliRunner()
    node.start()
    old = Tablet.enrol(tmp_path / "old.db", node.url, enrolment_code(node_db, user="甲"), sleep=no_sleep)
    populate(old, 1, tag="old")
    old.sync()
    _backup(node_db, tmp_path / "nightly.db")
    new = Tablet.enrol(tmp_path / "new.db", node.url, enrolment_code(node_db), sleep=no_sleep)
    mine = populate(new, 3, tag="new")
    new.sync()  # the node acknowledges the day's work; then the disk dies
    assert new.pending() == 0
    node.stop()
    r = runner.invoke(cli, ["restore", "--db", str(node_db), "--from", str(tmp_path / "nightly.db")])
    assert r.exit_code == 0 and "Revoke again" in r.output and "re-attach" in r.output, r.output
    node.start()
    with pytest.raises(SyncFailed) as err:
        new.sync(retries=0)
    assert (err.value.status, err.value.code) == (401, "unauthorized")

    before = _devices(node_db)
    for code in (enrolment_code(node_db),  # a code for a new tablet of that worker: it re-attaches nothing
                 enrolment_code(node_db, unit=V2, reattach=new.device),  # made for it, but another village
                 known_reattach_code(node_db, old.device)):  # another tablet's
        with pytest.raises(SyncFailed) as err:
            new.reattach(code)
        assert (err.value.status, err.value.code) == (403, "enrolment_mismatch"), code
    known = known_reattach_code(node_db, old.device, user="甲")  # a device the node knows
    with pytest.raises(SyncFailed) as err:
        old.reattach(known)
    assert (err.value.status, err.value.code) == (409, "device_exists")
    with pytest.raises(SyncFailed) as err:  # a code to re-attach a tablet enrols no other
        Tablet.enrol(tmp_path / "thief.db", node.url, enrolment_code(node_db, reattach=new.device), sleep=no_sleep)
    assert (err.value.status, err.value.code) == (403, "enrolment_mismatch")
    assert _devices(node_db) == before, "nothing written"
    old.sync()  # its token is unchanged
    old.close()
    token, device = new._get("token"), new.device
    new.close()

    r = runner.invoke(cli, ["tablet", "init", "--db", str(new.path), "--server", node.url,
                            "--code", enrolment_code(node_db, reattach=device)])
    assert r.exit_code == 0 and device in r.output, r.output
    new = Tablet(new.path, sleep=no_sleep)
    try:
        assert new._get("token") != token and new.pending() == device_ops(Path(new.path), new.device)[0]
        new.sync()
        assert new.pending() == 0
        written = device_ops(Path(new.path), new.device)
        assert device_ops(node_db, new.device) == written == (written[3], written[3], 1, written[3]), (
            "every op the tablet wrote reached the node")
        assert all(new.get(r) is not None for r in mine)
        assert new.store.digest() == node_digest(node_db, V1)
    finally:
        new.close()


def test_a_re_attach_whose_answer_was_lost_is_done_again_with_a_new_code(
    node: NodeProcess, node_db: Path, tmp_path: Path
) -> None:
    "The node made the device, the answer never reached the tablet: the tablet is not locked out for good"
    node.start()
    _backup(node_db, tmp_path / "nightly.db")
    tab = Tablet.enrol(tmp_path / "tab.db", node.url, enrolment_code(node_db), sleep=no_sleep)
    try:
        populate(tab, 1, tag="t")
        tab.sync()
        node.stop()
        Node.restore(node_db, tmp_path / "nightly.db")
        n = Node(node_db, TOWNSHIP)
        try:  # the re-attach the node answered, its answer lost on the way
            lost = n.create_enrolment(V1, "王芳", reattach=tab.device).code
            n.enrol(lost, reattach=Device(tab.device, tab._get("user"), tab.unit, "village"))
        finally:
            n.close()
        node.start()
        with pytest.raises(SyncFailed):
            tab.sync(retries=0)  # its token is still the old one

        tab.reattach(enrolment_code(node_db, reattach=tab.device))
        tab.sync()

        assert tab.pending() == 0 and tab.store.digest() == node_digest(node_db, V1)
        assert device_ops(node_db, tab.device) == device_ops(Path(tab.path), tab.device)
    finally:
        tab.close()
