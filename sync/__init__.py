"""cunsync's sync engine: schema, hybrid clocks, ops, the merge and the SQLite store, the wire format.

Shared unchanged by tablets and nodes. Imports neither ``server`` nor ``client``.
"""

from .edit import Editor
from .errors import (
    BadRequest,
    ClockAhead,
    CollectionForbidden,
    DeviceExists,
    DeviceRevoked,
    EnrolmentMismatch,
    ForgedOp,
    Forbidden,
    InvalidValue,
    MalformedBody,
    NotFound,
    OutOfScope,
    ReadOnly,
    StorageFull,
    SyncError,
    TooLarge,
    TooManyAttempts,
    Unauthorized,
    Unavailable,
    UnknownCollection,
    UnknownField,
    VersionMismatch,
)
from .hlc import HLC
from .ops import Op, uuid7
from .schema import SCHEMA, SCHEMA_VERSION, Collection, Field, Schema
from .store import Applied, Change, Conflict, Entry, HighWater, LiveOp, Materialized, Record, Store, materialize
from .types import ADD, DELETED, REMOVE, SET, TIER_RANK
from .wire import PROTOCOL_VERSION, OpBatch, SyncRequest, SyncResponse, WireAuthor, WireOp, pack_ops, unpack_ops

__version__ = "0.1.0"

__all__ = [
    "ADD",
    "Applied",
    "BadRequest",
    "Change",
    "ClockAhead",
    "CollectionForbidden",
    "Collection",
    "Conflict",
    "DELETED",
    "DeviceExists",
    "DeviceRevoked",
    "Editor",
    "EnrolmentMismatch",
    "Entry",
    "Field",
    "Forbidden",
    "ForgedOp",
    "HighWater",
    "HLC",
    "InvalidValue",
    "LiveOp",
    "MalformedBody",
    "materialize",
    "Materialized",
    "NotFound",
    "Op",
    "OpBatch",
    "OutOfScope",
    "pack_ops",
    "PROTOCOL_VERSION",
    "ReadOnly",
    "Record",
    "REMOVE",
    "SCHEMA",
    "Schema",
    "SCHEMA_VERSION",
    "SET",
    "StorageFull",
    "Store",
    "SyncError",
    "SyncRequest",
    "SyncResponse",
    "TIER_RANK",
    "TooLarge",
    "TooManyAttempts",
    "Unauthorized",
    "Unavailable",
    "UnknownCollection",
    "UnknownField",
    "unpack_ops",
    "uuid7",
    "VersionMismatch",
    "WireAuthor",
    "WireOp",
]
