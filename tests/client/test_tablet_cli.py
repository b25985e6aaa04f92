"""Tablet commands given what a village worker really does: a command before set-up, a node that does
not answer, an address without http://, an id copied wrong. Each ends in an ``Error:`` line that says
what to fix, never a traceback, and leaves no database half made (and none in plaintext)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from client import cli as client_cli
from client.cli import cli
from client.tablet import Tablet
from e2e_harness import TOWNSHIP, NodeProcess
from server.node import Node
from sync.store import is_encrypted

VILLAGE = "510903001001"
PIN = "246810"


def run(*args: str) -> Result:
    "A cunsync command; an exception other than click's exit is a traceback, which fails the test"
    r = CliRunner().invoke(cli, list(args), env={"CUNSYNC_PIN": PIN})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def code_for(node_db: Path) -> str:
    n = Node(node_db, TOWNSHIP)
    try:
        return n.create_enrolment(VILLAGE, "王芳").display
    finally:
        n.close()


@pytest.mark.parametrize("args", [("status",), ("person", "add", "--name", "张秀英"), ("sync",)])
def test_a_command_before_set_up_makes_no_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "tablet.db"
    r = run(*args, "--db", str(db))
    assert r.exit_code == 1 and "cunsync tablet init --server URL --code CODE" in r.output, r.output
    assert "--token" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_set_up_encrypts_an_empty_plaintext_file_an_older_cunsync_left(
    tmp_path: Path, node_db: Path, node: NodeProcess
) -> None:
    db = tmp_path / "tablet.db"
    Tablet(db).close()  # what `cunsync status` made before set-up, before this fix
    assert db.stat().st_size > 0 and not is_encrypted(db)
    code = code_for(node_db)
    node.start()
    r = run("tablet", "init", "--db", str(db), "--server", node.url, "--code", code)
    assert r.exit_code == 0 and "encrypted with the PIN" in r.output and "warning" not in r.output, r.output
    assert is_encrypted(db)


def test_set_up_against_a_node_that_does_not_answer_leaves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tablet.db"
    r = run("tablet", "init", "--db", str(db), "--server", "http://127.0.0.1:1", "--code", "AAAAA-BBBBB")
    assert r.exit_code == 1 and "did not answer (ConnectError)" in r.output and "check --server" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("server", ["192.168.1.10:8000", "http://192.168.1.10:8o00"])
def test_set_up_with_an_address_that_is_no_url_says_how_to_write_it(tmp_path: Path, server: str) -> None:
    r = run("tablet", "init", "--db", str(tmp_path / "tablet.db"), "--server", server, "--code", "AAAAA-BBBBB")
    assert r.exit_code == 2 and "http://HOST:PORT" in r.output and "[invalid_url]" in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_needs_and_services_name_a_resident_and_need_of_this_village(
    tmp_path: Path, node_db: Path, node: NodeProcess
) -> None:
    db = str(tmp_path / "tablet.db")
    code = code_for(node_db)
    node.start()
    # the worker's input method types a full-width colon before the port, and commas between groups
    r = run("tablet", "init", "--db", db, "--server", "：".join(node.url.rsplit(":", 1)), "--code", code)
    assert r.exit_code == 0, r.output
    r = run("person", "add", "--db", db, "--name", "张秀英", "--groups", "老年人，独居")
    assert r.exit_code == 0, r.output
    person = r.output.strip()
    ghost = "01a23a7a-25e3-7e56-b7e9-000000000000"
    r = run("need", "add", "--db", db, "--person", ghost, "--category", "养老服务")
    assert r.exit_code == 2 and f"no person {ghost} in this tablet's village {VILLAGE}" in r.output, r.output
    need = run("need", "add", "--db", db, "--person", person, "--category", "养老服务").output.strip()
    for args in (("--person", ghost), ("--person", person, "--need", ghost), ("--person", need),
                 ("--person", person, "--need", person)):
        r = run("service", "add", "--db", db, *args, "--type", "养老服务", "--minutes", "30")
        assert r.exit_code == 2 and "in this tablet's village" in r.output, (args, r.output)
    r = run("service", "add", "--db", db, "--person", person, "--need", need, "--type", "养老服务")
    assert r.exit_code == 0, r.output
    with Tablet(db, pin=PIN) as tab:
        assert sorted(r.coll for r in tab.list("need") + tab.list("service")) == ["need", "service"]
        assert sorted(tab.get(person).data["groups"]) == ["独居", "老年人"]


def test_a_sync_that_fills_the_tablet_s_storage_says_so_and_loses_nothing(
    tmp_path: Path, node_db: Path, node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "tablet.db")
    code = code_for(node_db)
    n = Node(node_db, TOWNSHIP)
    try:  # the village's residents the tablet has yet to pull
        for i in range(300):
            n.editor().create("person", {"unit": VILLAGE, "name": f"李桂{i}", "address": "育才路1号" * 20})
    finally:
        n.close()
    node.start()
    assert run("tablet", "init", "--db", db, "--server", node.url, "--code", code).exit_code == 0
    mine = run("person", "add", "--db", db, "--name", "张秀英").output.strip()

    class Full(Tablet):
        "The tablet's storage has no room left: SQLite's own SQLITE_FULL at the first write that grows it"

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            (pages,) = self.store.conn.execute("PRAGMA page_count").fetchone()
            self.store.conn.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(client_cli, "Tablet", Full)
    r = run("sync", "--db", db, "--silent")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: this tablet's storage is full (database or disk is full). Nothing saved "
                               "on it is lost"), r.output

    monkeypatch.undo()  # room made: the sync resumes and completes
    assert run("sync", "--db", db, "--silent").exit_code == 0
    with Tablet(db, pin=PIN) as tab:
        assert tab.pending() == 0 and tab.get(mine) is not None
        assert len(tab.list("person")) == 301


def test_a_command_on_read_only_storage_says_so_and_writes_nothing(
    tmp_path: Path, node_db: Path, node: NodeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    "Storage turned read-only under the tablet (as after an I/O error): a clear error, no traceback"
    db = str(tmp_path / "tablet.db")
    node.start()
    assert run("tablet", "init", "--db", db, "--server", node.url, "--code", code_for(node_db)).exit_code == 0

    class ReadOnly(Tablet):
        "Every write is refused as on a read-only file system: SQLite's own SQLITE_READONLY"

        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.store.conn.execute("PRAGMA query_only = ON")

    monkeypatch.setattr(client_cli, "Tablet", ReadOnly)
    r = run("person", "add", "--db", db, "--name", "张秀英")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: this tablet's storage cannot be written (attempt to write a readonly "
                               "database). Nothing saved on it is lost"), r.output
    monkeypatch.undo()
    with Tablet(db, pin=PIN) as tab:
        assert tab.list("person") == []
