"""The OpenAPI description of the reference-data and escalation staff API (``server.reference``,
``server.escalations``), merged into the node's document by ``server.openapi.openapi_spec``."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sync.wire import JSON

from .openapi import _REF, FORM, _errors, _json, _page, _redirect
from .orders import CatalogueOrder, EscalationOrder, EscalationStep, NoticeOrder, TaskOrder


class EscalationCreated(msgspec.Struct):
    id: str
    status: str


class Escalation(msgspec.Struct):
    "An escalation (吹哨报到) as staff see it: no personal field"

    id: str
    unit: str
    need: str
    category: str
    summary: str
    status: str = "已上报"
    urgency: str | None = None
    escalated_at: str | None = None
    department: str | None = None
    answer: str | None = None
    answered_at: str | None = None


class EscalationForm(msgspec.Struct):
    csrf: str
    action: Literal["accept", "assign", "resolve", "return", "withdraw"]
    department: str = ""
    answer: str = ""


class ReferenceCreated(msgspec.Struct):
    id: str


class ReferenceData(msgspec.Struct):
    "Reference data as this node holds it: its own and what came from above"

    notices: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    need_categories: list[dict[str, Any]]
    service_types: list[dict[str, Any]]


FLOW_TYPES: list[Any] = [EscalationOrder, EscalationCreated, Escalation, EscalationStep, EscalationForm,
                         NoticeOrder, TaskOrder, CatalogueOrder, ReferenceCreated, ReferenceData]


def flow_paths() -> dict[str, Any]:
    session: list[dict[str, list[str]]] = [{"staffSession": []}]
    csrf = {"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
            "description": "The session's CSRF token, as the staff pages hold it"}

    def op(op_id: str, summary: str, body: str | None, status: int, answer: dict[str, Any], *errors: int,
           parameters: list[dict[str, Any]] | None = None, changes: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": session,
                               "parameters": [*(parameters or []), *([csrf] if changes else [])],
                               "responses": {str(status): answer, **_errors(*errors)}}
        if body is not None:  # a body over STAFF_MAX_BODY: 413 too_large
            out["responses"].update(_errors(413))
            out["requestBody"] = {"required": True, "content": {JSON: {"schema": {"$ref": _REF.format(name=body)}}}}
        return out

    escalations = {"description": "The escalations in the staff member's units, newest first",
                   "content": {JSON: {"schema": {"type": "array", "items": {"$ref": _REF.format(name="Escalation")}}}}}
    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/staff/escalations": {
            "get": op("staffEscalations", "Escalations in the staff member's units (township and county staff)",
                      None, 200, escalations, 401, 403, changes=False),
            "post": op("staffEscalate", "Township staff escalate a need to the county (吹哨报到)", "EscalationOrder",
                       201, _json("EscalationCreated", "The escalation, 已上报"), 400, 401, 403, 404),
        },
        "/api/staff/escalations/{id}/{action}": {"post": op(
            "staffEscalationStep", "County staff accept, assign, resolve or return an escalation; township staff withdraw it",
            "EscalationStep", 200, _json("Escalation", "The escalation after the step"), 400, 401, 403, 404,
            parameters=[ident, {"name": "action", "in": "path", "required": True,
                                "schema": {"enum": ["accept", "assign", "resolve", "return", "withdraw"]}}])},
        "/staff/escalations": {"get": {
            "operationId": "escalationsPage", "summary": "The escalations page (county staff act on it, township staff withdraw)",
            "security": session,
            "parameters": [{"name": "error", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": _page("The escalations in the staff member's units"),
                          "303": _redirect("/login", "Not signed in"),
                          "403": _page("A page saying why: an account that is neither township nor county staff")},
        }},
        "/staff/escalations/{id}": {"post": {
            "operationId": "escalationsPageStep", "summary": "A step from the escalations page's forms",
            "security": session, "parameters": [ident],
            "requestBody": {"required": True, "content": {FORM: {"schema": {"$ref": _REF.format(name="EscalationForm")}}}},
            "responses": {"303": {"description": "Done, or refused with the reason in `?error=`: back to the page; "
                                                 "not signed in: to /login",
                                  "headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
                          "400": _page("A page saying why: a form the page did not send"),
                          "403": _page("A page saying why: a stale form (页面已过期), or a step of another role "
                                       "(township staff withdraw, county staff do the rest)"),
                          "404": _page("A page saying why: no such escalation in the staff member's units")},
        }},
        "/api/staff/reference": {"get": op(
            "staffReference", "Notices, tasks and catalogues as this node holds them", None, 200,
            _json("ReferenceData", "The reference data"), 401, 403, changes=False)},
        "/api/staff/notices": {"post": op(
            "staffNotice", "Publish a notice to every tablet below this node (its own staff, scoped to its whole unit)", "NoticeOrder",
            201, _json("ReferenceCreated", "The notice"), 400, 401, 403)},
        "/api/staff/tasks": {"post": op(
            "staffTask", "Set a task for the units below this node (its own staff, scoped to its whole unit)", "TaskOrder",
            201, _json("ReferenceCreated", "The task"), 400, 401, 403)},
        "/api/staff/catalogue": {"post": op(
            "staffCatalogue", "Add or change a catalogue entry (its own staff, scoped to its whole unit)", "CatalogueOrder",
            200, _json("ReferenceCreated", "The entry"), 400, 401, 403)},
    }
