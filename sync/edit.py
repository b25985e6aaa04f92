"""Local authoring: turn a worker's or staff member's edit into ops and apply them to the local store.

An ``Editor`` is one author on one device: it numbers that device's ops, stamps them with its clock,
names in ``pred`` the live ops the author saw, validates values against the schema, and applies the ops
to its store in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from . import checks
from .errors import InvalidValue, NotFound, OutOfScope
from .hlc import HLC
from .ops import Op, uuid7
from .schema import NEED_TRANSITIONS, Collection, Schema
from .store import Store
from .types import ADD, DELETED, REMOVE, SET, SURVIVES_DELETE, TIER_RANK

_key = msgspec.json.Encoder().encode


class Editor:
    def __init__(
        self,
        store: Store,
        *,
        device: str,
        user: str,
        unit: str,
        tier: str,
        clock: HLC | None = None,
    ) -> None:
        if tier not in TIER_RANK:
            raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIER_RANK)}")
        self.store = store
        self.schema: Schema = store.schema
        self.device = device
        self.user = user
        self.unit = unit
        self.tier = tier
        self.rank = TIER_RANK[tier]
        self.clock = clock or HLC()
        self.clock.last = max(self.clock.last, store.last_hlc())

    def _next_counter(self) -> int:
        row = self.store.conn.execute(
            "SELECT max_counter FROM sites WHERE device = ?", (self.device,)
        ).fetchone()
        return (row[0] if row else 0) + 1

    def _commit(self, ops: list[Op]) -> list[Op]:
        if ops:
            self.store.apply(ops)
        return ops

    def _build(self, specs: list[tuple[str, str, str, int, Any, tuple[tuple[str, int], ...]]]) -> list[Op]:
        counter = self._next_counter()
        out = []
        for i, (coll, record, name, kind, value, pred) in enumerate(specs):
            out.append(Op(
                self.device, counter + i, self.clock.now(), coll, record, name, kind, value, pred,
                self.user, self.unit, self.rank,
            ))
        return out

    def _require(self, record: str) -> str:
        rec = self.store.get(record)
        if rec is None:
            raise NotFound(f"no record {record}", details={"record": record})
        return rec.coll

    # -- the edits ------------------------------------------------------------------------------

    def create(self, coll: str, values: Mapping[str, Any], *, record: str | None = None) -> str:
        "Create a record; returns its new UUIDv7 id"
        col = self.schema.collection(coll)
        missing = [n for n, f in col.fields.items() if f.required and values.get(n) in (None, "", [])]
        if missing:
            labels = "、".join(col.fields[n].label for n in missing)
            raise InvalidValue(
                f"{coll} needs {', '.join(missing)} ({labels})", details={"missing": missing}
            )
        rid = record or uuid7()
        specs: list[tuple[str, str, str, int, Any, tuple[tuple[str, int], ...]]] = []
        for name, value in values.items():
            f = self.schema.field(coll, name)
            if f.merge == "set":
                for elem in _as_list(value):
                    specs.append((coll, rid, name, ADD, self.schema.validate(coll, name, ADD, elem, self.store.catalogue_codes), ()))
            elif value is not None:
                specs.append((coll, rid, name, SET, self.schema.validate(coll, name, SET, value, self.store.catalogue_codes), ()))
        with self.store.transaction():
            self._commit(self._build(specs))
        return rid

    def update(self, record: str, values: Mapping[str, Any], *, check_transitions: bool = True) -> list[Op]:
        """Set fields. A set field given a list becomes adds and removes of the difference. Each op's
        ``pred`` names every live op of its field, so the write resolves any open conflict there."""
        with self.store.transaction():
            coll = self._require(record)
            state = self.store.state(record)
            specs: list[tuple[str, str, str, int, Any, tuple[tuple[str, int], ...]]] = []
            for name, value in values.items():
                f = self.schema.field(coll, name)
                live = state.get(name, [])
                if f.merge == "set":
                    want = {_key(v): v for v in (self.schema.validate(coll, name, ADD, e) for e in _as_list(value))}
                    have: dict[bytes, list[tuple[str, int]]] = {}
                    for e in live:
                        if e.kind == ADD:
                            have.setdefault(_key(e.value), []).append((e.device, e.counter))
                    for k, v in want.items():
                        if k not in have:
                            specs.append((coll, record, name, ADD, v, ()))
                    for k, ids in have.items():
                        if k not in want:
                            specs.append((coll, record, name, REMOVE, _json_value(k), tuple(sorted(ids))))
                    continue
                value = self.schema.validate(coll, name, SET, value, self.store.catalogue_codes)
                if check_transitions and coll == "need" and name == "status":
                    current = max(live, key=lambda e: e.key()).value if live else None
                    if current is not None and value != current and value not in NEED_TRANSITIONS.get(current, ()):
                        allowed = "、".join(NEED_TRANSITIONS.get(current, ()))
                        raise InvalidValue(
                            f"a need cannot go from {current} to {value}; from {current} it may go to {allowed}",
                            details={"from": current, "to": value},
                        )
                pred = tuple(sorted((e.device, e.counter) for e in live))
                specs.append((coll, record, name, SET, value, pred))
            return self._commit(self._build(specs))

    def resolve(self, record: str, field: str, value: Any) -> list[Op]:
        "Close a conflict: write a value whose pred names every live op of the field"
        if field == DELETED:
            return self.delete(record) if value else self.restore(record)
        return self.update(record, {field: value}, check_transitions=False)

    def add(self, record: str, field: str, elem: Any) -> list[Op]:
        with self.store.transaction():
            coll = self._require(record)
            elem = self.schema.validate(coll, field, ADD, elem)
            return self._commit(self._build([(coll, record, field, ADD, elem, ())]))

    def remove(self, record: str, field: str, elem: Any) -> list[Op]:
        with self.store.transaction():
            coll = self._require(record)
            elem = self.schema.validate(coll, field, REMOVE, elem)
            k = _key(elem)
            ids = tuple(sorted(
                (e.device, e.counter) for e in self.store.state(record).get(field, [])
                if e.kind == ADD and _key(e.value) == k
            ))
            if not ids:
                return []
            return self._commit(self._build([(coll, record, field, REMOVE, elem, ids)]))

    def delete(self, record: str) -> list[Op]:
        """Delete a record. Its pred names every live op of the record, so an edit made concurrently
        elsewhere stays live and shows as a conflict on ``_deleted`` instead of being lost. The unit is
        re-asserted by a second op instead: a deleted record stays in its village (and in the scope of
        its tablets), and a concurrent move shows as a conflict on the unit."""
        with self.store.transaction():
            coll = self._require(record)
            keep = self.schema.collections[coll].unit_field if coll in self.schema.collections else "unit"
            st = self.store.state(record)
            ids = tuple(sorted((e.device, e.counter) for n, es in st.items()
                               if n != keep and n not in SURVIVES_DELETE for e in es))
            specs: list[tuple[str, str, str, int, Any, tuple[tuple[str, int], ...]]] = [
                (coll, record, DELETED, SET, True, ids)
            ]
            units = [e for e in st.get(keep, []) if e.kind == SET]
            if units:
                # re-assert the unit the deleter saw: a concurrent move then conflicts with it
                unit = max(units, key=lambda e: e.key()).value
                specs.append((coll, record, keep, SET, unit, tuple(sorted((e.device, e.counter) for e in units))))
            return self._commit(self._build(specs))

    def merge(self, keep: str, drop: str, *, within: tuple[str, str] | None = None) -> list[Op]:
        """Merge a duplicate resident into another: every need and service of ``drop`` moves to ``keep``
        (and to ``keep``'s village, so that its tablets have them), ``keep`` takes what it lacks of
        ``drop``'s fields (``merge_fill``), ``drop`` records where it went (``merged_into``) and is
        deleted. Both histories stay in the op log, and ``resolve_id`` follows the redirect for ops that
        still name the old id. ``within``: the merging staff member's scope (a range of unit codes); a
        need or service to move that lies outside it refuses the merge. The returned ops that name
        ``keep`` are the fields it was filled in."""
        if keep == drop:
            raise InvalidValue("a resident cannot be merged into itself")
        with self.store.transaction():
            data: dict[str, dict[str, Any]] = {}
            for rid in (keep, drop):
                if self._require(rid) != "person":
                    raise InvalidValue(f"{rid} is not a resident; only residents are merged")
                rec = self.store.get(rid)
                if rec is None or rec.deleted or rec.merged_into:
                    raise InvalidValue(f"resident {rid} is deleted or already merged into another; merge "
                                       "residents that are both current", details={"record": rid})
                data[rid] = rec.data
            moving = [rec for coll in ("need", "service")
                      for rec in self.store.records(coll, include_deleted=True, naming=("person", drop))]
            outside = sorted({r.unit or "" for r in moving if within and not within[0] <= (r.unit or "") <= within[1]})
            if outside:
                raise OutOfScope(f"resident {drop} has needs or services in {', '.join(outside)}, outside the "
                                 "scope of whoever merges; staff for the whole township can merge them",
                                 details={"record": drop, "units": outside})
            ops = self.update(keep, merge_fill(self.schema.collection("person"), data[keep], data[drop]))
            for rec in moving:
                ops += self.move_to(rec.id, keep)
            ops += self.update(drop, {"merged_into": keep})
            ops += self.delete(drop)
            return ops

    def move_to(self, record: str, person: str) -> list[Op]:
        """Make a need or service one of ``person``'s, in that resident's village; a need's escalations
        (吹哨报到) go with it"""
        values: dict[str, Any] = {"person": person}
        home = self.store.get(person)
        rec = self.store.get(record)
        ops: list[Op] = []
        if home is not None and home.unit and rec is not None and rec.unit != home.unit:
            values[self.schema.collection(rec.coll).unit_field] = home.unit
            if rec.coll == "need":
                for esc in self.store.records("escalation", include_deleted=True, naming=("need", record)):
                    ops += self.update(esc.id, {"unit": home.unit})
        return self.update(record, values) + ops

    def restore(self, record: str) -> list[Op]:
        """Undo a delete: the record comes back with the values the delete had superseded, except
        where a field has a live value of its own. A resident merged into another is not restored: its
        ``merged_into`` survives the delete, so it would come back live yet still merged away, on no list;
        a tablet's late edit of it is kept by confirming the delete and writing it on the kept resident."""
        with self.store.transaction():
            coll = self._require(record)
            rec = self.store.get(record)
            kept = rec.merged_into if rec is not None else None
            if kept:
                raise InvalidValue(f"resident {record} was merged into {kept}: confirm its delete instead of "
                                   f"restoring it, and write what its late edits say on {kept}",
                                   details={"record": record, "merged_into": kept})
            state = self.store.state(record)
            dels = state.get(DELETED, [])
            specs: list[tuple[str, str, str, int, Any, tuple[tuple[str, int], ...]]] = [
                (coll, record, DELETED, SET, False, tuple(sorted((e.device, e.counter) for e in dels)))
            ]
            ops = {o.id: o for o in self.store.record_ops(record)}
            # what the delete superseded: per register field its winner, per set field its elements
            back: dict[tuple[str, bytes], Op] = {}
            for d in dels:
                for pid in ops[(d.device, d.counter)].pred:
                    old = ops.get(pid)
                    if old is None or old.field == DELETED or old.kind == REMOVE:
                        continue
                    mark = (old.field, _key(old.value) if old.kind == ADD else b"")
                    best = back.get(mark)
                    if best is None or _rank(old) > _rank(best):
                        back[mark] = old
            for (name, elem), old in sorted(back.items()):
                live = state.get(name, [])
                if any(e.kind == old.kind and (old.kind == SET or _key(e.value) == elem) for e in live):
                    continue  # a live value of its own: the concurrent edit stands
                specs.append((coll, record, name, old.kind, old.value, ()))
            return self._commit(self._build(specs))


def _rank(op: Op) -> tuple[int, int, str, int]:
    return (op.tier, op.hlc, op.site, op.counter)


def merge_fill(col: Collection, keep: Mapping[str, Any], drop: Mapping[str, Any]) -> dict[str, Any]:
    """What a merge writes on the kept record from the dropped one: only what cannot silently bury an
    edit of the kept record made concurrently elsewhere (a tablet offline). Each set field (a resident's
    groups) as the union of both: add-wins, a concurrent add survives. Each field marked ``review`` that
    the kept record lacks, with the dropped one's value: a concurrent edit then leaves an open conflict.
    Other fields (notes) are not filled: the merge's higher tier would hide a concurrent edit without a
    conflict; the dropped record keeps them, and its history stays reachable from the kept one. A value the
    kept record has is never overwritten, a birth date or gender that contradicts its ID number is not
    taken, and its unit and the merge's own fields are not touched."""
    out: dict[str, Any] = {}
    for name, f in col.fields.items():
        theirs, mine = drop.get(name), keep.get(name)
        if name in (col.unit_field, "merged_into") or f.retired is not None or theirs in (None, "", []):
            continue
        if f.merge == "set":
            extra = [e for e in _as_list(theirs) if e not in _as_list(mine)]
            if extra:
                out[name] = [*_as_list(mine), *extra]
        elif f.review and mine in (None, ""):
            out[name] = theirs
    idn = keep.get("id_number") or out.get("id_number")
    facts = checks.id_number_facts(checks.typed_key("id_number", idn)) if idn else None
    for name, stated in zip(("birth_date", "gender"), facts or ()):
        if name in out and out[name] != stated:
            del out[name]
        elif "id_number" in out and keep.get(name) not in (None, "", stated):
            del out["id_number"]  # the dropped record's ID number contradicts what the kept one says
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _json_value(k: bytes) -> Any:
    return msgspec.json.decode(k)
