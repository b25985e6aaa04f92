"""How the store writes: rows inserted fifty to a statement, JSON handed to SQLite as UTF-8 and kept as
text, and a WAL copied back into the database file by a checkpoint thread rather than by the commit that
fills it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from sync import Editor
from sync.store import Checkpointer, Store, insert_rows, insert_values


@pytest.mark.parametrize("n", [0, 1, 49, 50, 51, 137])
def test_insert_rows_writes_every_row_once_in_order(n: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, name TEXT, score REAL)")
    rows = [(i, f"名{i}", i / 2) for i in range(n)]
    insert_rows(conn, "INTO t", rows)
    assert conn.execute("SELECT k, name, score FROM t ORDER BY rowid").fetchall() == rows
    conn.close()


def test_insert_values_takes_rows_one_after_another() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    values = [x for i in range(120) for x in (i, f"行{i}")]  # two statements of 50, then 20 rows alone
    insert_values(conn, "INTO t", 2, values)
    assert conn.execute("SELECT a, b FROM t ORDER BY rowid").fetchall() == [(i, f"行{i}") for i in range(120)]
    conn.close()


def test_insert_rows_names_its_columns_and_a_broken_constraint_fails_the_whole_transaction() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, name TEXT NOT NULL, extra TEXT DEFAULT 'x')")
    conn.execute("BEGIN")
    insert_rows(conn, "INTO t (k, name)", [(i, str(i)) for i in range(60)])
    conn.execute("COMMIT")
    assert conn.execute("SELECT count(*), min(extra), max(extra) FROM t").fetchone() == (60, "x", "x")

    conn.execute("BEGIN")
    conn.execute("UPDATE t SET name = 'changed' WHERE k = 1")  # earlier in the same transaction
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(conn, "INTO t (k, name)", [(i, str(i)) for i in range(60, 110)] + [(5, "again")])
    assert not conn.in_transaction  # rolled back whole, by SQLite (OR ROLLBACK: no statement journal)
    assert conn.execute("SELECT count(*), max(name = 'changed') FROM t").fetchone() == (60, 0)
    conn.close()


def test_insert_values_takes_the_sql_of_a_row_to_cast_a_value() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    values = [x for i in range(70) for x in (i, bytearray(msgspec.json.encode({"名": i})))]
    insert_values(conn, "INTO t", 2, values, "(?, CAST(? AS TEXT))")
    rows = conn.execute("SELECT a, typeof(b), b ->> '$.名' FROM t ORDER BY rowid").fetchall()
    assert rows == [(i, "text", i) for i in range(70)]
    conn.close()


def test_values_and_pred_are_stored_as_json_text(
    store: Store, make_editor: Callable[..., Editor]
) -> None:
    """Op values, ``pred`` and a record's values reach SQLite as msgspec's UTF-8 in a bytearray; stored as
    text, SQL's JSON functions read them and they compare equal to the text a str would have given"""
    with Store() as scratch:
        tablet = make_editor(scratch, "village", device="tab-1")
        rid = tablet.create("person", {"name": "张三", "unit": "510903001001", "groups": ["老年人", "独居"]})
        store.apply([op for _, op in scratch.ops_since(0)])
        store.apply(tablet.update(rid, {"name": "张三丰"}))  # patched: the other values stay as stored
    rows = store.conn.execute(
        "SELECT field, typeof(value), value, typeof(pred), pred, counter FROM ops ORDER BY seq").fetchall()
    assert {(t, pt) for _, t, _, pt, _, _ in rows} == {("text", "text")}
    names = [(value, pred, counter) for field, _, value, _, pred, counter in rows if field == "name"]
    (first, pred0, counter), (edit, pred1, _) = names
    assert (first, pred0) == ('"张三"', "")
    assert edit == '"张三丰"' and msgspec.json.decode(pred1) == [["tab-1", counter]]
    (kind, name, groups), = store.conn.execute(
        "SELECT typeof(data), data ->> '$.name', data -> '$.groups' FROM records WHERE id = ?", (rid,))
    assert (kind, name, msgspec.json.decode(groups)) == ("text", "张三丰", ["独居", "老年人"])
    record = store.get(rid)
    assert record is not None and record.data["groups"] == ["独居", "老年人"] and record.data["name"] == "张三丰"


def test_a_store_with_a_checkpoint_thread_has_its_commits_copied_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    store = Store(path, checkpoint_thread=True)
    try:
        main = path.stat().st_size
        for i in range(20):
            with store.transaction() as conn:
                conn.execute("INSERT INTO meta VALUES (?, ?)", (f"k{i}", "值" * 2000))
        deadline = time.monotonic() + 30
        while path.stat().st_size == main and time.monotonic() < deadline:
            time.sleep(0.05)  # waits for the thread; nothing here asserts how soon
        assert path.stat().st_size > main, "the commits' pages reached the database file"
        assert store._checkpointer is not None
        thread = store._checkpointer._thread  # this store's own: other tests may leave theirs running
        assert thread.name == "cunsync-checkpoint" and thread.is_alive()
    finally:
        store.close()
    assert not thread.is_alive(), "close stops the thread"


def test_without_the_thread_small_commits_stay_in_the_wal(tmp_path: Path) -> None:
    "The control for the test above: SQLite's own checkpoint waits for 20,000 pages"
    path = tmp_path / "tablet.db"
    store = Store(path)
    try:
        main = path.stat().st_size
        for i in range(20):
            with store.transaction() as conn:
                conn.execute("INSERT INTO meta VALUES (?, ?)", (f"k{i}", "值" * 2000))
        assert path.stat().st_size == main
    finally:
        store.close()


def test_closing_a_checkpointer_that_was_never_poked_returns(tmp_path: Path) -> None:
    path = tmp_path / "idle.db"
    Store(path).close()
    c = Checkpointer(str(path))
    c.close()
    assert not c._thread.is_alive()
