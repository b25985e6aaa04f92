"""The OpenAPI description of the node's HTTP API (``server.openapi``), against a real node: ``/openapi.json``
is served, is valid OpenAPI 3.1 and describes exactly the routes the app has; and schemathesis, fuzzing every
operation with an enrolled tablet's token and signed-in staff sessions, finds no server error and no answer
the description does not allow (status, content type, body).

Bounded and deterministic: at most ``MAX_EXAMPLES`` generated requests per operation (plus schemathesis'
own examples and coverage cases; ``PAGE_EXAMPLES`` for the staff pages), derandomized, no example database;
one node for the module.
(At 30 the fuzzing missed a 500 that 100 find: a ``client_time`` past 64 bits.) Integers past 64 bits, which
fuzzing finds only by luck, also have explicit cases at the end.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import hypothesis
import httpx
import msgspec
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from e2e_harness import TOWNSHIP, V1, NodeProcess
from server.app import create_app
from server.node import Node
from server.openapi import SESSION_COOKIE, openapi_spec
from sync.hlc import HLC
from sync.wire import JSON, MSGPACK, PROTOCOL_VERSION, SyncRequest

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 100
PAGE_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PASSWORD = "correct horse battery"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


# MessagePack both ways, through msgspec as the node does. The description gives ``bytes`` fields in their
# JSON form, base64 strings: a body that is a SyncRequest goes as a tablet sends it, bytes as MessagePack bin
# (any other body as it is, to be refused), and an answer read from MessagePack is checked in its JSON form.
@schemathesis.serializer(MSGPACK)
def _to_msgpack(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    try:
        value = msgspec.json.decode(msgspec.json.encode(value), type=SyncRequest)
    except msgspec.ValidationError:
        pass
    return msgspec.msgpack.encode(value)


@schemathesis.deserializer(MSGPACK)
def _from_msgpack(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return msgspec.json.decode(msgspec.json.encode(msgspec.msgpack.decode(response.content)))


def _msgpack_can_carry(value: Any) -> bool:
    "MessagePack carries integers from -2**63 to 2**64 - 1 only; JSON (and the description) any integer"
    try:
        msgspec.msgpack.encode(value)
    except OverflowError:
        return False
    return True


class Served(NamedTuple):
    node: NodeProcess
    device: str
    token: str
    #: role -> (session cookie, CSRF token) of a signed-in staff member: township staff and an admin
    staff: dict[str, tuple[str, str]]

    def credentials(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
        "The tablet's token, and a staff session fit for the operation, for ``case.call``"
        cookie, csrf = self.staff["admin" if case.path.startswith("/api/admin/") else "township"]
        return {"headers": {"Authorization": f"Bearer {self.token}", "X-CSRF-Token": csrf},
                "cookies": {SESSION_COOKIE: cookie}}


def _sign_in(url: str, username: str) -> tuple[str, str]:
    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    with httpx.Client(base_url=url, timeout=10) as c:
        form = {"username": username, "password": PASSWORD, "csrf": csrf.findall(c.get("/login").text)[0]}
        assert c.post("/login", data=form).status_code == 303
        return c.cookies[SESSION_COOKIE], csrf.findall(c.get("/staff").text)[0]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    "One node for the module, with a village tablet and two staff accounts added before it starts"
    db = tmp_path_factory.mktemp("openapi") / "township.db"
    n = Node(db, TOWNSHIP)
    try:
        dev, token = n.add_device(V1, "wang")
        n.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP)
        n.accounts.add("root", PASSWORD, role="admin")
    finally:
        n.close()
    proc = NodeProcess(db).start()
    try:
        staff = {"township": _sign_in(proc.url, "liu"), "admin": _sign_in(proc.url, "root")}
        yield Served(proc, dev, token, staff)
    finally:
        proc.kill()


def test_the_description_is_served_valid_and_covers_every_route(served: Served) -> None:
    running = served.node
    r = httpx.get(running.url + "/openapi.json", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(JSON)
    doc = r.json()
    assert doc == openapi_spec()
    assert doc["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_url(running.url + "/openapi.json", timeout=10)
    loaded.validate()  # against the OpenAPI 3.1 meta-schema; raises on an invalid document
    described = {(m, path) for path, item in doc["paths"].items() for m in item if m in HTTP_METHODS}
    node = Node(None, TOWNSHIP)
    try:
        app = create_app(node)
    finally:
        node.close()
    served_ops: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r} is not a plain Route; describe it in server/openapi.py"
        # Starlette answers HEAD wherever GET is; the description lists GET
        served_ops |= {(m.lower(), route.path) for m in route.methods or () if m != "HEAD"}
    assert served_ops - described == set(), "routes server/openapi.py does not describe"
    assert described - served_ops == set(), "operations server/openapi.py describes that the app lacks"


def test_the_description_does_not_depend_on_what_was_imported_first() -> None:
    "A process that imports only server.openapi describes the same error codes as one that ran the app"
    fresh = subprocess.run(
        [sys.executable, "-c", "import json; from server.openapi import openapi_spec; print(json.dumps(openapi_spec()))"],
        capture_output=True, text=True, check=True, timeout=120)
    node = Node(None, TOWNSHIP)
    try:
        create_app(node)  # imports every route's module
    finally:
        node.close()
    built = openapi_spec()
    assert json.loads(fresh.stdout) == built
    assert "`already_escalated`" in json.dumps(built, ensure_ascii=False)


# The document as built in-process, so that schemathesis makes one test per operation at collection; the
# test above checks the node serves this very document. (``schemathesis.pytest.from_fixture``, which would load
# it from the running node, fails under pytest 9.2 in schemathesis 4.32.5: it sets ``request.node._nodeid``.)
schema = schemathesis.openapi.from_dict(openapi_spec())


API = r"^/(api/|openapi)"


def _call(case: schemathesis.Case[Any], served: Served) -> None:
    for name in [h for h in case.headers or {} if h.lower() == "host"]:
        # schemathesis sometimes sends a malformed Host (``[``): the client library's cookie jar fails on
        # it before any request is made, so it tests nothing of the node's
        del case.headers[name]
    if case.operation.path == "/api/sync" and isinstance(case.body, dict):
        # reach past the first refusals: a request for another device or protocol stops at 403 / 409
        if isinstance(case.body.get("device"), str):
            case.body["device"] = served.device
        if type(case.body.get("protocol")) is int:
            case.body["protocol"] = PROTOCOL_VERSION
    if case.media_type == MSGPACK and not _msgpack_can_carry(case.body):
        case.media_type = JSON  # the same request, in the one format that can carry it
    case.call_and_validate(base_url=served.node.url, checks=CHECKS, timeout=10, **served.credentials(case))


@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@schema.include(path_regex=API).parametrize()
def test_the_node_answers_as_described(case: schemathesis.Case[Any], served: Served) -> None:
    _call(case, served)


@hypothesis.settings(max_examples=PAGE_EXAMPLES, derandomize=True, database=None, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@schema.exclude(path_regex=API).parametrize()
def test_the_staff_pages_answer_as_described(case: schemathesis.Case[Any], served: Served) -> None:
    "The workbench's HTML pages and forms: fewer examples each (their inputs are form fields and ids)"
    _call(case, served)


#: Integers a schema-valid request may carry that SQLite (64-bit signed) cannot store, each in one place a
#: push reaches: the node may refuse them or cope, as described, but not fail on them (500). Fuzzing finds
#: some of these only by luck; these requests find them every time.
TOO_BIG = {
    "client_time": 2**70,
    "negative client_time": -(2**70),
    "cursor, under the node's epoch": 2**63,
    "op counter": 2**63,
    "op hlc": -(2**70),
    "pred counter": 2**63,
}


def _push(dev: str, epoch: str, where: str, n: int, k: int) -> dict[str, Any]:
    """A SyncRequest with ``n`` in the place ``where`` names; an op, where one is needed, is the ``k``-th
    (its own counter and record: the cases share a node, and a repeated op would be skipped as known)"""
    body: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "device": dev}
    if where.startswith("cursor"):
        body.update(epoch=epoch, cursor=n)
    elif where.endswith("client_time"):
        body["client_time"] = n
    else:  # an op placing a new record in the tablet's village, to be stored
        record = base64.b64encode(k.to_bytes(16, "big")).decode()  # bytes travel as base64 in JSON
        op = [0, n if where == "op counter" else k, n if where == "op hlc" else HLC().now(), "person", record,
              "unit", 0, V1, [0, n] if where == "pred counter" else []]
        body["ops"] = [[dev], [[0, "wang", V1, 1]], [op], []]
    return body


CASES = [(where, media) for where, n in TOO_BIG.items() for media in (JSON, MSGPACK)
         if media == JSON or -(2**63) <= n < 2**64]  # what MessagePack can carry


@pytest.mark.parametrize(("where", "media"), CASES)
def test_integers_sqlite_cannot_store_get_an_answer_as_described(where: str, media: str, served: Served) -> None:
    body = _push(served.device, served.node.health()["epoch"], where, TOO_BIG[where],
                 k=1 + CASES.index((where, media)))
    case = schema["/api/sync"]["POST"].Case(body=body, media_type=media)
    case.call_and_validate(base_url=served.node.url, checks=CHECKS, timeout=10, **served.credentials(case))
