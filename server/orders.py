"""Request bodies: how the node reads one within a limit, and the staff JSON API's as msgspec structs: the
handlers decode into them (``json_body``) and the OpenAPI document (``server.openapi``,
``server.flows_openapi``) describes them, so both say the same fields and types.

    read_body(request, limit=)  the body as sent; past ``limit`` bytes (by its Content-Length, or counted as
                                it arrives) 413 ``too_large``, before more of it is read
    json_body(request, type_)   the body decoded into ``type_``; a body that is not JSON, or not that shape
                                (a missing field, a wrong type such as a null for a text, nesting too deep),
                                is 400 ``malformed_body``, saying where, before anything is written
    form_body(request)          a staff page's posted form

A staff body, JSON or form, is refused past ``STAFF_MAX_BODY``. Fields a struct does not name are ignored,
as on the sync protocol.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import Message

from sync.errors import TooLarge
from sync.wire import decode

Role = Literal["township", "county", "city", "admin"]
T = TypeVar("T")

#: Largest body of a staff request, JSON or a page's form (the sync API has its own, ``server.app``): the
#: largest a staff member sends, a record's form with every text at its longest, is a few tens of KB
STAFF_MAX_BODY = 1024 * 1024


async def read_body(request: Request, *, limit: int) -> bytes:
    "The request body as sent, refused past the limit (``server.app.inflated`` gunzips a sync body)"
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body is {length} bytes; the limit is {limit}", details={"limit_bytes": limit})
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes", details={"limit_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, type_: type[T]) -> T:
    "A staff API request's JSON body decoded into ``type_`` (an empty body is ``{}``)"
    return decode(await read_body(request, limit=STAFF_MAX_BODY) or b"{}", type_, "json")


async def form_body(request: Request) -> FormData:
    "A staff page's posted form (urlencoded or multipart), its body read as ``json_body`` reads one"
    body = await read_body(request, limit=STAFF_MAX_BODY)

    async def once() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return await Request(request.scope, once).form()


# -- the staff API (``server.staff``) -------------------------------------------------------------------

class ConflictResolution(msgspec.Struct):
    record: str
    field: str
    value: Any


class MergeOrder(msgspec.Struct):
    "Merge the resident ``drop`` into ``keep``: its needs and services follow, it is deleted"

    keep: str
    drop: str


class EnrolmentOrder(msgspec.Struct):
    "A one-time enrolment code to create, for a unit in the staff member's scope and the worker there"

    unit: str
    user: str


class NewStaffAccount(msgspec.Struct):
    username: str
    password: Annotated[str, msgspec.Meta(min_length=8)]
    role: Role
    #: the account's unit; this node's unit when left out
    unit: str | None = None


# -- escalations (``server.escalations``) and reference data (``server.reference``) ----------------------

class EscalationOrder(msgspec.Struct):
    "Township staff escalate one of their needs, with a summary they write (no names, phones or ID numbers)"

    need: str
    summary: str


class EscalationStep(msgspec.Struct, omit_defaults=True):
    "``department`` to assign; ``answer`` to resolve, return or withdraw; nothing to accept"

    department: str | None = None
    answer: str | None = None


class NoticeOrder(msgspec.Struct):
    title: str
    body: str = ""


class TaskOrder(msgspec.Struct):
    title: str
    description: str = ""
    due_date: str | None = None
    status: str = "待办"


class CatalogueOrder(msgspec.Struct):
    "Add a catalogue entry (``name`` needed) or change one; the same kind and code is the same entry"

    kind: Literal["need_category", "service_type"]
    code: str
    name: str | None = None
    order: int | None = None
    retired: bool | None = None
