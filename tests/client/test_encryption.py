"""At-rest encryption of the tablet's database: with the worker's PIN, the file is SQLCipher-encrypted
(the key derived from the PIN with scrypt), so a stolen tablet's file shows no names, ID numbers or
phones; a wrong PIN raises ``WrongPin`` and changes nothing; ``change_pin`` re-encrypts; a tablet set up
without a PIN stays plaintext and works as before. No server: the tablet's identity is set directly."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import cli
from client.tablet import NotEncrypted, PinRequired, Tablet, WeakPin, WrongPin
from sync.store import is_encrypted

VILLAGE = "510903001001"
PIN = "472913"
RESIDENT = {"name": "张秀英", "id_number": "510903194203081234", "phone": "13800138000"}
#: What must not be readable in a stolen file
SECRETS = [v.encode() for v in RESIDENT.values()]


def set_up(path: Path, pin: str | None) -> str:
    "A tablet as enrolment leaves it (without a node), with one resident registered; closed again"
    tab = Tablet(path, pin=pin)
    for k, v in (("device", "tab-enc-1"), ("user", "王芳"), ("unit", VILLAGE), ("tier", "village")):
        tab.store.set_meta(k, v)
    rid = tab.create("person", RESIDENT)
    tab.close()
    return rid


def raw_bytes(path: Path) -> bytes:
    "Everything on disk that belongs to the database: the file, its -wal and -shm, and anything else"
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file())


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


def found(secrets: list[bytes], data: bytes) -> list[bytes]:
    return [s for s in secrets if s in data]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tablet.db"


@pytest.fixture
def rid(db: Path) -> str:
    return set_up(db, PIN)


def test_a_stolen_file_shows_no_name_id_number_or_phone(db: Path, rid: str) -> None:
    assert is_encrypted(db)
    data = raw_bytes(db)
    assert len(data) > 4096
    assert found(SECRETS, data) == []
    assert b"SQLite format 3" not in data


def test_nothing_readable_while_the_tablet_is_open_either(tmp_path: Path) -> None:
    "Before the WAL is checkpointed, the data sits in the -wal file: its pages are encrypted too"
    db = tmp_path / "open.db"
    tab = Tablet(db, pin=PIN)
    try:
        for k, v in (("device", "tab-enc-2"), ("user", "王芳"), ("unit", VILLAGE), ("tier", "village")):
            tab.store.set_meta(k, v)
        tab.create("person", RESIDENT)
        assert Path(str(db) + "-wal").stat().st_size > 0
        assert found(SECRETS, raw_bytes(db)) == []
    finally:
        tab.close()


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("pin", [PIN, None])
def test_a_new_tablet_database_and_its_wal_and_shm_are_private(tmp_path: Path, pin: str | None) -> None:
    "No other local account reads them, encrypted or not"
    tab = Tablet(tmp_path / "new.db", pin=pin)
    try:
        tab.store.set_meta("user", "王芳")
        modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(tmp_path.iterdir())}
    finally:
        tab.close()
    assert modes == {"new.db": "0o600", "new.db-shm": "0o600", "new.db-wal": "0o600", "new.db.lock": "0o600"}


def test_the_plaintext_control_does_show_them(db: Path) -> None:
    "The check above can find the data: a tablet without a PIN holds it in the clear"
    set_up(db, None)
    assert not is_encrypted(db)
    assert found(SECRETS, raw_bytes(db)) == SECRETS


def test_plain_sqlite_cannot_open_it(db: Path, rid: str) -> None:
    conn = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()


def test_a_wrong_pin_raises_and_changes_nothing(db: Path, rid: str) -> None:
    before = snapshot(db)
    with pytest.raises(WrongPin, match="PIN is wrong") as err:
        Tablet(db, pin="000000")
    assert "000000" not in str(err.value)
    assert snapshot(db) == before  # no byte changed, no -wal or -shm created
    with Tablet(db, pin=PIN) as tab:
        assert tab.get(rid) is not None


def test_no_pin_for_an_encrypted_database_says_so(db: Path, rid: str) -> None:
    before = snapshot(db)
    with pytest.raises(PinRequired, match="encrypted"):
        Tablet(db)
    assert snapshot(db) == before


def test_the_right_pin_reads_the_resident_back(db: Path, rid: str) -> None:
    with Tablet(db, pin=PIN) as tab:
        rec = tab.get(rid)
        assert rec is not None
        assert {k: rec.data[k] for k in RESIDENT} == RESIDENT
        assert rec.data["unit"] == VILLAGE
        assert [r.id for r in tab.search("person", "秀英")] == [rid]
        # the store's JSON functions work on the encrypted connection
        (name,) = tab.store.conn.execute("SELECT json_extract(data, '$.name') FROM records WHERE id = ?",
                                         (rid,)).fetchone()
        assert name == RESIDENT["name"]
        assert tab.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert tab.store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert tab.pending() == 1 + len(RESIDENT)  # one op for the unit, one per field


def test_change_pin_re_encrypts_and_the_old_pin_stops_working(db: Path, rid: str) -> None:
    with Tablet(db, pin=PIN) as tab:
        tab.change_pin("8314-river")
        tab.update(rid, {"phone": "13911112222"})  # the open tablet keeps working
    with pytest.raises(WrongPin):
        Tablet(db, pin=PIN)
    with Tablet(db, pin="8314-river") as tab:
        rec = tab.get(rid)
        assert rec is not None and rec.data["phone"] == "13911112222"
    assert found(SECRETS + [b"13911112222"], raw_bytes(db)) == []


def test_a_new_pin_must_not_be_too_short(db: Path, rid: str) -> None:
    with Tablet(db, pin=PIN) as tab:
        with pytest.raises(WeakPin, match="at least 6"):
            tab.change_pin("1234")
    with pytest.raises(WeakPin):
        Tablet(db.with_name("new.db"), pin="123")
    assert not db.with_name("new.db").exists()
    with Tablet(db, pin=PIN) as tab:  # unchanged
        assert tab.get(rid) is not None


def test_a_plaintext_tablet_works_as_before(db: Path) -> None:
    rid = set_up(db, None)
    with Tablet(db) as tab:
        assert tab.store.encrypted is False
        rec = tab.get(rid)
        assert rec is not None and rec.data["name"] == RESIDENT["name"]
    conn = sqlite3.connect(db)  # readable by any SQLite, as before
    try:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    finally:
        conn.close()
    with pytest.raises(NotEncrypted, match="tablet pin"):
        Tablet(db, pin=PIN)


@pytest.mark.usefixtures("umask_022")
def test_change_pin_encrypts_a_plaintext_tablet(db: Path) -> None:
    rid = set_up(db, None)
    db.chmod(0o644)  # as a version before files were made private left it
    with Tablet(db) as tab:
        tab.change_pin(PIN)
        rec = tab.get(rid)
        assert rec is not None and rec.data["name"] == RESIDENT["name"]
    assert is_encrypted(db)
    assert found(SECRETS, raw_bytes(db)) == []
    # no plaintext -wal, -shm or half-made copy left; the lock file (``client.dblock``) holds nothing
    assert sorted(p.name for p in db.parent.iterdir()) == ["tablet.db", "tablet.db.lock"]
    assert (db.parent / "tablet.db.lock").stat().st_size == 0
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # and private
    with pytest.raises(PinRequired):
        Tablet(db)
    with Tablet(db, pin=PIN) as tab:
        assert tab.device == "tab-enc-1" and tab.pending() == 1 + len(RESIDENT)


# -- the command line -------------------------------------------------------------------------------

def test_the_cli_takes_the_pin_from_the_environment(db: Path, rid: str) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["person", "list", "--db", str(db), "--json"], env={"CUNSYNC_PIN": PIN})
    assert r.exit_code == 0, r.output
    assert RESIDENT["name"] in r.output
    r = runner.invoke(cli, ["person", "list", "--db", str(db), "--pin", PIN])
    assert r.exit_code == 0 and RESIDENT["name"] in r.output, r.output


def test_the_cli_without_the_right_pin_says_so(db: Path, rid: str) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["status", "--db", str(db)], env={"CUNSYNC_PIN": None})
    assert r.exit_code == 1 and "give its PIN" in r.output, r.output
    r = runner.invoke(cli, ["status", "--db", str(db), "--pin", "999999"])
    assert r.exit_code == 1 and "PIN is wrong" in r.output and "999999" not in r.output, r.output


def test_the_cli_changes_the_pin(db: Path, rid: str) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["tablet", "pin", "--db", str(db), "--pin", PIN, "--new-pin", "55aa77bb"])
    assert r.exit_code == 0 and "changed" in r.output, r.output
    r = runner.invoke(cli, ["status", "--db", str(db), "--json"], env={"CUNSYNC_PIN": "55aa77bb"})
    assert r.exit_code == 0 and "tab-enc-1" in r.output, r.output


def test_the_cli_keeps_a_plaintext_tablet_working_and_can_encrypt_it(db: Path) -> None:
    set_up(db, None)
    runner = CliRunner()
    r = runner.invoke(cli, ["person", "list", "--db", str(db)], env={"CUNSYNC_PIN": None})
    assert r.exit_code == 0 and RESIDENT["name"] in r.output and "not encrypted" in r.output, r.output
    r = runner.invoke(cli, ["tablet", "pin", "--db", str(db), "--new-pin", PIN], env={"CUNSYNC_PIN": None})
    assert r.exit_code == 0 and "now encrypted" in r.output, r.output
    assert found(SECRETS, raw_bytes(db)) == []
    r = runner.invoke(cli, ["person", "list", "--db", str(db)], env={"CUNSYNC_PIN": PIN})
    assert r.exit_code == 0 and RESIDENT["name"] in r.output and "not encrypted" not in r.output, r.output


def test_an_encrypted_tablet_from_the_older_layout_is_migrated_when_unlocked(db: Path, rid: str) -> None:
    "A tablet database made before records listed their ops and ops carried units: brought up to date"
    tab = Tablet(db, pin=PIN)
    history = [(c.field, c.new) for c in tab.store.history(rid)]
    conn = tab.store.conn
    conn.execute("DROP INDEX ops_unit")
    conn.execute("ALTER TABLE ops DROP COLUMN unit")
    conn.execute("ALTER TABLE records DROP COLUMN log")
    conn.execute("CREATE INDEX ops_record ON ops (record)")
    tab.close()
    with pytest.raises(WrongPin):
        Tablet(db, pin="000000")  # a wrong PIN migrates nothing
    tab = Tablet(db, pin=PIN)
    try:
        assert [(c.field, c.new) for c in tab.store.history(rid)] == history
        assert {u for (u,) in tab.store.conn.execute("SELECT unit FROM ops")} == {VILLAGE}
        tab.update(rid, {"phone": "13900139000"})
        assert tab.store.history(rid)[-1].new == "13900139000"
    finally:
        tab.close()
    assert is_encrypted(db) and not found(SECRETS, raw_bytes(db))
