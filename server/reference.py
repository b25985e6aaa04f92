"""Reference data on a node: the staff API for authoring notices, tasks and catalogue entries, and
publishing the node's unit tree as synced ``unit`` records.

Everything is written through ``Node.editor``, so the ops carry this node's unit and tier and flow down
to every node and tablet below (see ``server/relay.py``). Only the node's own staff author here: a
township node's township staff, a county node's county staff, a city node's city staff, and of them
only accounts whose scope is the node's whole unit (not one village).

    GET  /api/staff/reference         notices, tasks and both catalogues as this node holds them
    POST /api/staff/notices           {"title", "body"}
    POST /api/staff/tasks             {"title", "description"?, "due_date"?, "status"?}; the due date is
                                      checked as the CLI's (``ref.add_task``): 400 ``no_such_date``
    POST /api/staff/catalogue         {"kind", "code", "name"?, "order"?, "retired"?}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sync import reference as ref
from sync import units as unitlib
from sync.errors import Forbidden

from .auth import Staff
from .node import Node, written_as_node
from .orders import CatalogueOrder, NoticeOrder, TaskOrder, json_body

T = TypeVar("T")


def publish_units(node: Node, user: str = "staff") -> int:
    """Write the node's stored unit tree (``cunsync units import``) as ``unit`` records: this node's unit
    and every unit under it whose synced name differs, or whose record was withdrawn (``withdraw_units``)
    and is back in the tree. Returns how many records were written."""
    lo, hi = unitlib.descendant_range(node.unit)
    if "units" not in node.store.db.table_names():
        return 0
    editor = node.editor(user)
    have = {r.data.get("code"): r for r in node.store.records("unit", units=(lo, hi), include_deleted=True)}
    written = 0
    with node.store.transaction():
        for row in node.store.db.query("SELECT code, name, tier, parent FROM units WHERE code BETWEEN ? AND ?"
                                       " ORDER BY code", [lo, hi]):
            rec = have.get(row["code"])
            if rec is None:
                values = {"code": row["code"], "name": row["name"], "tier": row["tier"]}
                if row["parent"]:
                    values["parent"] = row["parent"]
                editor.create("unit", values, record=ref.unit_id(row["code"]))
            elif rec.deleted or rec.data.get("name") != row["name"]:
                if rec.deleted:
                    editor.restore(rec.id)
                if rec.data.get("name") != row["name"]:
                    editor.update(rec.id, {"name": row["name"]})
            else:
                continue
            written += 1
    return written


def withdraw_units(node: Node, codes: Iterable[str], user: str = "staff") -> int:
    """Delete the ``unit`` records of ``codes`` (units taken out of the tree) that this node published
    (``publish_units``) and that are not deleted yet: the delete ops flow down like the records did, so the
    nodes and tablets below drop them too. A record published from above stays: the node above answers
    for it. Returns how many records were deleted."""
    editor = node.editor(user)
    withdrawn = 0
    with node.store.transaction():
        for code in codes:
            rec = node.store.get(ref.unit_id(code))
            if rec is not None and rec.coll == "unit" and not rec.deleted and any(
                    op.field == "code" and op.unit == node.unit and written_as_node(op)
                    for op in node.store.record_ops(rec.id)):
                editor.delete(rec.id)
                withdrawn += 1
    return withdrawn


def reference_routes(node: Node) -> list[BaseRoute]:
    from .staff import changing_staff, current_staff

    accounts = node.accounts

    async def author(request: Request, type_: type[T]) -> tuple[Staff, T]:
        "The node's own staff authoring reference data, and their JSON body decoded into ``type_``"
        staff = changing_staff(request, accounts, "township", "county", "city")
        if staff.role != node.tier:
            raise Forbidden(f"reference data on this {node.tier} node is authored by its own {node.tier} staff",
                            details={"role": staff.role, "node": node.tier})
        if staff.unit != node.unit:  # it reaches every unit below the node: not for an account scoped to one
            raise Forbidden(f"reference data reaches all of {node.unit}; an account scoped to {staff.unit} "
                            "cannot author it", details={"scope": staff.unit, "node": node.unit})
        return staff, await json_body(request, type_)

    async def api_reference(request: Request) -> Response:
        current_staff(request, accounts).require("township", "county", "city")

        def read() -> dict[str, Any]:
            with node.store.lock:  # the connection is shared: never read inside a sync's open transaction
                return {"notices": ref.notices(node.store), "tasks": ref.tasks(node.store),
                        "need_categories": ref.catalogue(node.store, "need_category", include_retired=True),
                        "service_types": ref.catalogue(node.store, "service_type", include_retired=True)}

        return JSONResponse(await run_in_threadpool(read))

    async def api_notice(request: Request) -> Response:
        staff, notice = await author(request, NoticeOrder)
        rid = await run_in_threadpool(lambda: ref.add_notice(node.editor(staff.username), notice.title, notice.body))
        return JSONResponse({"id": rid}, status_code=201)

    async def api_task(request: Request) -> Response:
        staff, task = await author(request, TaskOrder)
        rid = await run_in_threadpool(lambda: ref.add_task(
            node.editor(staff.username), task.title, task.description, due_date=task.due_date, status=task.status))
        return JSONResponse({"id": rid}, status_code=201)

    async def api_catalogue(request: Request) -> Response:
        staff, entry = await author(request, CatalogueOrder)
        rid = await run_in_threadpool(lambda: ref.set_catalogue(
            node.editor(staff.username), entry.kind, entry.code, name=entry.name, order=entry.order,
            retired=entry.retired))
        return JSONResponse({"id": rid})

    return [
        Route("/api/staff/reference", api_reference, methods=["GET"]),
        Route("/api/staff/notices", api_notice, methods=["POST"]),
        Route("/api/staff/tasks", api_task, methods=["POST"]),
        Route("/api/staff/catalogue", api_catalogue, methods=["POST"]),
    ]
