"""Enrolment codes and revocation, over a real node: a tablet exchanges a one-time code for its
credential; a revoked tablet stops at once, and with wipe erases its local data."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import cli
from client.tablet import SyncFailed, Tablet
from e2e_harness import TOWNSHIP, V1, NodeProcess, enrolment_code, known_reattach_code, no_sleep, op_count
from server.node import MAX_FAILURES, Node

pytestmark = pytest.mark.e2e


def test_a_code_enrols_a_tablet_once_and_only_its_hash_is_kept(
    node_db: Path, node: NodeProcess, tmp_path: Path
) -> None:
    code = enrolment_code(node_db)
    node.start()
    tab = Tablet.enrol(tmp_path / "t.db", node.url, code.lower(), sleep=no_sleep)  # typed in lower case
    try:
        assert (tab.unit, tab._get("user"), tab._get("tier")) == (V1, "王芳", "village")
        rid = tab.create("person", {"name": "张秀英"})
        tab.sync()
        assert op_count(node_db) == len(tab.store.record_ops(rid))
        token = tab._get("token")
    finally:
        tab.close()
    raw = b"".join(p.read_bytes() for p in node_db.parent.glob("township.db*"))
    assert token.encode() not in raw and code.replace("-", "").encode() not in raw
    log = node.log.read_text(errors="replace")
    assert token not in log and code.replace("-", "") not in log  # credentials are never logged
    with pytest.raises(SyncFailed) as err:
        Tablet.enrol(tmp_path / "again.db", node.url, code, sleep=no_sleep)
    assert (err.value.status, err.value.code) == (401, "enrolment_used")


def test_wrong_and_expired_codes_are_refused_and_guessing_is_stopped(
    node_db: Path, node: NodeProcess, tmp_path: Path
) -> None:
    expired = enrolment_code(node_db, hours=-1)
    good = enrolment_code(node_db)
    node.start()
    with pytest.raises(SyncFailed) as err:
        Tablet.enrol(tmp_path / "x.db", node.url, expired, sleep=no_sleep)
    assert (err.value.status, err.value.code) == (401, "enrolment_expired")
    for i in range(MAX_FAILURES - 1):
        with pytest.raises(SyncFailed) as err:
            Tablet.enrol(tmp_path / f"g{i}.db", node.url, "AAAAA-AAAAA", sleep=no_sleep)
        assert (err.value.status, err.value.code) == (401, "invalid_enrolment_code")
    # the limit is reached: even the right code must wait now
    with pytest.raises(SyncFailed) as err:
        Tablet.enrol(tmp_path / "late.db", node.url, good, sleep=no_sleep)
    assert (err.value.status, err.value.code) == (429, "too_many_attempts")


def test_revoked_without_wipe_hands_in_its_ops_pulls_nothing_and_is_told_and_with_wipe_erases(
    node_db: Path, node: NodeProcess, tmp_path: Path
) -> None:
    codes = [enrolment_code(node_db, user=u) for u in ("a", "b", "c")]
    node.start()
    a, b, c = (Tablet.enrol(tmp_path / f"{i}.db", node.url, code, sleep=no_sleep) for i, code in enumerate(codes))
    a.create("person", {"name": "甲"})
    a.sync()
    n = Node(node_db, TOWNSHIP)
    n.revoke(b.device)
    n.revoke(c.device, wipe=True)
    n.close()
    b.create("person", {"name": "乙"})
    before = op_count(node_db)
    with pytest.raises(SyncFailed) as err:  # told, once what it held is handed in
        b.sync()
    assert (err.value.status, err.value.code, err.value.details) == (403, "device_revoked", {"wipe": False, "sent": 2})
    assert "handed in" in err.value.message
    assert op_count(node_db) > before and b.pending() == 0  # what it held still arrives
    assert [r.data["name"] for r in b.list("person")] == ["乙"]  # and it received nothing
    c.create("person", {"name": "丙"})
    c_path = Path(c.path)
    with pytest.raises(SyncFailed) as err:
        c.sync()
    assert err.value.code == "device_revoked" and "erased" in err.value.message
    assert not c_path.exists()
    names = [r[0] for r in sqlite3.connect(node_db).execute(
        "SELECT json_extract(data, '$.name') FROM records WHERE coll = 'person'")]
    assert "丙" not in names and {"甲", "乙"} <= set(names)
    a.close()
    b.close()


def test_the_cli_prints_a_code_and_a_qr_and_a_tablet_enrols_with_it(
    node_db: Path, node: NodeProcess, tmp_path: Path
) -> None:
    runner = CliRunner()
    png = tmp_path / "code.png"
    r = runner.invoke(cli, ["enrol", "create", "--db", str(node_db), "--unit", V1, "--user", "王芳",
                            "--server", "http://127.0.0.1", "--png", str(png)])
    assert r.exit_code == 0, r.output
    code = r.output.split()[2]
    assert len(code) == 11 and code[5] == "-" and png.read_bytes()[:4] == b"\x89PNG"
    assert "▀" in r.output or "█" in r.output  # the QR code, drawn in the terminal
    node.start()
    db = tmp_path / "tablet.db"
    r = runner.invoke(cli, ["tablet", "init", "--db", str(db), "--server", node.url, "--code", code])
    assert r.exit_code == 0 and V1 in r.output, r.output
    r = runner.invoke(cli, ["tablet", "init", "--db", str(tmp_path / "t2.db"), "--server", node.url,
                            "--code", code])
    assert r.exit_code == 1 and "already used" in r.output
    r = runner.invoke(cli, ["enrol", "create", "--db", str(node_db), "--unit", "510904001001", "--user", "x"])
    assert r.exit_code == 1 and "not under" in r.output
    # a village tablet's code names a village: one for the township would give it every village's residents
    r = runner.invoke(cli, ["enrol", "create", "--db", str(node_db), "--unit", TOWNSHIP, "--user", "x"])
    assert r.exit_code == 1 and "village" in r.output, r.output
    # a tablet set up already is not set up again: its unsent work would stay behind, unsent
    tab = Tablet(db)
    try:
        tab.create("person", {"name": "张秀英"})
        token, device = tab._get("token"), tab.device
    finally:
        tab.close()
    r = runner.invoke(cli, ["tablet", "init", "--db", str(db), "--server", node.url, "--token", "x"])
    assert r.exit_code == 1 and "set up already" in r.output and "--code" in r.output, r.output
    assert re.search(r"holds (\d+) changes of its own, \1 of them not\s+acknowledged", r.output), r.output
    # nor re-attached, even with a code made for it (that is for a tablet the node no longer knows): this
    # node knows it; and a code for a new tablet re-attaches nothing
    for code, refusal in ((known_reattach_code(node_db, device), "[device_exists]"),
                          (enrolment_code(node_db), "[enrolment_mismatch]")):
        r = runner.invoke(cli, ["tablet", "init", "--db", str(db), "--server", node.url, "--code", code])
        assert r.exit_code == 1 and refusal in r.output, r.output
    tab = Tablet(db)
    try:
        assert tab.pending() > 0 and (tab._get("server"), tab._get("token")) == (node.url, token)
    finally:
        tab.close()
    r = runner.invoke(cli, ["tablet", "init", "--db", str(tmp_path / "t3.db"), "--server", node.url,
                            "--code", code])
    assert r.exit_code == 0, "the code refused is still valid"
