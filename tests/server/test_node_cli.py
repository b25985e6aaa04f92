"""Node commands (``cunsync ...`` on a township, county or city node) given what an operator really
types: a URL from a Chinese input method, a wrong path, a CSV saved by Excel. Each ends in an ``Error:``
line that says what to fix, never a traceback, and writes nothing."""

from __future__ import annotations

import datetime as dt
import errno
import os
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from client.cli import cli
from server import links, schedule, snapshots
from server.app import check_bind, create_app
from server.cli import ensure_units
from server.cli_common import open_node
from server.node import Device, Node
from server.reference import publish_units
from server.relay import LinkError, sync_link
from sync import reference as ref
from sync.edit import Editor
from sync import units as unitlib
from sync.errors import BadRequest, DeviceExists
from sync.ops import uuid7
from sync.types import CHINA_TIME, DELETED

COUNTY, TOWNSHIP, VILLAGE = "510903000000", "510903001000", "510903001001"


def run(*args: str) -> Result:
    "A cunsync command; an exception other than click's exit is a traceback, which fails the test"
    r = CliRunner().invoke(cli, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    "A cunsync command in a process of its own, with these settings in its environment; a minute at most"
    return subprocess.run([sys.executable, "-m", "client", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.fixture
def county_db(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "county.db")
    n = Node(db, COUNTY)
    ensure_units(n)
    n.close()
    yield db


# -- link URLs --------------------------------------------------------------------------------------

def test_a_link_url_typed_with_a_full_width_colon_is_stored_with_an_ascii_one(county_db: str) -> None:
    r = run("link", "add", "--db", county_db, "--unit", TOWNSHIP, "--url", "http://10.0.0.5：８０００/", "--token", "t")
    assert r.exit_code == 0, r.output
    n = Node(county_db, COUNTY)
    try:
        assert links.get_link(n.store, TOWNSHIP).url == "http://10.0.0.5:8000"
    finally:
        n.close()


@pytest.mark.parametrize("url", ["http://10.0.0.5:8o00", "10.0.0.5:8000", "http://:8000", "ftp://10.0.0.5"])
def test_a_link_url_that_is_no_url_is_refused_and_nothing_stored(county_db: str, url: str) -> None:
    r = run("link", "add", "--db", county_db, "--unit", TOWNSHIP, "--url", url, "--token", "t")
    assert r.exit_code == 1 and "write it as http://HOST:PORT" in r.output, r.output
    n = Node(county_db, COUNTY)
    try:
        assert links.links(n.store) == []
        with pytest.raises(BadRequest) as e:
            links.add_link(n.store, COUNTY, TOWNSHIP, url, "t")
        assert e.value.code == "invalid_url"
    finally:
        n.close()


def test_a_township_node_refuses_a_village_as_a_linked_child(township_db: str) -> None:
    "No node runs at a village: links go county to township and city to county only"
    r = run("link", "add", "--db", township_db, "--unit", VILLAGE, "--url", "http://10.0.0.5:8000", "--token", "t")
    assert r.exit_code == 1 and "township node (510903001000): no node runs below it" in r.output, r.output
    n = Node(township_db, TOWNSHIP)
    try:
        assert links.links(n.store) == []
        with pytest.raises(BadRequest) as e:
            links.add_link(n.store, TOWNSHIP, VILLAGE, "http://10.0.0.5:8000", "t")
        assert e.value.code == "no_nodes_below"
    finally:
        n.close()


def test_a_link_stored_with_a_bad_url_fails_its_pull_and_says_so(county_db: str) -> None:
    "A link added before URLs were checked: the pull records the error, other links go on, nothing raises"
    n = Node(county_db, COUNTY)
    try:
        links.add_link(n.store, COUNTY, TOWNSHIP, "http://127.0.0.1:1", "t")
        links.add_link(n.store, COUNTY, "510903002000", "http://127.0.0.1:1", "t")
        with n.store.transaction() as c:
            c.execute("UPDATE links SET url = 'http://127.0.0.1：8000' WHERE unit = ?", (TOWNSHIP,))
        with pytest.raises(LinkError) as e:
            sync_link(n, "http://127.0.0.1：8000", "t")
        assert e.value.code == "invalid_url"
        schedule.run_once(n)
        assert "InvalidURL" in links.get_link(n.store, TOWNSHIP).last_error
    finally:
        n.close()
    r = run("snapshot", "pull", "--db", county_db)
    assert r.exit_code == 0
    assert f"{TOWNSHIP}: FAILED (InvalidURL" in r.output and "510903002000: FAILED (ConnectError" in r.output
    assert "error: InvalidURL" in run("link", "list", "--db", county_db).output


def test_link_sync_takes_a_url_typed_with_a_full_width_colon(county_db: str) -> None:
    r = run("link-sync", "--db", county_db, "--url", "http://127.0.0.1：1", "--token", "t")
    assert r.exit_code == 1 and "127.0.0.1:1 did not answer" in r.output, r.output
    r = run("link-sync", "--db", county_db, "--url", "http://127.0.0.1:1o", "--token", "t")
    assert r.exit_code == 1 and "write it as http://HOST:PORT" in r.output, r.output


# -- units import -----------------------------------------------------------------------------------

def unit_names(db: str) -> dict[str, str]:
    n = Node(db, COUNTY)
    try:
        return {str(r["code"]): str(r["name"]) for r in n.store.db.query("SELECT code, name FROM units")}
    finally:
        n.close()


def test_units_import_reads_a_csv_excel_saved_in_gbk(county_db: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "units.csv"
    csv_file.write_bytes("code,name\n510903003000,南津路街道\n".encode("gbk"))
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0, r.output
    assert unit_names(county_db)["510903003000"] == "南津路街道"


def test_units_import_of_a_file_that_is_no_text_says_to_save_it_as_csv_utf8(county_db: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "units.xlsx"
    csv_file.write_bytes(b"PK\x03\x04\x80\xff\xfe\x81\x00")
    before = unit_names(county_db)
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 1 and 'save it as "CSV UTF-8"' in r.output, r.output
    assert unit_names(county_db) == before


def test_units_import_into_a_database_that_does_not_exist_makes_none(tmp_path: Path) -> None:
    csv_file = tmp_path / "units.csv"
    csv_file.write_text("code,name\n510903003000,南津路街道\n", encoding="utf-8")
    r = run("units", "import", "--db", str(tmp_path / "townsihp.db"), str(csv_file))
    assert r.exit_code == 1 and "does not exist" in r.output, r.output
    assert not (tmp_path / "townsihp.db").exists()


def test_units_import_removes_the_sample_units_nothing_uses(county_db: str, tmp_path: Path) -> None:
    n = Node(county_db, COUNTY)
    try:  # an invented village that holds a resident, and one a device is enrolled to, stay (with their township)
        n.editor("staff").create("person", {"unit": "510903001002", "name": "张秀英"})
        n.add_device("510903001003", "王芳")
    finally:
        n.close()
    csv_file = tmp_path / "real.csv"
    csv_file.write_text("code,name\n510903000000,船山区\n510903003000,南津路街道\n510903003001,南津社区\n",
                        encoding="utf-8")
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0 and "removed 13 sample units" in r.output, r.output
    assert sorted(unit_names(county_db)) == [
        "150200000000", "150203000000", "510900000000", "510903000000", "510903001000", "510903001002",
        "510903001003", "510903003000", "510903003001", "510904000000", "510921000000"]


SAMPLE, NOWHERE = "510903001002", "510903001001"  # invented villages of the sample tree


def moved_away(county: Node, tmp_path: Path) -> None:
    "A resident registered in SAMPLE who moved to another village: only the op log and moves name SAMPLE"
    ed = county.editor("staff")
    ed.update(ed.create("person", {"unit": SAMPLE, "name": "张秀英"}), {"unit": "510903001003"})


def escalated(county: Node, tmp_path: Path) -> None:
    "An escalation (吹哨报到) of a need in SAMPLE, held on the county"
    county.editor("staff").create("escalation", {"unit": SAMPLE, "need": uuid7(), "category": "其他",
                                                 "summary": "独居老人需要助餐"})


def pulled_from_below(county: Node, tmp_path: Path) -> None:
    "The township's snapshot, pulled over the link: its cells count residents of SAMPLE"
    township = Node(tmp_path / "township.db", TOWNSHIP)
    try:
        for i in range(3):
            township.editor("w").create("person", {"name": f"居民{i}", "unit": SAMPLE, "groups": ["老年人"]})
        _, token = township.add_device(COUNTY, "link", tier="county")
        link = links.add_link(county.store, COUNTY, TOWNSHIP, "http://township", token)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
            from starlette.testclient import TestClient
        with TestClient(create_app(township), base_url=link.url) as child:
            assert links.pull(county.store, link, client=child).ok
    finally:
        township.close()


@pytest.mark.parametrize("named_by", [moved_away, escalated, pulled_from_below], ids=lambda f: f.__name__)
def test_units_import_keeps_a_sample_unit_named_only_by_history_or_roll_ups(
        county_db: str, tmp_path: Path, named_by: Callable[[Node, Path], None]) -> None:
    n = Node(county_db, COUNTY)
    try:
        named_by(n, tmp_path)
    finally:
        n.close()
    csv_file = tmp_path / "real.csv"
    csv_file.write_text("code,name\n510903003000,南津路街道\n", encoding="utf-8")
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0 and "removed" in r.output, r.output
    names = unit_names(county_db)
    assert names[SAMPLE] == "广场社区" and names[TOWNSHIP] == "育才路街道"  # its name stays, and its township's
    assert NOWHERE not in names  # a sample village nothing names still goes


def unit_records(db: str) -> dict[str, bool]:
    "The node's ``unit`` records: code -> deleted"
    n = Node(db, COUNTY)
    try:
        return {str(r.data["code"]): r.deleted for r in n.store.records("unit", include_deleted=True)}
    finally:
        n.close()


def test_units_import_leaves_a_sample_unit_the_node_above_published(county_db: str, tmp_path: Path) -> None:
    "The city answers for the unit records it published: a county taking a sample unit out of its tree keeps them"
    city = "510900000000"
    n = Node(county_db, COUNTY)
    try:
        Editor(n.store, device=f"node-{city}", user="staff", unit=city, tier="city").create(
            "unit", {"code": NOWHERE, "name": "育才社区", "tier": "village", "parent": TOWNSHIP},
            record=ref.unit_id(NOWHERE))
    finally:
        n.close()
    csv_file = tmp_path / "real.csv"
    csv_file.write_text("code,name\n510903003001,南津社区\n", encoding="utf-8")
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0 and "removed" in r.output and "withdrew" not in r.output, r.output
    assert NOWHERE not in unit_names(county_db) and unit_records(county_db) == {NOWHERE: False}


def test_units_import_withdraws_the_removed_sample_units_it_had_published(county_db: str, tmp_path: Path) -> None:
    n = Node(county_db, COUNTY)
    try:
        n.editor("staff").create("person", {"unit": SAMPLE, "name": "张秀英"})
        unitlib.load_units(n.store.db, [unitlib.Unit("510903003000", "南津路街道", "township", COUNTY)])
        assert publish_units(n) == 6  # the county, two townships (one real), three sample villages
        seq = n.store.conn.execute("SELECT max(seq) FROM ops").fetchone()[0]
    finally:
        n.close()
    csv_file = tmp_path / "real.csv"
    csv_file.write_text("code,name\n510903003001,南津社区\n", encoding="utf-8")
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0 and "removed 14 sample units" in r.output and "withdrew 2 of them" in r.output, r.output
    assert unit_records(county_db) == {COUNTY: False, TOWNSHIP: False, SAMPLE: False, "510903003000": False,
                                       NOWHERE: True, "510903001003": True}  # a real unit is never withdrawn
    n = Node(county_db, COUNTY)
    try:  # deleted by ops of the node's own, which the links and tablets below carry
        new = n.store.conn.execute("SELECT DISTINCT record, field FROM ops WHERE seq > ? AND field = ?",
                                   (seq, DELETED)).fetchall()
        assert sorted(new) == sorted((ref.unit_id(c), DELETED) for c in (NOWHERE, "510903001003"))
        assert {o.site for rid, _ in new for o in n.store.record_ops(rid) if o.field == DELETED} == {n.device_id}
    finally:
        n.close()
    r = run("units", "import", "--db", county_db, str(csv_file))
    assert r.exit_code == 0 and "removed" not in r.output and "withdrew" not in r.output, r.output
    # a withdrawn code that a later tree does have is published again
    csv_file.write_text(f"code,name\n{NOWHERE},育才村\n", encoding="utf-8")
    assert run("units", "import", "--db", county_db, str(csv_file)).exit_code == 0
    r = run("units", "publish", "--db", county_db)
    assert r.exit_code == 0 and "published 2 units" in r.output, r.output  # and 南津社区, new
    assert unit_records(county_db)[NOWHERE] is False
    n = Node(county_db, COUNTY)
    try:
        assert n.store.get(ref.unit_id(NOWHERE)).data["name"] == "育才村"  # type: ignore[union-attr]
    finally:
        n.close()


# -- operator mistakes: an Error line, nothing half-written --------------------------------------------

@pytest.fixture
def township_db(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "township.db")
    Node(db, TOWNSHIP).close()
    yield db


def test_a_backup_into_a_folder_not_made_yet_says_so(township_db: str, tmp_path: Path) -> None:
    r = run("backup", "--db", township_db, "--to", str(tmp_path / "backups" / "today.db"))
    assert r.exit_code == 1 and "backups does not exist; create it" in r.output, r.output


def _no_room_past(limit: int) -> Callable[[], None]:
    "A child process that may write no file past ``limit`` bytes: its writes fail (EFBIG), as on a full disk"
    def limit_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_size


def test_a_backup_that_cannot_be_written_whole_says_so_and_leaves_no_partial_file(
    township_db: str, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "township-2026-11-26.db").write_bytes(b"yesterday's backup")
    to = backups / "township-2026-11-27.db"
    out = subprocess.run([sys.executable, "-m", "client", "backup", "--db", township_db, "--to", str(to)],
                         capture_output=True, text=True, timeout=60,
                         preexec_fn=_no_room_past(os.path.getsize(township_db) // 2))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"Error: the backup could not be written to {to} ("), out.stderr
    assert "no partial backup was left there" in out.stderr
    assert sorted(p.name for p in backups.iterdir()) == ["township-2026-11-26.db"]


def test_a_backup_onto_a_full_disk_says_the_backup_disk_is_full(
    township_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:  # a file system with delayed allocation finds out as late as this
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    (tmp_path / "backups").mkdir()
    r = run("backup", "--db", township_db, "--to", str(tmp_path / "backups" / "today.db"))
    assert r.exit_code == 1, r.output
    assert f"Error: the backup disk is full: {tmp_path / 'backups'} has no room" in r.output
    assert list((tmp_path / "backups").iterdir()) == []


@pytest.mark.usefixtures("umask_022")
def test_the_database_its_wal_and_shm_a_backup_and_a_restored_database_are_private(tmp_path: Path) -> None:
    "They hold residents' personal data and the session secret: no other local account may read them"
    db, backup = tmp_path / "township.db", tmp_path / "nightly.db"

    def modes() -> dict[str, str]:
        return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(tmp_path.iterdir())}

    node = Node(db, TOWNSHIP)  # as `cunsync serve` makes it
    try:
        node.editor().create("person", {"unit": VILLAGE, "name": "张秀英", "id_number": "510903194203081234"})
        assert run("backup", "--db", str(db), "--to", str(backup)).exit_code == 0
        assert modes() == {"nightly.db": "0o600", "township.db": "0o600", "township.db-shm": "0o600",
                           "township.db-wal": "0o600"}
    finally:
        node.close()
    os.chmod(db, 0o644)  # made by an older version: the restore replaces it with a private file
    assert run("restore", "--db", str(db), "--from", str(backup)).exit_code == 0
    assert modes()["township.db"] == "0o600"
    assert set(modes().values()) == {"0o600"}, modes()


def test_a_restore_while_the_node_serves_the_database_is_refused_and_restores_nothing(tmp_path: Path) -> None:
    db, backup = tmp_path / "township.db", tmp_path / "nightly.db"
    node = Node(db, TOWNSHIP)  # open, as `cunsync serve` holds it
    try:
        node.backup(backup)
        node.editor().create("person", {"unit": VILLAGE, "name": "张秀英"})  # after the backup
        r = run("restore", "--db", str(db), "--from", str(backup))
        assert r.exit_code == 1, r.output
        assert r.output == (f"Error: {db} is open in another process, most likely the node serving it: stop the node "
                            "first (`sudo systemctl stop cunsync`), then restore; nothing was restored\n")
        with pytest.raises(BadRequest) as e:
            Node.restore(db, backup)
        assert e.value.code == "database_in_use"
        assert [p.data["name"] for p in node.store.records("person")] == ["张秀英"]
    finally:
        node.close()
    assert not Path(f"{db}.restoring").exists()
    assert run("restore", "--db", str(db), "--from", str(backup)).exit_code == 0, "once the node is stopped"
    n = Node(db, TOWNSHIP)
    try:
        assert n.store.records("person") == []
    finally:
        n.close()


@pytest.mark.parametrize("content", ["not sqlite", "sqlite without a node"])
def test_a_restore_from_a_file_that_is_no_node_backup_restores_nothing(
    township_db: str, tmp_path: Path, content: str
) -> None:
    source = tmp_path / "other.db"
    if content == "not sqlite":
        source.write_text("not a database\n")
    else:
        with closing(sqlite3.connect(source)) as conn:
            conn.execute("CREATE TABLE x (a)")
    before = Path(township_db).read_bytes()
    r = run("restore", "--db", township_db, "--from", str(source))
    assert r.exit_code == 1 and "is not a cunsync node backup; nothing was restored" in r.output, r.output
    assert Path(township_db).read_bytes() == before
    with pytest.raises(BadRequest) as e:
        Node.restore(township_db, source)
    assert e.value.code == "not_a_backup"


@pytest.mark.parametrize("content", ["not sqlite", "sqlite without a node"])
def test_a_node_command_on_a_file_that_is_no_node_database_says_so(tmp_path: Path, content: str) -> None:
    db = tmp_path / "other.db"
    if content == "not sqlite":
        db.write_text("not a database\n")
    else:
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("CREATE TABLE x (a)")
    r = run("device", "list", "--db", str(db))
    assert r.exit_code == 1 and "is not a cunsync node database" in r.output, r.output


def test_a_device_id_taken_already_is_refused(township_db: str) -> None:
    args = ("device", "add", "--db", township_db, "--unit", VILLAGE, "--device", "tab-1", "--user")
    assert run(*args, "王芳").exit_code == 0
    r = run(*args, "李四")
    assert r.exit_code == 1 and "there is a device 'tab-1' already" in r.output, r.output
    n = Node(township_db, TOWNSHIP)
    try:
        assert [(d["device"], d["user"]) for d in n.devices()] == [("tab-1", "王芳")]
        with pytest.raises(BadRequest) as e:
            n.add_device(VILLAGE, "李四", device="tab-1")
        assert e.value.code == "device_exists"
    finally:
        n.close()


def enrolments(db: str) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM enrolments").fetchone()[0])


def test_an_enrolment_qr_code_for_a_folder_not_made_yet_makes_no_code(township_db: str, tmp_path: Path) -> None:
    r = run("enrol", "create", "--db", township_db, "--unit", VILLAGE, "--user", "王芳",
            "--png", str(tmp_path / "qr" / "王芳.png"))
    assert r.exit_code == 2 and "qr does not exist" in r.output and "enrolment code" not in r.output, r.output
    assert enrolments(township_db) == 0


@pytest.mark.parametrize("hours", ["0", "-1", "721"])
def test_an_enrolment_code_lives_an_hour_to_30_days(township_db: str, hours: str) -> None:
    r = run("enrol", "create", "--db", township_db, "--unit", VILLAGE, "--user", "王芳", "--hours", hours)
    assert r.exit_code == 2 and "1<=x<=720" in r.output, r.output
    assert enrolments(township_db) == 0


def test_a_code_to_re_attach_a_tablet_the_node_knows_is_refused_at_once(township_db: str) -> None:
    "Its code would be refused when used (device_exists); one whose re-attach answer was lost gets one"
    known, lost = "tab-0123456789ab", "tab-ba9876543210"
    n = Node(township_db, TOWNSHIP)
    try:
        n.add_device(VILLAGE, "王芳", device=known)
        n.enrol(n.create_enrolment(VILLAGE, "李四", reattach=lost).code,
                reattach=Device(lost, "李四", VILLAGE, "village"))  # the node made it; its answer never arrived
        made = enrolments(township_db)
        with pytest.raises(DeviceExists) as e:  # the node refuses it, whoever asks (the workbench's page too)
            n.create_enrolment(VILLAGE, "王芳", reattach=known)
        assert (e.value.status, e.value.code, e.value.details) == (409, "device_exists", {"device": known})
        assert enrolments(township_db) == made
    finally:
        n.close()
    args = ("enrol", "create", "--db", township_db, "--unit", VILLAGE, "--reattach")
    r = run(*args, known, "--user", "王芳")
    assert r.exit_code == 1 and f"this node knows tablet {known} already" in r.output, r.output[:300]
    assert "no code was made" in r.output and enrolments(township_db) == made
    r = run(*args, lost, "--user", "李四")
    assert r.exit_code == 0 and f"to re-attach tablet {lost} only" in r.output, r.output[:200]


@pytest.fixture
def utc_machine() -> Iterator[None]:
    "The node's machine set to UTC, as many server installs are"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.usefixtures("utc_machine")
def test_an_enrolment_code_says_when_it_expires_in_china_time_whatever_the_machine_s_zone(township_db: str) -> None:
    r = run("enrol", "create", "--db", township_db, "--unit", VILLAGE, "--user", "王芳")
    with closing(sqlite3.connect(township_db)) as conn:
        (expires_at,) = conn.execute("SELECT expires_at FROM enrolments").fetchone()
    china = dt.datetime.fromtimestamp(expires_at, CHINA_TIME).strftime("%Y-%m-%d %H:%M")
    assert r.exit_code == 0 and f"; valid until {china} China time (UTC+8), once" in r.output, r.output[:200]


@pytest.mark.usefixtures("utc_machine")
def test_device_list_says_when_each_tablet_was_last_seen_and_marks_the_silent_ones(township_db: str) -> None:
    "In China time, as the workbench's devices page: those it shows in red are marked"
    now = int(time.time())
    n = Node(township_db, TOWNSHIP)
    try:
        for device in ("tab-seen", "tab-silent", "tab-never", "tab-new", "tab-revoked"):
            n.add_device(VILLAGE, "王芳", device=device)
        with n.store.transaction() as c:
            for device, created, seen in (("tab-seen", now - 30 * 86400, now - 3600),
                                          ("tab-silent", now - 30 * 86400, now - 10 * 86400),
                                          ("tab-never", now - 10 * 86400, None),
                                          ("tab-revoked", now - 30 * 86400, now - 10 * 86400)):
                c.execute("UPDATE devices SET created_at = ?, last_seen = ? WHERE device = ?", (created, seen, device))
        n.revoke("tab-revoked")
    finally:
        n.close()
    r = run("device", "list", "--db", township_db)
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()}

    def seen(ago: int) -> str:
        return "last seen " + dt.datetime.fromtimestamp(now - ago, CHINA_TIME).strftime("%Y-%m-%d %H:%M")

    assert seen(3600) in lines["tab-seen"] and "call the worker" not in lines["tab-seen"]
    assert seen(10 * 86400) in lines["tab-silent"] and lines["tab-silent"].endswith("SILENT: call the worker")
    assert "last seen never" in lines["tab-never"] and lines["tab-never"].endswith("NEVER SYNCED: call the worker")
    assert "last seen never" in lines["tab-new"] and "call the worker" not in lines["tab-new"]
    assert seen(10 * 86400) in lines["tab-revoked"] and "call the worker" not in lines["tab-revoked"]


def test_a_node_is_not_served_as_another_unit(township_db: str) -> None:
    with pytest.raises(click.ClickException) as e:
        open_node(township_db, "510903002000")
    assert f"is the node of {TOWNSHIP}, not of 510903002000" in e.value.message
    with socket.socket() as s:  # a port free to listen on: were the unit not checked, the node would serve
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
    out = process("serve", "--db", township_db, "--unit", "510903002000", "--bind", free, env={})
    assert out.returncode == 1 and f"give --unit {TOWNSHIP}" in out.stderr, out.stderr


@pytest.fixture
def busy() -> Iterator[str]:
    "An address another process listens on"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


FIX = "give --bind HOST:PORT (env CUNSYNC_BIND), e.g. 127.0.0.1:8000, or 0.0.0.0:8000 for every address"


def test_a_node_that_cannot_listen_where_it_is_told_says_which_address_and_what_to_do(
    busy: str, tmp_path: Path
) -> None:
    "One line, not hypercorn's traceback, and no database made"
    db = str(tmp_path / "township.db")
    for bind, message in ((busy, f"{busy} is in use: another cunsync serve? Stop it, or pick another port with "
                                 "--bind HOST:PORT (env CUNSYNC_BIND)"),
                          ("127.0.0.1:99999", f"127.0.0.1:99999: port 99999 is not a port (1 to 65535); {FIX}"),
                          ("nonsense-host.invalid:8000",
                           f"nonsense-host.invalid:8000: no host 'nonsense-host.invalid' is known; {FIX}"),
                          ("127.0.0.1", f"'127.0.0.1' is not HOST:PORT; {FIX}")):
        r = run("serve", "--db", db, "--unit", TOWNSHIP, "--bind", bind)
        assert r.exit_code == 1 and r.output == f"Error: {message}\n", r.output
    assert list(tmp_path.iterdir()) == []


def test_a_socket_file_or_a_systemd_socket_is_left_to_hypercorn(tmp_path: Path) -> None:
    "hypercorn serves unix:PATH (behind a proxy) and fd://N (systemd socket activation): no HOST:PORT to check"
    for bind in (f"unix:{tmp_path / 'node.sock'}", "fd://3"):
        check_bind(bind)
    assert list(tmp_path.iterdir()) == []


def test_a_node_told_to_listen_on_an_address_in_use_by_cunsync_bind_says_so_in_one_line(
    busy: str, tmp_path: Path
) -> None:
    "As systemd starts it, its settings in the environment"
    out = process("serve", env={"CUNSYNC_DB": str(tmp_path / "township.db"), "CUNSYNC_UNIT": TOWNSHIP,
                                "CUNSYNC_BIND": busy})
    assert out.returncode == 1, out.stderr
    assert out.stderr == f"Error: {busy} is in use: another cunsync serve? Stop it, or pick another port with " \
                         "--bind HOST:PORT (env CUNSYNC_BIND)\n", out.stderr


def test_a_task_is_due_on_a_day_of_the_calendar(township_db: str) -> None:
    r = run("task", "add", "--db", township_db, "--title", "高龄老人走访", "--due", "2024-06-31")
    assert r.exit_code == 2 and "Invalid value for --due: 2024-06-31 is no date" in r.output, r.output
    r = run("task", "add", "--db", township_db, "--title", "高龄老人走访", "--due", "２０２４-06-30")
    assert r.exit_code == 0, r.output
    n = Node(township_db, TOWNSHIP)
    try:
        assert [t.data["due_date"] for t in n.store.records("task")] == ["2024-06-30"]
    finally:
        n.close()


def test_the_node_that_set_a_task_records_its_progress_and_a_node_below_does_not(township_db: str) -> None:
    r = run("task", "add", "--db", township_db, "--title", "高龄老人走访", "--due", "2024-06-30")
    assert r.exit_code == 0, r.output
    mine = r.output.strip()
    n = Node(township_db, TOWNSHIP)
    try:  # a task the county set, as a link brings it down
        theirs = ref.add_task(Editor(n.store, device=f"node-{COUNTY}", user="县区", unit=COUNTY, tier="county"),
                              "防汛巡查")
    finally:
        n.close()
    listed = run("task", "list", "--db", township_db)
    assert listed.exit_code == 0 and f"{mine}  {TOWNSHIP}  待办  2024-06-30  高龄老人走访" in listed.output, listed.output
    r = run("task", "status", "--db", township_db, "--id", mine, "--status", "进行中")
    assert r.exit_code == 0 and r.output == f"task {mine}: 进行中\n", r.output
    r = run("task", "status", "--db", township_db, "--id", theirs, "--status", "已完成")
    assert r.exit_code == 1 and f"was set by {COUNTY}; only that unit's node records its progress" in r.output
    assert run("task", "status", "--db", township_db, "--id", "nope", "--status", "已完成").exit_code == 1
    n = Node(township_db, TOWNSHIP)
    try:
        assert {t.id: t.data["status"] for t in n.store.records("task")} == {mine: "进行中", theirs: "待办"}
    finally:
        n.close()


def test_a_month_is_closed_once_it_has_begun(township_db: str) -> None:
    r = run("snapshot", "close", "--db", township_db, "--month", "2099-01")
    assert r.exit_code == 2 and "2099-01 has not begun" in r.output, r.output
    assert run("snapshot", "close", "--db", township_db, "--month", "2024-06").exit_code == 0


def closed(db: str) -> list[str]:
    n = Node(db, TOWNSHIP)
    try:
        return [month for month, _, _ in snapshots.closed_months(n.store)]
    finally:
        n.close()


def test_a_month_typed_without_its_zero_is_closed_and_one_that_is_no_month_is_refused_as_such(
    township_db: str,
) -> None:
    "Never told that a past month, or no month at all, has not begun"
    r = run("snapshot", "close", "--db", township_db, "--month", "2024-6")
    assert r.exit_code == 0 and "closed 2024-06:" in r.output, r.output
    year = dt.datetime.now(CHINA_TIME).year
    for month in (f"{year}/01", "abc", "2024-13", "2024-0"):
        r = run("snapshot", "close", "--db", township_db, "--month", month)
        assert r.exit_code == 2, r.output
        assert f"month {month!r} is not YYYY-MM, e.g. 2026-10 [invalid_month]" in r.output, r.output
        assert "has not begun" not in r.output
    assert closed(township_db) == ["2024-06"]


def test_a_roll_up_for_a_folder_not_made_yet_says_so_before_pulling(county_db: str, tmp_path: Path) -> None:
    r = run("snapshot", "pull", "--db", county_db, "--offline", "--format", "csv",
            "--out", str(tmp_path / "nodir" / "x.csv"))
    assert r.exit_code == 2 and "nodir does not exist" in r.output, r.output


@pytest.mark.parametrize(("name", "value", "kind"), [("CUNSYNC_HTTPS_ONLY", "yes", "true or false"),
                                                     ("CUNSYNC_CACHE_MB", "lots", "number")])
def test_a_setting_that_cannot_be_read_says_which_instead_of_a_traceback(name: str, value: str, kind: str) -> None:
    "Read when any cunsync command starts, tablet ones too: one line naming the setting, and exit 1"
    out = process("--help", env={name: value})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"{name}={value!r} is not a valid {kind}" in out.stderr
