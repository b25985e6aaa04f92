"""The node's HTTP API as an OpenAPI 3.1 document, generated from the msgspec types it speaks.

    openapi_spec()     the document, as a dict: schemas from ``sync.wire``, the staff API's request bodies
                       from ``server.orders`` (the structs its handlers decode into), and the small JSON
                       bodies below, for the answers that handlers build by hand, through
                       ``msgspec.json.schema_components``
    openapi_route()    a Route serving it at ``GET /openapi.json``; the document is built once

Every error, on every endpoint, has one shape, ``sync.wire.ErrorBody``:
``{"error": {"code", "message", "details"}}``, with its HTTP status.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import sync
from sync.errors import SyncError
from sync.wire import (
    JSON,
    MIN_PROTOCOL_VERSION,
    MSGPACK,
    PROTOCOL_VERSION,
    EnrolRequest,
    EnrolResponse,
    ErrorBody,
    SyncRequest,
    SyncResponse,
)

from .orders import STAFF_MAX_BODY, ConflictResolution, EnrolmentOrder, MergeOrder, NewStaffAccount, Role
from .snapshots import Snapshot

OPENAPI_PATH = "/openapi.json"

Tier = Literal["village", "township", "county", "city"]


class Health(msgspec.Struct, kw_only=True):
    "That the node is up, and what it is: its unit and tier, protocol, epoch and highest op sequence"

    status: Literal["ok"]
    unit: str
    tier: Tier
    protocol: int
    #: changes when the node is restored from a backup: tablets then start their pull again
    epoch: str
    seq: int


class WhoAmI(msgspec.Struct, kw_only=True):
    "The device a token belongs to, and the node it is enrolled to"

    device: str
    user: str
    unit: str
    tier: Tier
    node_unit: str
    protocol: int
    revoked: bool


# -- the staff API (``server.staff``): signed-in staff, a session cookie, a CSRF token ----------------

class LoginForm(msgspec.Struct):
    "The sign-in form; ``csrf`` is the token in the form ``GET /login`` serves"

    username: str
    password: str
    csrf: str


class CsrfForm(msgspec.Struct):
    csrf: str


class ConflictCandidate(msgspec.Struct):
    "One competing value of a field, with who wrote it"

    value: Any
    user: str
    device: str
    tier: str
    unit: str
    hlc: int


class StaffConflict(msgspec.Struct):
    "A field whose concurrent values a person must choose between; ``shown`` is the one shown meanwhile"

    record: str
    collection: str
    unit: str | None
    field: str
    shown: Any
    candidates: list[ConflictCandidate]


class Merged(msgspec.Struct):
    keep: str
    drop: str
    ops: int


class ConflictResolved(msgspec.Struct):
    record: str
    field: str
    #: how many ops the resolution wrote
    ops: int


class EnrolmentCode(msgspec.Struct):
    code: str
    unit: str
    user: str
    #: Unix time, seconds
    expires_at: int


class Revocation(msgspec.Struct):
    device: str
    revoked: bool
    wipe: bool


class DisabledAccount(msgspec.Struct):
    username: str
    disabled: bool


class StaffAccount(msgspec.Struct):
    username: str
    role: Role
    unit: str


class ListedAccount(msgspec.Struct):
    "A staff account as an admin lists it (``cunsync user list``): never its password hash"

    username: str
    #: the name pages show; empty when none was given
    display_name: str
    role: Role
    unit: str
    disabled: bool


# -- the township workbench's forms (``server.workbench``, ``server.devicepages``) ------------------

class _Form(msgspec.Struct, kw_only=True):
    "Every workbench form carries the page's CSRF token"

    csrf: str


class ResolveForm(_Form, kw_only=True):
    "Keep one competing value (``choice``, as JSON) or a typed one (``typed``)"

    record: str
    field: str
    choice: str | None = None
    typed: str | None = None


class RecordForm(_Form, kw_only=True):
    "A correction of a record's fields; a field left out stays as it is"

    name: str | None = None
    gender: str | None = None
    birth_date: str | None = None
    id_number: str | None = None
    phone: str | None = None
    address: str | None = None
    groups: list[str] | None = None
    groups_shown: str | None = None
    notes: str | None = None
    category: str | None = None
    urgency: str | None = None
    description: str | None = None


class MergeForm(_Form, kw_only=True):
    keep: str
    drop: str


class PairForm(_Form, kw_only=True):
    "Two residents the duplicates page paired"

    a: str
    b: str


class FinishMergeForm(_Form, kw_only=True):
    "A resident an older version left half-merged (the duplicates page's 未完成的旧合并): to finish or keep apart"

    record: str


class EscalateForm(_Form, kw_only=True):
    "A need escalated to the county (吹哨报到): a summary written by staff, nothing personal"

    summary: str


class RemoveForm(_Form, kw_only=True):
    """A resident taken out of the township's records (迁出/注销): ``reason`` one of 迁出到其他镇街, 去世, 其他
    (which needs a ``note``); without ``confirm=1`` the record's page asks to confirm, writing nothing.
    ``seen`` is what that page listed (the confirm form carries it): if the resident or her open needs
    changed since, the page asks again (409) and nothing is written"""

    reason: str
    note: str | None = None
    confirm: str | None = None
    seen: str | None = None


class NeedForm(_Form, kw_only=True):
    "The needs board's row: status, assignee, due date; ``back`` is the board's address to return to"

    status: str | None = None
    assignee: str | None = None
    due_date: str | None = None
    back: str | None = None


class SearchForm(_Form, kw_only=True):
    "A search of the residents: name characters, pinyin (full or initials), ID number or phone; a village"

    q: str | None = None
    unit: str | None = None


class TaskReportForm(_Form, kw_only=True):
    "One village's progress on a task: ``status`` one of 未开始, 进行中, 已完成, and a short ``note``"

    village: str
    status: str
    note: str | None = None


class EnrolForm(_Form, kw_only=True):
    unit: str
    user: str


class RevokeForm(_Form, kw_only=True):
    "``wipe=1``: the tablet erases its local data at its next contact"

    wipe: str | None = None


_REF = "#/components/schemas/{name}"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
SESSION_COOKIE = "cunsync_session"

#: Error responses: the component name, its status and what it means.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is wrong (a body that is not valid MessagePack or JSON, or not the "
                        "expected shape; an unknown collection or field; an invalid value; a clock too far "
                        "ahead); fix it and send it again."),
    401: ("Unauthorized", "No valid credential: a device sends `Authorization: Bearer <token>` from "
                          "enrolment; staff sign in first (code `not_signed_in`), and again after their "
                          "account's password, role or unit changed or it was disabled (code `session_ended`)."),
    403: ("Forbidden", "The caller may not do this: for a device, a unit or record outside its scope, an "
                       "op that claims another device or author, or a revoked device; for staff, a role or "
                       "unit outside the account's, or a missing or wrong CSRF token (code `csrf`)."),
    404: ("NotFound", "No such path."),
    405: ("MethodNotAllowed", "The path does not take this method."),
    409: ("VersionMismatch", f"The client speaks a sync protocol this node does not (it speaks "
                             f"{MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION}; `details` has `client`, `min` and "
                             "`max`), or writes a newer schema than the node knows (`details` has "
                             "`client_schema` and `schema`): the larger number is the newer side. On `/api/enrol`: "
                             "a re-attaching tablet names a device id the node knows (code `device_exists`)."),
    413: ("TooLarge", "The body, once inflated, or the batch is over the node's limit: `details.limit` "
                      "is the most ops a request may carry, `details.limit_bytes` the most bytes a body may "
                      "have. Send smaller batches."),
    429: ("TooManyAttempts", "Too many failed attempts from this client; wait before trying again."),
    500: ("InternalError", "A bug: the node logged it. Never expected; listed for its shape."),
    503: ("Unavailable", "The node cannot write its database (its file system turned read-only, say); "
                         "nothing was written. Retry once its operator has made it writable."),
    507: ("StorageFull", "The node's disk is full; nothing was written. Retry later."),
}

#: codes the app's handlers use for Starlette's own errors (``server.app._http_error``)
_HTTP_CODES = {404: ["not_found"], 405: ["method_not_allowed"], 500: ["internal"]}


def _error_codes(status: int) -> list[str]:
    "The ``error.code`` values of the SyncError classes with this status (handlers may pass others)"
    # the modules that define error classes of their own, imported here so that the list does not
    # depend on what the process happened to import first
    from . import escalations, pages  # noqa: F401
    found = set(_HTTP_CODES.get(status, []))
    todo: list[type[SyncError]] = [SyncError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.status == status and cls is not SyncError:
            found.add(cls.code)
    return sorted(found)


def _error_response(status: int) -> dict[str, Any]:
    _, text = _ERRORS[status]
    codes = _error_codes(status)
    if codes:
        text += " Codes include " + ", ".join(f"`{c}`" for c in codes) + "."
    return {"description": text,
            "content": {JSON: {"schema": {"$ref": _REF.format(name="ErrorBody")}}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/{_ERRORS[s][0]}"} for s in statuses}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": _REF.format(name=name)}}}}


_INFO = f"""The HTTP API of a cunsync node (township, county or city), which tablets sync with.

Every error, on every endpoint, has one shape, `ErrorBody`:
`{{"error": {{"code": "...", "message": "...", "details": ...}}}}`, with its HTTP status. That holds for
paths the node does not serve (404, code `not_found`) and methods a path does not take (405, code
`method_not_allowed`) too, which no operation below lists.

`POST /api/sync` speaks MessagePack (`{MSGPACK}`) by default and JSON (`{JSON}`) on request: the body's
`Content-Type` names its format, and the answer comes in the format `Accept` names (MessagePack unless it
names JSON), or the request's format when there is no `Accept`. A body may be gzip-compressed
(`Content-Encoding: gzip`); answers over 512 bytes are, when `Accept-Encoding` allows gzip. Structs marked
`array_like` in `sync.wire` travel as arrays; `bytes` fields travel as MessagePack bin, or base64 in JSON.
Errors are always JSON.

Staff sign in at `/login` (an HTML form) and then hold a signed session cookie, `{SESSION_COOKIE}`. Every
state-changing staff request carries the CSRF token of the session: a form's `csrf` field, or the
`X-CSRF-Token` header on the JSON API (the staff pages hold the token). What an account may do depends on
its role and unit: 403 otherwise.
"""


def openapi_spec() -> dict[str, Any]:
    "The OpenAPI 3.1 document for the node's HTTP API"
    types: list[Any] = [SyncRequest, SyncResponse, ErrorBody, Health, WhoAmI, EnrolRequest, EnrolResponse,
                        LoginForm, CsrfForm, StaffConflict, ConflictResolution, ConflictResolved, MergeOrder, Merged,
                        EnrolmentOrder, EnrolmentCode, Revocation, DisabledAccount, NewStaffAccount, StaffAccount,
                        ListedAccount, ResolveForm, RecordForm, MergeForm, PairForm, FinishMergeForm, NeedForm, TaskReportForm,
                        EnrolForm, RevokeForm, SearchForm, EscalateForm, RemoveForm, Snapshot]
    from .flows_openapi import FLOW_TYPES, flow_paths  # reference data and escalations

    types += FLOW_TYPES
    _, schemas = msgspec.json.schema_components(types, ref_template=_REF)
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    sync_body = {"$ref": _REF.format(name="SyncRequest")}
    sync_answer = {"$ref": _REF.format(name="SyncResponse")}
    paths: dict[str, Any] = {
        "/api/sync": {"post": {
            "operationId": "sync",
            "summary": "One sync round trip: push pending ops, acknowledge, pull what is new",
            "description": "Any request may be retried. See the API description for formats and gzip.",
            "security": bearer,
            "requestBody": {"required": True, "content": {MSGPACK: {"schema": sync_body},
                                                          JSON: {"schema": sync_body}}},
            "responses": {
                "200": {
                    "description": "What the node acknowledged, ops for the tablet, its new cursor",
                    "headers": {"Content-Encoding": {
                        "description": "`gzip` when the answer is compressed", "required": False,
                        "schema": {"type": "string", "enum": ["gzip"]}},
                        "Server-Timing": {
                            "description": "`sync;dur=<ms>`: the node's own time for the exchange, from its "
                                           "body to its answer", "required": False,
                            "schema": {"type": "string", "pattern": "^sync;dur=[0-9]+(\\.[0-9]+)?$"}}},
                    "content": {MSGPACK: {"schema": sync_answer}, JSON: {"schema": sync_answer}},
                },
                **_errors(400, 401, 403, 409, 413, 429, 503, 507),
            },
        }},
        "/api/health": {"get": {
            "operationId": "health",
            "summary": "Liveness, and what this node is",
            "description": "503 `storage_read_only` when the file system holding the node's database has "
                           "turned read-only: syncs cannot be written.",
            "security": [],
            "responses": {"200": _json("Health", "The node is up"), **_errors(503)},
        }},
        "/api/whoami": {"get": {
            "operationId": "whoami",
            "summary": "The device a token belongs to (a tablet calls it once at set-up)",
            "security": bearer,
            "responses": {"200": _json("WhoAmI", "The token's device"), **_errors(401)},
        }},
        "/api/enrol": {"post": {
            "operationId": "enrol",
            "summary": "Exchange a one-time enrolment code for a device and its token",
            "description": "The code is forgiving as typed: case, spaces, dashes and look-alikes. A client "
                           "that fails too often must wait (429). A tablet the node no longer knows (the node "
                           "was restored from a backup older than the tablet's enrolment) re-attaches by "
                           "naming its `device` id and the `user`, `unit` and `tier` it holds: the device is "
                           "made under that id only if the node does not know it (409 `device_exists`) and "
                           "the code is for that worker, unit and tier (403 `enrolment_mismatch`); a refusal "
                           "writes nothing and leaves the code valid.",
            "security": [],
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": {"$ref": _REF.format(name="EnrolRequest")}}}},
            "responses": {
                "200": _json("EnrolResponse", "The new device and its token (shown once)"),
                **_errors(400),
                "401": {"description": "A wrong, used or expired code: `error.code` is "
                                       "`invalid_enrolment_code`, `enrolment_used` or `enrolment_expired`.",
                        "content": {JSON: {"schema": {"$ref": _REF.format(name="ErrorBody")}}}},
                **_errors(403, 409, 413, 429),
            },
        }},
        OPENAPI_PATH: {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 description of this API",
                                  "content": {JSON: {"schema": {"type": "object"}}}}},
        }},
    }
    paths.update(_staff_paths())
    paths.update(_workbench_paths())
    paths.update(_rollup_paths())
    paths.update(flow_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "cunsync node", "version": sync.__version__, "description": _INFO,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {name: _error_response(status) for status, (name, _) in _ERRORS.items()},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "The device token from enrolment (`POST /api/enrol`)"},
                "staffSession": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                                 "description": "The signed session cookie `POST /login` sets"},
            },
        },
    }


def _redirect(to: str, description: str) -> dict[str, Any]:
    return {"description": f"{description}: to `{to}`",
            "headers": {"Location": {"required": True, "schema": {"type": "string", "const": to}}}}


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _staff_paths() -> dict[str, Any]:
    "The staff sign-in pages and the staff API (``server.staff``)"
    session: list[dict[str, list[str]]] = [{"staffSession": []}]
    csrf = {"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
            "description": "The session's CSRF token, as the staff pages hold it"}

    def api(op_id: str, summary: str, body: str | None, answer: dict[str, Any], *errors: int,
            parameters: list[dict[str, Any]] | None = None, changes: bool = True) -> dict[str, Any]:
        "A staff API operation; one that ``changes`` state needs the CSRF header"
        op: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": session,
                              "parameters": [*(parameters or []), *([csrf] if changes else [])],
                              "responses": {"200": answer, **_errors(*errors)}}
        if body is not None:  # a body over STAFF_MAX_BODY: 413 too_large
            op["responses"].update(_errors(413))
            op["requestBody"] = {"required": True, "content": {JSON: {"schema": {"$ref": _REF.format(name=body)}}}}
        return op

    too_large = f"a form over {STAFF_MAX_BODY // (1024 * 1024)} MB"
    return {
        "/login": {
            "get": {"operationId": "loginPage", "summary": "The sign-in page", "security": [],
                    "responses": {"200": _page("The sign-in form, with its CSRF token")}},
            "post": {
                "operationId": "login", "summary": "Sign in", "security": [],
                "requestBody": {"required": True,
                                "content": {FORM: {"schema": {"$ref": _REF.format(name="LoginForm")}}}},
                "responses": {
                    "303": _redirect("/staff", "Signed in; the session cookie is set"),
                    **{str(status): _page(f"The sign-in form again, saying why: {why}") for status, why in (
                        (401, "a wrong username or password"), (403, "a missing or stale CSRF token"),
                        (413, too_large), (429, "the account is locked after too many wrong passwords"))},
                },
            },
        },
        "/logout": {"post": {
            "operationId": "logout", "summary": "Sign out", "security": [],
            "requestBody": {"required": True,
                            "content": {FORM: {"schema": {"$ref": _REF.format(name="CsrfForm")}}}},
            "responses": {"303": _redirect("/login", "Signed out"), **_errors(403),
                          "413": _page(f"The sign-in form, saying why: {too_large}")},
        }},
        "/staff": {"get": {
            "operationId": "staffHome", "summary": "The staff page", "security": session,
            "responses": {"200": _page("The staff page: for township staff, the workbench's overview (open "
                                      "conflicts, overdue needs, tablets to look at); for admins, a note"),
                          "303": {"description": "Not signed in: to `/login`; county and city staff: to "
                                                 "their roll-up, `/rollup`",
                                  "headers": {"Location": {"required": True, "schema": {
                                      "type": "string", "enum": ["/login", "/rollup"]}}}}},
        }},
        "/api/staff/conflicts": {"get": api(
            "staffConflicts", "The open conflicts in a township staff member's scope", None,
            {"description": "The conflicts", "content": {JSON: {"schema": {
                "type": "array", "items": {"$ref": _REF.format(name="StaffConflict")}}}}},
            401, 403, changes=False)},
        "/api/staff/resolve": {"post": api(
            "staffResolve", "Resolve a conflict: the value a field keeps", "ConflictResolution",
            _json("ConflictResolved", "The resolution was written"), 400, 401, 403, 404)},
        "/api/staff/merge": {"post": api(
            "staffMerge", "Merge a duplicate resident into another; its needs and services follow",
            "MergeOrder", _json("Merged", "The merge was written"), 400, 401, 403, 404)},
        "/api/staff/enrolments": {"post": api(
            "staffEnrol", "Create a one-time enrolment code for a worker's tablet", "EnrolmentOrder",
            _json("EnrolmentCode", "The code, shown once"), 400, 401, 403)},
        "/api/staff/devices/{device}/revoke": {"post": api(
            "staffRevoke", "Revoke a device; with `wipe`, it also erases its local data", None,
            _json("Revocation", "The device is revoked"), 401, 403, 404,
            parameters=[
                {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "wipe", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "`1` or `true` to have the tablet erase its local data"},
            ])},
        "/api/admin/users": {
            "get": api(
                "adminListUsers", "The node's staff accounts, enabled and disabled, by username (as `cunsync "
                "user list`; never a password hash); admins only", None,
                {"description": "The accounts", "content": {JSON: {"schema": {
                    "type": "array", "items": {"$ref": _REF.format(name="ListedAccount")}}}}},
                401, 403, changes=False),
            "post": api(
                "adminAddUser", "Add or reset a staff account (a reset signs out its sessions); admins only",
                "NewStaffAccount",
                _json("StaffAccount", "The account"), 400, 401, 403)},
        "/api/admin/users/{username}/disable": {"post": api(
            "adminDisableUser", "Disable a staff account: it cannot sign in and its sessions end; its history "
            "keeps its name, and adding it again enables it; admins only", None,
            _json("DisabledAccount", "The account is disabled"), 401, 403, 404,
            parameters=[{"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}])},
    }


def _workbench_paths() -> dict[str, Any]:
    """The township workbench: pages (``text/html``) for township staff, their forms, and the exports.
    A page refuses in Chinese, as a page: 400 bad input, 403 another role or a stale CSRF token, 404 a
    record or device outside the township. Not signed in, a page sends the visitor to ``/login``."""
    session: list[dict[str, list[str]]] = [{"staffSession": []}]
    refused = {400: "bad input", 403: "an account that is not township staff, or a missing or stale CSRF token",
               404: "a record or device outside the staff member's township",
               413: f"a form over {STAFF_MAX_BODY // (1024 * 1024)} MB"}
    see_other = {"description": "Done (or not signed in: to `/login`); the next page says what happened",
                 "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}
    record = {"name": "record", "in": "path", "required": True, "schema": {"type": "string"}}
    device = {"name": "device", "in": "path", "required": True, "schema": {"type": "string"}}

    def page(op_id: str, summary: str, *errors: int, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"operationId": op_id, "summary": summary, "security": session, "parameters": parameters or [],
                "responses": {"200": _page(summary), "303": _redirect("/login", "Not signed in"),
                              **{str(s): _page(f"A page saying why: {refused[s]}") for s in (*errors, 403)}}}

    def form(op_id: str, summary: str, body: str, *errors: int, parameters: list[dict[str, Any]] | None = None,
             shows: str | None = None, asks: str | None = None) -> dict[str, Any]:
        "A form's post: done, to the next page (303); or ``shows`` a page; or, until confirmed, ``asks`` on one"
        answers: dict[str, Any] = {"200": _page(shows)} if shows else {"303": see_other}
        if shows:
            answers["303"] = _redirect("/login", "Not signed in")
        if asks:
            answers["200"] = _page(asks)
        return {"operationId": op_id, "summary": summary, "security": session, "parameters": parameters or [],
                "requestBody": {"required": True, "content": {FORM: {"schema": {"$ref": _REF.format(name=body)}}}},
                "responses": {**answers, **{str(s): _page(f"A page saying why: {refused[s]}") for s in (400, *errors, 403, 413)}}}

    def download(op_id: str, summary: str, media: str, *errors: int,
                 parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"operationId": op_id, "summary": summary, "security": session, "parameters": parameters or [],
                "description": "Personal data, exactly as the records hold it: township staff only, their "
                               "township's villages only; any other role gets 403.",
                "responses": {"200": {"description": "The file, as an attachment",
                                      "content": {media: {"schema": {"type": "string"}}}},
                              **_errors(*errors, 401, 403)}}

    remove = form("wbRemove", "Take a resident who moved to another township or died out of the township's records",
                  "RemoveForm", 404, parameters=[record], asks="The record's page, asking to confirm (no `confirm=1`)")
    remove["responses"]["409"] = _page("The record's page asking to confirm again: the resident or her open needs "
                                       "changed since the confirm page was shown (`seen`); nothing was written")
    collection = {"name": "collection", "in": "query", "required": True, "description": "What to export",
                  "schema": {"type": "string", "enum": ["person", "need", "service"]}}
    return {
        "/staff/conflicts": {"get": page("wbConflicts", "Open conflicts, the competing values side by side")},
        "/staff/conflicts/resolve": {"post": form("wbResolve", "Keep one value of a conflict, or a typed one",
                                                  "ResolveForm", 404)},
        "/staff/records/{record}": {
            "get": page("wbRecord", "A record, its every change, and a form to correct it", 404,
                        parameters=[record]),
            "post": form("wbRecordEdit", "Correct a record's fields", "RecordForm", 404, parameters=[record]),
        },
        "/staff/records/{record}/escalate": {"post": form(
            "wbEscalate", "Escalate a need to the county (吹哨报到)", "EscalateForm", 404, parameters=[record])},
        "/staff/records/{record}/remove": {"post": remove},
        "/staff/people": {
            "get": page("wbPeople", "The township's residents, or those a search found", 400, parameters=[
                {"name": "s", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "The token of this session's search (`POST /staff/people`); a forgotten one "
                                "shows every resident, saying to search again"},
                {"name": "unit", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "A village of the township"}]),
            "post": form("wbSearch", "Search the residents: the node keeps the query for 30 minutes and sends the "
                         "browser to `/staff/people?s={token}`, so the query never is in an address", "SearchForm"),
        },
        "/staff/duplicates": {"get": page("wbDuplicates", "Residents that may be the same person", parameters=[
            {"name": "dismissed", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "`1`: the pairs staff marked as two people instead"}])},
        "/staff/duplicates/merge": {"post": form("wbMerge", "Merge a duplicate resident into another",
                                                 "MergeForm", 404)},
        "/staff/duplicates/dismiss": {"post": form("wbDismiss", "Mark a suspected pair as two people",
                                                   "PairForm", 404)},
        "/staff/duplicates/restore": {"post": form("wbRestore", "Put a pair marked as two people back on "
                                                   "the list", "PairForm", 404)},
        "/staff/duplicates/finish": {"post": form("wbFinishMerge", "Finish a merge an older version left half "
                                                  "done: delete the resident merged into a current one",
                                                  "FinishMergeForm", 404)},
        "/staff/duplicates/separate": {"post": form("wbKeepSeparate", "Keep a resident an older version left "
                                                    "half-merged, whose merge leads nowhere, as one of her own: "
                                                    "clear her merged_into", "FinishMergeForm", 404)},
        "/staff/needs": {"get": page("wbNeeds", "The needs board, by status and village", 400, parameters=[
            {"name": "status", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "A need status, `open` or `overdue`"},
            {"name": "unit", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "A village of the township"}])},
        "/staff/needs/{record}": {"post": form("wbNeed", "Assign a need, set its due date or status", "NeedForm",
                                               404, parameters=[record])},
        "/staff/tasks": {"get": page("wbTasks", "The tasks, each with its villages' progress")},
        "/staff/tasks/{task}/report": {"post": form("wbTaskReport", "Set a village's progress on a task",
                                                    "TaskReportForm", 404, parameters=[
            {"name": "task", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/staff/devices": {"get": page("wbDevices", "The township's tablets, and enrolling a new one")},
        "/staff/devices/enrol": {"post": form("wbEnrol", "Make a one-time enrolment code; to the page that shows "
                                              "it, `/staff/devices/enrol/{key}`", "EnrolForm")},
        "/staff/devices/enrol/{key}": {"get": {
            "operationId": "wbEnrolled", "summary": "An enrolment code just made and its QR code, shown once",
            "security": session, "parameters": [{"name": "key", "in": "path", "required": True,
                                                 "schema": {"type": "string"}}],
            "responses": {"200": _page("The code and its QR code, to the session that made it, once"),
                          "303": {"description": "Shown already, or not this session's: to `/staff/devices`, "
                                                 "which says so (not signed in: to `/login`)",
                                  "headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
                          "403": _page(f"A page saying why: {refused[403]}")}}},
        "/staff/devices/{device}/revoke": {
            "get": page("wbRevokeConfirm", "Confirm revoking a tablet, with or without wiping it", 404,
                        parameters=[device]),
            "post": form("wbRevoke", "Revoke a tablet", "RevokeForm", 404, parameters=[device]),
        },
        "/staff/export": {"get": page("wbExport", "The export page")},
        "/staff/export.csv": {"get": download("exportCsv", "One collection as CSV (UTF-8 with a BOM)", "text/csv",
                                              400, parameters=[collection])},
        "/staff/export.xlsx": {"get": download(
            "exportXlsx", "Residents, needs and services as sheets of one XLSX workbook",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")},
    }


def _rollup_paths() -> dict[str, Any]:
    "The snapshot endpoint and the roll-up pages (``server.rollup_web``)"
    session: list[dict[str, list[str]]] = [{"staffSession": []}]
    snap = {"$ref": _REF.format(name="Snapshot")}
    binary = {"type": "string", "format": "binary"}
    return {
        "/api/snapshot": {"get": {
            "operationId": "snapshot",
            "summary": "This node's aggregated snapshot: only the parts the caller lacks",
            "description": "For the node above, with the link token this node issued it (a device whose tier "
                           "is above this node's and whose unit contains it), or for this node's signed-in "
                           "staff. No personal field; small cells are null. MessagePack unless `Accept` names "
                           "JSON; gzip when `Accept-Encoding` allows.",
            "security": [{"bearerAuth": []}, *session],
            "parameters": [{"name": "have", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "The parts the caller holds, `name:hash` pairs separated by commas; "
                                           "the answer leaves out those unchanged"},
                           {"name": "with", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "The optional sections the caller takes, separated by commas "
                                           "(`tasks`: villages' progress on tasks); others are left out"}],
            "responses": {
                "200": {"description": "The snapshot: every part's hash in `manifest`, the changed ones in "
                                       "`parts`",
                        "content": {MSGPACK: {"schema": snap}, JSON: {"schema": snap}}},
                **_errors(400, 401),
                "403": {"description": "The token is not a link device of the node above (`not_an_upper_node`,"
                                       " `out_of_scope`) or was revoked (`device_revoked`).",
                        "content": {JSON: {"schema": {"$ref": _REF.format(name="ErrorBody")}}}},
            },
        }},
        "/rollup": {"get": {
            "operationId": "rollupPage", "summary": "The roll-up page (zh-CN) with charts", "security": session,
            "responses": {"200": _page("Needs, services, resolution times and each child's freshness"),
                          "303": _redirect("/login", "Not signed in")},
        }},
        "/rollup.csv": {"get": {
            "operationId": "rollupCsv", "summary": "The roll-up's tables as CSV (UTF-8 with BOM)",
            "security": session,
            "responses": {"200": {"description": "The tables, one after another",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}}, **_errors(401)},
        }},
        "/rollup.xlsx": {"get": {
            "operationId": "rollupXlsx", "summary": "The roll-up as an Excel workbook, a sheet per table",
            "security": session,
            "responses": {"200": {"description": "The workbook", "content": {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {"schema": binary}}},
                **_errors(401)},
        }},
    }


def openapi_route() -> Route:
    "``GET /openapi.json``: the document, built and rendered once"
    body = msgspec.json.encode(openapi_spec())

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type=JSON)

    return Route(OPENAPI_PATH, openapi_json, methods=["GET"])
