"""The tablet app against a real node, over Starlette's TestClient.

Setting a new tablet up from the app: the township's enrolment code, exchanged once with the node, and
the worker's new PIN that encrypts the database; mistakes are explained in Chinese, and a failed attempt
leaves no database behind. A tablet the township revoked with wipe locks itself and says why."""

from __future__ import annotations

import functools
import http.server
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.tablet import Tablet
from client.ui import TabletApp, create_app
from e2e_harness import TOWNSHIP, V1, Enrol, NodeProcess, free_port
from server.node import Node
from sync.hlc import physical_ms, wall_ms
from sync.store import Store, is_encrypted

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.e2e

PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"
PIN = "135792"
DAY = 86_400_000
SLACK_MS = 10 * 60_000  # the run's own time, with room to spare


@pytest.fixture
def code(node: NodeProcess, node_db: Path) -> str:
    n = Node(node_db, TOWNSHIP)
    try:
        enr = n.create_enrolment(V1, "王芳")
    finally:
        n.close()
    node.start()
    return enr.display


@pytest.fixture
def tapp(tmp_path: Path, node: NodeProcess) -> Iterator[TabletApp]:
    app = TabletApp(tmp_path / "tablet.db", port=PORT, server=node.url)
    yield app
    app.close()


@pytest.fixture
def client(tapp: TabletApp) -> Iterator[TestClient]:
    with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
        yield c




def test_a_new_tablet_is_set_up_from_the_app(tapp: TabletApp, client: TestClient, code: str, node: NodeProcess,
                                             node_db: Path) -> None:
    assert client.get("/").headers["location"] == "/unlock"
    assert client.get("/unlock").headers["location"] == "/setup"
    page = client.get("/setup")
    assert "登记本平板" in page.text and f'value="{node.url}"' in page.text
    r = client.post("/setup", data={"csrf": tapp.csrf, "server": node.url, "code": code, "pin": PIN,
                                    "pin2": PIN}, headers={"origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"] == "/?done=enrolled"
    assert tapp.unlocked and is_encrypted(tapp.db)
    device = tapp.read(lambda t: t.device)
    n = Node(node_db, TOWNSHIP)
    try:
        found = n.device(device)
        assert found is not None and found.unit == V1 and found.user == "王芳"
    finally:
        n.close()
    assert "本平板已登记" in client.get("/?done=enrolled").text
    assert client.get("/setup").headers["location"] == "/unlock"


def test_a_tablet_the_restored_node_no_longer_knows_is_re_attached_from_the_sync_page(
    tapp: TabletApp, client: TestClient, code: str, node: NodeProcess, node_db: Path, tmp_path: Path
) -> None:
    "Enrolled after the backup: its sync is refused, the page asks for a new code, and nothing is lost"
    backup = tmp_path / "nightly.db"
    n = Node(node_db, TOWNSHIP)
    try:
        n.backup(backup)
    finally:
        n.close()
    post = functools.partial(client.post, headers={"origin": ORIGIN})
    assert post("/setup", data={"csrf": tapp.csrf, "server": node.url, "code": code, "pin": PIN,
                                "pin2": PIN}).status_code == 303
    rid = tapp.read(lambda t: t.create("person", {"name": "张秀英"}))

    def sync() -> dict[str, object]:
        assert post("/sync", data={"csrf": tapp.csrf}).status_code == 303
        assert tapp.job is not None
        tapp.job.wait(30)
        return tapp.job.snapshot()

    assert sync()["state"] == "done"
    node.stop()
    Node.restore(node_db, backup)
    node.start()
    assert sync()["code"] == "unauthorized"
    page = client.get("/sync").text
    assert "镇街服务器不认识这台平板了" in page and "本机的数据都还在" in page and 'id="reattach-form"' in page

    device = tapp.read(lambda t: t.device)
    assert device in page  # the worker tells the township, which makes a code for it
    n = Node(node_db, TOWNSHIP)
    try:
        other = n.create_enrolment("510903001002", "王芳", reattach=device).display
        good = n.create_enrolment(V1, "王芳", reattach=device).display
    finally:
        n.close()
    for sent, want in (("", "请填写镇街新发的登记码"), (other, "这个登记码不是发给本平板的")):
        r = post("/sync/reattach", data={"csrf": tapp.csrf, "code": sent})
        assert r.status_code == 400 and want in r.text and 'id="reattach-form"' in r.text
        assert f'name="code" value="{sent}"' in r.text, "the form keeps the code typed"
    r = post("/sync/reattach", data={"csrf": tapp.csrf, "code": good})
    assert r.status_code == 303 and r.headers["location"] == "/sync?done=reattached"
    assert "本平板已重新接入镇街服务器" in client.get(r.headers["location"]).text
    assert sync()["state"] == "done"
    with Store(node_db) as s:
        rec = s.get(rid)
    assert rec is not None and rec.data["name"] == "张秀英"
    assert tapp.read(lambda t: t.pending()) == 0


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[str]:
    "Some other web server, as a mistyped address finds: Python's file server on loopback"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


def test_mistakes_at_set_up_are_explained_and_leave_nothing_behind(tapp: TabletApp, client: TestClient,
                                                                   code: str, node: NodeProcess,
                                                                   other_server: str) -> None:
    cases = [
        ({"server": "192.168.1.10", "code": "", "pin": "123", "pin2": "123"},
         ["请填写镇街服务器地址，例如 http://192.168.1.10:8000", "请填写镇街发给本平板的登记码", "PIN 至少 6 位"]),
        ({"server": node.url, "code": code, "pin": PIN, "pin2": "000000"}, ["两次输入的 PIN 不一样"]),
        ({"server": node.url, "code": "AAAAA-BBBBB", "pin": PIN, "pin2": PIN},
         ["登记码不对。请核对后重新输入，或请镇街重新发一个。"]),
        ({"server": f"http://127.0.0.1:{free_port()}", "code": code, "pin": PIN, "pin2": PIN},
         ["无法连接镇街服务器。请检查地址和网络后再试。"]),
        ({"server": other_server, "code": code, "pin": PIN, "pin2": PIN},
         ["这个地址上的不是镇街服务器，或它没有正确回应。请核对地址后再试。"]),
    ]
    for form, want in cases:
        r = client.post("/setup", data={"csrf": tapp.csrf, **form}, headers={"origin": ORIGIN})
        assert r.status_code == 400
        assert re.findall(r'<div class="msg" role="alert">([^<]*)</div>', r.text) == want
        assert not Path(tapp.db).exists() and not tapp.unlocked
    # the code was not used up by the failures: it still sets the tablet up
    r = client.post("/setup", data={"csrf": tapp.csrf, "server": node.url, "code": code, "pin": PIN, "pin2": PIN},
                    headers={"origin": ORIGIN})
    assert r.status_code == 303 and tapp.unlocked


def test_a_tablet_revoked_with_wipe_locks_and_says_why(tmp_path: Path, node: NodeProcess, node_db: Path,
                                                       enrol: Enrol) -> None:
    device, token = enrol(V1, "王芳")
    node.start()
    db = tmp_path / "revoked.db"
    with Tablet.init(db, node.url, token, pin=PIN) as tab:
        tab.create("person", {"name": "张三"})
    n = Node(node_db, TOWNSHIP)
    try:
        n.revoke(device, wipe=True)
    finally:
        n.close()
    tapp = TabletApp(db, port=PORT, pin=PIN)
    try:
        with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
            r = c.post("/api/sync", headers={"origin": ORIGIN, "x-csrf-token": tapp.csrf})
            assert r.status_code == 202
            assert tapp.job is not None
            job = tapp.job
            job.wait(30)
            assert job.snapshot()["code"] == "device_revoked"
            assert "本平板已被镇街停用" in job.snapshot()["message"]
            assert not tapp.unlocked and sorted(tmp_path.glob("revoked.db*")) == []
            assert c.get("/api/status").json()["error"]["code"] == "locked"
            assert c.get("/unlock").headers["location"] == "/setup"
            assert "本平板已被镇街停用。请联系镇街社会工作服务中心。" in c.get("/setup").text
    finally:
        tapp.close()


@pytest.mark.parametrize("saved", ["after the sync", "during its re-stamp"])
def test_the_pages_stamp_with_the_corrected_clock_after_a_background_sync(
        tmp_path: Path, node: NodeProcess, node_db: Path, enrol: Enrol, saved: str) -> None:
    """A tablet whose date is a day ahead: the app's sync learns the node's time and re-stamps what it
    sends; an edit the worker saves afterwards, or while the sync re-stamps (the save waits for it), is
    stamped with the node's time too, so the next sync is not refused first."""
    device, token = enrol(V1, "王芳")
    node.start()
    db = tmp_path / "ahead.db"
    Tablet.init(db, node.url, token, pin=PIN).close()
    tapp = TabletApp(db, port=PORT, pin=PIN)
    try:
        assert tapp.tablet is not None and tapp._background is not None
        for tab in (tapp.tablet, tapp._background):
            tab.clock.clock = lambda: wall_ms() + DAY
        rid = tapp.read(lambda t: t.create("person", {"name": "张三"}))
        background = tapp._background.store
        restamp, edits, workers = background.restamp, [], []

        def save() -> None:
            edits.extend(tapp.read(lambda t: t.update(rid, {"phone": "13800138000"})))

        def restamp_then_a_page_saves(*args: int) -> int:
            n = restamp(*args)
            worker = threading.Thread(target=save)
            workers.append(worker)
            worker.start()
            worker.join(1)  # a save that does not wait for the re-stamp is done by now
            return n

        if saved == "during its re-stamp":
            background.restamp = restamp_then_a_page_saves  # type: ignore[method-assign]
        with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
            sync = {"origin": ORIGIN, "x-csrf-token": tapp.csrf}
            assert c.post("/api/sync", headers=sync).status_code == 202
            assert tapp.job is not None
            tapp.job.wait(30)
            assert tapp.job.snapshot()["state"] == "done", tapp.job.snapshot()
            background.restamp = restamp  # type: ignore[method-assign]
            for worker in workers:
                worker.join(30)
            if not workers:
                save()
            (edit,) = edits
            assert abs(physical_ms(edit.hlc) - wall_ms()) < SLACK_MS  # not a day ahead
            assert c.post("/api/sync", headers=sync).status_code == 202
            tapp.job.wait(30)
            assert tapp.job.snapshot()["state"] == "done", tapp.job.snapshot()
        n = Node(node_db, TOWNSHIP)
        try:
            held = [op for op in n.store.record_ops(rid) if op.site == device]
        finally:
            n.close()
        assert {op.field for op in held} == {"name", "unit", "phone"}
        assert all(abs(physical_ms(op.hlc) - wall_ms()) < SLACK_MS for op in held)
    finally:
        tapp.close()
