"""A newer schema (the current version + 1) for the upgrade tests, and a node launcher that runs on it.

The newer version adds a field (``person.wechat``), adds a collection (``household``) and retires a field
(``person.notes``: still declared, so ops queued on tablets running version 1 are accepted).

    newer()                      a copy of a schema one version newer (the tablets of the test use it)
    install()                    upgrade this process's ``sync.schema.SCHEMA`` in place (the node's)
    python tests/e2e/schema_v2.py serve ...    ``cunsync serve`` on the newer version (``NodeProcess(program=PROGRAM)``)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sync.schema import SCHEMA, Collection, Count, Field, RecordRef, Schema, Text, UnitCode  # noqa: E402
from sync.types import DELETED  # noqa: E402

#: The version this file upgrades to.
NEXT = SCHEMA.version + 1
#: How ``NodeProcess`` runs this file instead of ``cunsync``.
PROGRAM = (str(Path(__file__).resolve()),)


def _collections(schema: Schema) -> dict[str, Collection]:
    person = schema.collections["person"]
    fields = dict(person.fields)
    fields["notes"] = Field("notes", Text, "备注", personal=True, retired=NEXT)
    fields["wechat"] = Field("wechat", Text, "微信", personal=True, since=NEXT)
    household = Collection("household", "户", {f.name: f for f in (
        Field("head", RecordRef, "户主", required=True, since=NEXT),
        Field("unit", UnitCode, "所属村/社区", review=True, required=True, since=NEXT),
        Field("members", Count, "人口数", review=True, since=NEXT),
        Field(DELETED, bool, "已删除", review=True),
    )})
    return {**schema.collections, "person": Collection(person.name, person.label, fields, person.unit_field),
            "household": household}


def newer(schema: Schema = SCHEMA) -> Schema:
    "A copy of ``schema`` at version ``NEXT``; the original is left as it is"
    return Schema(NEXT, _collections(schema))


def install() -> None:
    "Upgrade this process's schema in place, so every module that imported ``SCHEMA`` sees version ``NEXT``"
    upgraded = _collections(SCHEMA)
    SCHEMA.collections.clear()
    SCHEMA.collections.update(upgraded)
    object.__setattr__(SCHEMA, "version", NEXT)  # a frozen dataclass: the one place that changes it


if __name__ == "__main__":
    install()
    from client.cli import cli

    cli()
