"""Errors raised by the engine and the node, each with an HTTP status and a machine-readable code.

    SyncError                       base: .code, .status, .message, .details
    ├── BadRequest (400)
    │   ├── MalformedBody           the body is not valid MessagePack / JSON or not the expected shape
    │   ├── UnknownCollection       no such collection in any schema version
    │   ├── UnknownField            no such field in the collection, in any schema version
    │   ├── InvalidValue            a value outside its type or catalogue
    │   └── ClockAhead              an op's clock is too far ahead of the receiver's
    ├── Unauthorized (401)
    ├── Forbidden (403)
    │   ├── OutOfScope              a unit or record outside the caller's scope
    │   ├── ForgedOp                an op that claims another device, tier or unit
    │   ├── EnrolmentMismatch       a code not made to re-attach this tablet, its worker, unit and tier
    │   ├── DeviceRevoked           the device's credential was revoked
    │   ├── ReadOnly                a collection the caller may read but not write (reference data on a tablet)
    │   └── CollectionForbidden     a collection the caller may neither read nor write (records over a link)
    ├── NotFound (404)
    ├── VersionMismatch (409)       the client speaks a protocol version this node does not
    ├── DeviceExists (409)          re-attaching under a device id the node knows
    ├── TooLarge (413)              body or batch over the limit
    ├── TooManyAttempts (429)       too many failed sign-ins or enrolment codes; wait
    ├── StorageFull (507)           the node's disk is full; retry later, nothing was written
    └── Unavailable (503)           the node cannot serve now: storage_read_only, its database cannot be written
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    "Base of every error cunsync raises on purpose"

    status = 500
    code = "internal"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        "The one error shape every endpoint uses"
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(SyncError):
    "The request is wrong; fix it and send it again"

    status = 400
    code = "bad_request"


class MalformedBody(BadRequest):
    "The body is not valid MessagePack or JSON, or not the expected shape"

    code = "malformed_body"


class UnknownCollection(BadRequest):
    "No such collection in any schema version this node knows"

    code = "unknown_collection"


class UnknownField(BadRequest):
    "No such field in the collection, in any schema version this node knows"

    code = "unknown_field"


class InvalidValue(BadRequest):
    "A value outside its field's type or catalogue"

    code = "invalid_value"


class ClockAhead(BadRequest):
    "An op's clock is too far ahead of the receiver's; correct the device clock and re-stamp"

    code = "clock_ahead"


class Unauthorized(SyncError):
    "No valid credential was presented"

    status = 401
    code = "unauthorized"


class Forbidden(SyncError):
    "The caller may not do this"

    status = 403
    code = "forbidden"


class OutOfScope(Forbidden):
    "A unit or record outside the caller's scope"

    code = "out_of_scope"


class ForgedOp(Forbidden):
    "An op that claims another device, tier or unit than the caller's"

    code = "forged_op"


class EnrolmentMismatch(Forbidden):
    """An enrolment code used other than as made: a re-attach code by another tablet or to enrol a new one, a
    new tablet's code to re-attach one, or one for another worker, unit or tier than the tablet's"""

    code = "enrolment_mismatch"


class DeviceRevoked(Forbidden):
    "The device's credential was revoked"

    code = "device_revoked"


class ReadOnly(Forbidden):
    "A collection the caller may read but not write: tablets read reference data and escalations"

    code = "read_only"


class CollectionForbidden(Forbidden):
    "A collection the caller may neither read nor write: a link from an upper node never carries records"

    code = "collection_forbidden"


class NotFound(SyncError):
    "No such thing"

    status = 404
    code = "not_found"


class VersionMismatch(SyncError):
    "The client speaks a protocol version this node does not"

    status = 409
    code = "version_mismatch"


class DeviceExists(SyncError):
    "A tablet re-attaching under a device id the node knows: it never hands out a second token for a device"

    status = 409
    code = "device_exists"


class TooLarge(SyncError):
    "The body or the batch is over the node's limit"

    status = 413
    code = "too_large"


class TooManyAttempts(SyncError):
    "Too many failed attempts from this client; wait before trying again"

    status = 429
    code = "too_many_attempts"


class StorageFull(SyncError):
    "The node's disk is full; nothing was written, retry later"

    status = 507
    code = "storage_full"


class Unavailable(SyncError):
    "The node cannot serve this now"

    status = 503
    code = "unavailable"
