"""cunsync's sync engine: schema, hybrid clocks, ops, the merge and the SQLite store, the wire format.

Shared unchanged by tablets and nodes. Imports neither ``server`` nor ``client``.
"""

from .edit import Editor
from .errors import (
    BadRequest,
    ClockAhead,
    DeviceRevoked,
    ForgedOp,
    Forbidden,
    InvalidValue,
    MalformedBody,
    NotFound,
    OutOfScope,
    StorageFull,
    SyncError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnknownCollection,
    UnknownField,
    VersionMismatch,
)
from .hlc import HLC
from .ops import Op, uuid7
from .schema import SCHEMA, SCHEMA_VERSION, Collection, Field, Schema
from .store import Applied, Change, Conflict, Record, Store, materialize
from .types import ADD, DELETED, REMOVE, SET, TIER_RANK
from .wire import PROTOCOL_VERSION, OpBatch, SyncRequest, SyncResponse, pack_ops, unpack_ops

__version__ = "0.1.0"

__all__ = [
    "ADD",
    "Applied",
    "BadRequest",
    "Change",
    "ClockAhead",
    "Collection",
    "Conflict",
    "DELETED",
    "DeviceRevoked",
    "Editor",
    "Field",
    "Forbidden",
    "ForgedOp",
    "HLC",
    "InvalidValue",
    "MalformedBody",
    "NotFound",
    "Op",
    "OpBatch",
    "OutOfScope",
    "PROTOCOL_VERSION",
    "REMOVE",
    "Record",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SET",
    "Schema",
    "Store",
    "StorageFull",
    "SyncError",
    "SyncRequest",
    "SyncResponse",
    "TIER_RANK",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnknownCollection",
    "UnknownField",
    "VersionMismatch",
    "materialize",
    "pack_ops",
    "unpack_ops",
    "uuid7",
]
