"""The devices table learns what a tablet still holds unsent (``SyncRequest.pending``): a node database
made before the column existed gains it on open, and an old client that never sends it reads as 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from e2e_harness import TOWNSHIP, V1
from server.node import Node
from sync.wire import PROTOCOL_VERSION, SyncRequest


def test_an_old_database_gains_the_column_and_keeps_its_devices(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    n = Node(db, TOWNSHIP)
    dev, token = n.add_device(V1, "wang")
    n.close()
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE devices DROP COLUMN pending")  # as a database made before it was added
    conn.commit()
    conn.close()
    n = Node(db, TOWNSHIP)
    try:
        assert n.authenticate(token).device == dev
        assert [d["pending"] for d in n.devices()] == [0]
        n.sync(n.authenticate(token), SyncRequest(protocol=PROTOCOL_VERSION, device=dev, pending=12))
        assert [d["pending"] for d in n.devices()] == [12]
    finally:
        n.close()
    Node(db, TOWNSHIP).close()  # opening again: the migration runs once, harmlessly


def test_a_client_that_does_not_send_pending_reads_as_zero(tmp_path: Path) -> None:
    n = Node(tmp_path / "n.db", TOWNSHIP)
    try:
        dev, token = n.add_device(V1, "wang")
        n.sync(n.authenticate(token), SyncRequest(protocol=PROTOCOL_VERSION, device=dev, pending=3))
        old = msgspec.json.decode(msgspec.json.encode({"protocol": PROTOCOL_VERSION, "device": dev}), type=SyncRequest)
        n.sync(n.authenticate(token), old)
        assert [d["pending"] for d in n.devices()] == [0]
    finally:
        n.close()
