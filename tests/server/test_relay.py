"""The upper node's side of a link against a lower node that misbehaves. The lower node is faked at the
narrowest seam, the HTTP transport (``httpx.MockTransport``), since a real node never sends such answers:
the upper node must refuse what a link may not bring up, and write nothing."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from server.relay import LinkError, link_progress, sync_link
from sync.errors import DeviceRevoked
from sync.hlc import HLC
from sync.ops import Op, uuid7
from sync.types import SET
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, decode, encode, pack_ops

COUNTY, TOWNSHIP, VILLAGE = "510903000000", "510903001000", "510903001001"
OTHER_VILLAGE = "510904001001"  # in another county


@pytest.fixture
def county(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "county.db", COUNTY)
    yield n
    n.close()


@pytest.fixture
def township(tmp_path: Path) -> Iterator[Node]:
    "A real lower node, with its unit tree"
    n = Node(tmp_path / "township.db", TOWNSHIP)
    ensure_units(n)
    yield n
    n.close()


def serve(node: Node, **kw: Any) -> Any:
    "A node's app in process (Starlette's TestClient, an httpx client): use it in ``with``"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from starlette.testclient import TestClient

    return TestClient(create_app(node, **kw), base_url="http://township")


def fake_township(ops: list[Op], seen: list[SyncRequest] | None = None, *, revoked: str = "") -> httpx.Client:
    """A lower node that answers whoami as a county link and every sync with ``ops``. ``revoked``: where
    an older node, which still takes a revoked link's push, says the link is revoked: ``"whoami"`` (and
    in its sync answers) or ``"sync"`` only (revoked after whoami)"""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/whoami":
            return httpx.Response(200, json={"device": "county-link", "user": "x", "unit": COUNTY, "tier": "county",
                                             "node_unit": TOWNSHIP, "revoked": revoked == "whoami"})
        if seen is not None:
            import gzip

            seen.append(decode(gzip.decompress(request.content), SyncRequest))
        resp = SyncResponse(protocol=PROTOCOL_VERSION, acked=0, ops=pack_ops(ops), cursor=len(ops), more=False,
                            server_time=HLC().now(), epoch="e1", revoked=bool(revoked))
        return httpx.Response(200, content=encode(resp), headers={"content-type": MSGPACK})

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://township")


def op(coll: str, record: str, field: str, value: object, *, unit: str = TOWNSHIP, tier: int = 2,
       counter: int = 1, site: str = "") -> Op:
    return Op(site or f"node-{unit}", counter, HLC().now(), coll, record, field, SET, value, (), "liu", unit, tier)


@pytest.mark.parametrize("bad", [
    lambda: [op("person", uuid7(), "unit", VILLAGE), op("person", uuid7(), "name", "张三", counter=2)],
    lambda: [op("need", uuid7(), "description", "需要助餐")],
    lambda: [op("escalation", uuid7(), "unit", OTHER_VILLAGE)],  # not one of the township's villages
    lambda: [op("escalation", uuid7(), "unit", VILLAGE, unit=COUNTY, tier=3)],  # claims the county wrote it
    lambda: [op("escalation", uuid7(), "unit", VILLAGE, unit="51090300100x")],
    lambda: [op("notice", uuid7(), "unit", TOWNSHIP)],  # reference data does not flow up
    lambda: [op("escalation", uuid7(), "urgency", "马上")],  # not a valid value
    lambda: [op("escalation", uuid7(), "unit", VILLAGE, site=f"node-{COUNTY}")],  # as the county's own device
    lambda: [op("escalation", uuid7(), "unit", VILLAGE, site="tab-3f2a9c")],  # a tablet's
    lambda: [op("escalation", uuid7(), "unit", VILLAGE, site=f"node-{TOWNSHIP}2")],
])
def test_the_upper_node_refuses_what_a_link_may_not_bring_up(county: Node, bad: Callable[[], list[Op]]) -> None:
    before = county.store.count_ops()
    with fake_township(bad()) as client, pytest.raises(LinkError) as exc:
        sync_link(county, "http://township", "token", client=client)
    assert exc.value.code == "bad_pull"
    assert county.store.count_ops() == before
    assert link_progress(county) == []


def test_a_pulled_escalation_may_not_write_into_one_of_the_upper_nodes_records(county: Node) -> None:
    notice = county.editor("区").create("notice", {"unit": COUNTY, "title": "通知"})
    before = county.store.count_ops()
    with fake_township([op("escalation", notice, "summary", "改写")]) as client, pytest.raises(LinkError):
        sync_link(county, "http://township", "token", client=client)
    assert county.store.count_ops() == before


def test_a_good_pull_is_applied_and_the_link_pushes_the_county_s_notice(county: Node) -> None:
    county.editor("区").create("notice", {"unit": COUNTY, "title": "通知"})
    rid = uuid7()
    seen: list[SyncRequest] = []
    good = [op("escalation", rid, "unit", VILLAGE),
            op("escalation", rid, "summary", "事项", site=f"node-{TOWNSHIP}~9f3c2a")]  # restored since
    with fake_township(good, seen) as client:
        result = sync_link(county, "http://township", "token", client=client)
    assert (result.pulled, result.pushed, result.cursor, result.epoch) == (2, 2, 2, "e1")
    assert county.store.get(rid).data == {"unit": VILLAGE, "summary": "事项"}  # type: ignore[union-attr]
    assert [len(r.ops.ops) for r in seen] == [2] and seen[0].device == "county-link"
    [progress] = link_progress(county)
    assert (progress["child"], progress["pushed_seq"], progress["cursor"]) == (TOWNSHIP, 2, 2)  # its own ops


def test_a_push_over_the_lower_node_s_body_limit_goes_through_in_smaller_batches(
        county: Node, township: Node) -> None:
    "A county's long notices after days without a link: the first request is several times the township's limit"
    import secrets

    _, token = township.add_device(COUNTY, "区-link", tier="county")
    limit = 4000
    staff = county.editor("区")
    notices = [staff.create("notice", {"unit": COUNTY, "title": f"通知{i}", "body": secrets.token_hex(400)})
               for i in range(20)]  # 800 characters of body each, which gzip shrinks to about 450 bytes
    with serve(township, max_body=limit) as client:
        result = sync_link(county, "http://township", token, client=client)
    assert result.pushed == county.store.count_ops() and result.rounds > 1, result
    assert all(township.store.get(rid).data["title"] == f"通知{i}"  # type: ignore[union-attr]
               for i, rid in enumerate(notices))
    [progress] = link_progress(county)
    assert progress["pushed_seq"] == county.store.max_seq()


def test_a_revoked_link_writes_nothing_below_and_its_sync_fails(county: Node, township: Node) -> None:
    "Revoked without wipe: a link holds no worker's data, so unlike a tablet's, its push is refused too"
    dev, token = township.add_device(COUNTY, "区-link", tier="county")
    with serve(township) as client:
        sync_link(county, "http://township", token, client=client)
        [before] = link_progress(county)
        township.revoke(dev)
        notice = county.editor("区").create("notice", {"unit": COUNTY, "title": "假通知"})
        ops = township.store.count_ops()
        # the lower node refuses the push itself, whoever sends it
        req = SyncRequest(protocol=PROTOCOL_VERSION, device=dev, ops=pack_ops(county.store.record_ops(notice)))
        with pytest.raises(DeviceRevoked):
            township.sync(township.authenticate(token), req)
        # and the upper node's link sync says so instead of reporting a success
        with pytest.raises(LinkError) as exc:
            sync_link(county, "http://township", token, client=client)
    assert (exc.value.code, exc.value.status) == ("device_revoked", 403)
    # the new credential goes where each kind of sync reads it: the link for the schedule, --token by hand
    assert f"`cunsync link add --unit {TOWNSHIP} --token NEW` for the scheduled sync" in exc.value.message
    assert "`cunsync link-sync` by hand takes it as --token NEW" in exc.value.message
    assert township.store.count_ops() == ops and township.store.get(notice) is None
    assert link_progress(county) == [before]


def test_a_link_token_the_lower_node_does_not_know_gets_a_links_advice(county: Node, township: Node) -> None:
    """Mistyped in `link add`, or the lower node restored from a backup older than the link device: the
    lower node's answer tells a tablet to re-attach; the link sync says where a link's new credential goes"""
    with serve(township) as client, pytest.raises(LinkError) as exc:
        sync_link(county, "http://township", "a-token-never-issued", client=client)
    assert (exc.value.code, exc.value.status) == ("unauthorized", 401)
    assert exc.value.message.startswith("the node at http://township does not know this link token")
    assert "`cunsync device add --unit <upper unit> --tier <upper tier>` there" in exc.value.message
    assert "`cunsync link add --unit <its unit> --token NEW`" in exc.value.message
    assert "tablet" not in exc.value.message
    assert link_progress(county) == []


@pytest.mark.parametrize("revoked", ["whoami", "sync"])
def test_a_lower_node_that_says_the_link_is_revoked_fails_the_link_sync(county: Node, revoked: str) -> None:
    """An older lower node takes a revoked link's push: the upper node sends none once whoami says the link
    is revoked, and records no progress when a sync answer says so"""
    county.editor("区").create("notice", {"unit": COUNTY, "title": "通知"})
    seen: list[SyncRequest] = []
    with fake_township([], seen, revoked=revoked) as client, pytest.raises(LinkError) as exc:
        sync_link(county, "http://township", "token", client=client)
    assert exc.value.code == "device_revoked"
    assert len(seen) == (revoked == "sync")
    assert link_progress(county) == []
