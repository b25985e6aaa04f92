"""The staff JSON API's request bodies, as msgspec structs: the handlers decode into them (``json_body``) and
the OpenAPI document (``server.openapi``, ``server.flows_openapi``) describes them, so both say the same
fields and types.

    json_body(request, type_)   the body decoded into ``type_``; a body that is not JSON, or not that shape
                                (a missing field, a wrong type such as a null for a text, nesting too deep),
                                is 400 ``malformed_body``, saying where, before anything is written

Fields a struct does not name are ignored, as on the sync protocol.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from starlette.requests import Request

from sync.wire import decode

Role = Literal["township", "county", "city", "admin"]
T = TypeVar("T")


async def json_body(request: Request, type_: type[T]) -> T:
    "A staff API request's JSON body decoded into ``type_`` (an empty body is ``{}``)"
    return decode(await request.body() or b"{}", type_, "json")


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
