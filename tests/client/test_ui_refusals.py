"""What the tablet app tells the worker when a sync or a re-attach fails other than by an unreachable
node: something else answered at the node's address (nginx's 502 page while the node is down, a captive
portal), the node was unavailable, a node too old to re-attach or to sync with this (newer) tablet, or a code
the app has no words for. Always Chinese, never the node's English message or its code. The "node" here is
a stand-in web server.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client.pages import ENROL_ERRORS, ENROL_REFUSED, REATTACH_REFUSED
from client.syncjob import FAILED, NODE_TOO_OLD, NOT_ANSWERING, REFUSED, TABLET_FULL
from client.tablet import Tablet
from client.ui import TabletApp, create_app
from e2e_harness import TOWNSHIP
from server.node import Node
from sync.errors import SyncError
from sync.schema import SCHEMA
from sync.wire import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, SyncRequest
from test_ui import ORIGIN, PIN, PORT, TestClient, messages, post, set_up_tablet, sqlcipher_error

#: What the stand-in answers: status, content type, body
Answer = tuple[int, str, bytes]
NGINX_502: Answer = (502, "text/html", b"<html><head><title>502 Bad Gateway</title></head><body><center>"
                                       b"<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")
PORTAL: Answer = (404, "text/html", b"<html><body>Please log in to the hotel Wi-Fi</body></html>")
PORTAL_200: Answer = (200, "text/html", b"<html><body>Please log in to the hotel Wi-Fi</body></html>")


def refusal(status: int, code: str, message: str, details: object = None) -> Answer:
    "An error in the project's one shape"
    return status, "application/json", json.dumps({"error": {"code": code, "message": message,
                                                             "details": details}}).encode()


NEW_CODE = refusal(400, "shiny_new_refusal", "a refusal this app version has never heard of")


@dataclass
class StandIn:
    "A web server at the tablet's node address; ``answers``: what it answers, by path, as the test sets it"

    url: str
    answers: dict[str, Answer] = field(default_factory=dict)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    answers: dict[str, Answer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            status, ctype, body = answers[self.path]
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield StandIn(f"http://127.0.0.1:{httpd.server_address[1]}", answers)
        httpd.shutdown()


@pytest.fixture
def app(tmp_path: Path, stand_in: StandIn) -> Iterator[tuple[TabletApp, TestClient]]:
    "The tablet app, unlocked, its node the stand-in"
    db = tmp_path / "tablet.db"
    set_up_tablet(db)
    with Tablet(db, pin=PIN) as tab:
        for k, v in (("server", stand_in.url), ("token", "t0k3n-of-tab-ui-1")):
            tab.store.set_meta(k, v)
    tapp = TabletApp(db, port=PORT, backoff=0.01)
    with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
        assert post(c, tapp, "/unlock", {"pin": PIN}).status_code == 303
        yield tapp, c
    tapp.close()


def sync_result(tapp: TabletApp, c: TestClient) -> str:
    assert post(c, tapp, "/sync", {}).status_code == 303
    assert tapp.job is not None
    tapp.job.wait(30)
    (shown,) = re.findall(r'id="sync-result" role="alert">([^<]*)<', c.get("/sync").text)
    return str(shown)


@pytest.mark.parametrize(("answer", "want"), [
    (NGINX_502, NOT_ANSWERING),
    (PORTAL, NOT_ANSWERING),
    (refusal(503, "unavailable", "the node is starting; try again in a minute"), NOT_ANSWERING),
    (NEW_CODE, REFUSED),
    (refusal(503, "storage_read_only", "the node's database cannot be written"), FAILED["storage_read_only"]),
], ids=["nginx-502", "portal-404", "node-503", "unknown-code", "node-read-only"])
def test_a_failed_sync_is_said_in_chinese(app: tuple[TabletApp, TestClient], stand_in: StandIn,
                                          answer: Answer, want: str) -> None:
    tapp, c = app
    stand_in.answers["/api/sync"] = answer
    before = tapp.read(lambda t: t.pending())
    shown = sync_result(tapp, c)
    assert shown == want and not re.search(r"[A-Za-z]{3,}", shown)
    assert tapp.read(lambda t: t.pending()) == before


@pytest.mark.parametrize(("versions", "want"), [
    ({"protocol": MIN_PROTOCOL_VERSION - 1}, FAILED["version_mismatch"]),
    ({"protocol": PROTOCOL_VERSION + 1}, NODE_TOO_OLD),
    ({"protocol": PROTOCOL_VERSION, "schema_version": SCHEMA.version + 1}, NODE_TOO_OLD),
], ids=["tablet-too-old", "node-protocol-too-old", "node-schema-too-old"])
def test_a_version_mismatch_tells_the_worker_which_side_to_update(app: tuple[TabletApp, TestClient],
                                                                  stand_in: StandIn, versions: dict[str, int],
                                                                  want: str) -> None:
    "A tablet newer than its node is not told to update itself: the node's refusal says which side is older"
    node = Node(None, TOWNSHIP)
    with pytest.raises(SyncError) as e:
        node.check_protocol(SyncRequest(device="tab-ui-1", **versions))
    node.close()
    stand_in.answers["/api/sync"] = refusal(e.value.status, e.value.code, e.value.message, e.value.details)
    tapp, c = app
    before = tapp.read(lambda t: t.pending())
    assert sync_result(tapp, c) == want
    assert tapp.read(lambda t: t.pending()) == before


@pytest.mark.parametrize(("answer", "want"), [
    (NGINX_502, NOT_ANSWERING),
    (PORTAL_200, NOT_ANSWERING),  # an answer that is no enrolment: bad_answer
    (NEW_CODE, REATTACH_REFUSED),
], ids=["nginx-502", "portal-200", "unknown-code"])
def test_a_failed_re_attach_is_said_in_chinese(app: tuple[TabletApp, TestClient], stand_in: StandIn,
                                               answer: Answer, want: str) -> None:
    tapp, c = app
    stand_in.answers["/api/sync"] = refusal(401, "unauthorized", "unknown device token")
    assert "镇街服务器不认识这台平板了" in sync_result(tapp, c)
    stand_in.answers["/api/enrol"] = answer
    r = post(c, tapp, "/sync/reattach", {"code": "7KQ4M-2XD9P"})
    assert r.status_code == 400 and 'id="reattach-form"' in r.text
    assert messages(r.text) == [want]


def test_a_node_too_old_to_re_attach_is_said_in_chinese(app: tuple[TabletApp, TestClient],
                                                        stand_in: StandIn) -> None:
    "An old node takes the code for a new tablet's: it enrols a new device, and this tablet is unchanged"
    tapp, c = app
    token = tapp.read(lambda t: t.store.meta("token"))
    enrolled = {"device": "tab-new-1", "token": "t0k3n", "user": "王芳", "unit": "510903001001",
                "tier": "village", "node_unit": "510903001000"}
    stand_in.answers["/api/enrol"] = (200, "application/json", json.dumps(enrolled).encode())
    r = post(c, tapp, "/sync/reattach", {"code": "7KQ4M-2XD9P"})
    assert r.status_code == 400
    assert messages(r.text) == [ENROL_ERRORS["reattach_unsupported"]]
    assert "镇街服务器的软件太旧" in r.text and "tab-new-1" not in r.text
    assert tapp.read(lambda t: (t.device, t.store.meta("token"))) == ("tab-ui-1", token)


def test_a_set_up_refused_with_a_code_the_app_does_not_know_is_said_in_chinese(tmp_path: Path,
                                                                              stand_in: StandIn) -> None:
    stand_in.answers["/api/enrol"] = NEW_CODE
    tapp = TabletApp(tmp_path / "new.db", port=PORT, server=stand_in.url)
    try:
        with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
            r = post(c, tapp, "/setup", {"server": stand_in.url, "code": "7KQ4M-2XD9P", "pin": PIN, "pin2": PIN})
        assert r.status_code == 400 and messages(r.text) == [ENROL_REFUSED]
        assert not (tmp_path / "new.db").exists()
    finally:
        tapp.close()


def test_a_sync_that_fills_the_tablet_s_storage_is_said_in_chinese(app: tuple[TabletApp, TestClient],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    "The error an encrypted tablet's database (SQLCipher's own classes) raises when the storage is full"
    full = sqlcipher_error("max_page_count = 2", "INSERT INTO t VALUES (zeroblob(4000))")

    def no_room(self: Tablet, **kw: object) -> None:  # a pull's write that finds no room
        raise full

    tapp, c = app
    monkeypatch.setattr(Tablet, "sync", no_room)
    before = tapp.read(lambda t: t.pending())
    assert sync_result(tapp, c) == TABLET_FULL
    assert tapp.read(lambda t: t.pending()) == before
