"""The built-in collections, declared once: each field's type, merge kind, and whether it needs review.

A field's ``type`` is a msgspec type; values are checked with ``msgspec.convert`` (strict), so an error
names what is wrong. The types are what a node takes from any tablet, of any version: a value an older
app let through (a full-width ID number, a date not on the calendar) must not strand the ops queued
behind it. What a person types now is checked further, by ``sync.checks``.
``merge`` is ``"register"`` (multi-value register, winner by tier, clock, op id) or ``"set"`` (add-wins
observed-remove set of elements of ``type``). A ``review`` field keeps a conflict open while its live
ops hold different values.

Fields are never removed: a field dropped from use gets ``retired`` set to the schema version that
retired it, so ops queued on tablets running an older schema are still accepted and kept. Collections
are only ever added (schema 2 added the reference collections and ``escalation``, schema 3
``task_report``); a replica running an older schema stores ops of a collection it does not know and merges
them like any other.

Two kinds of collection: **records** (``person``, ``need``, ``service``), entered on tablets, personal,
kept in their village; and **reference data** (``unit``, ``catalogue``, ``notice``, ``task``), authored at
a township, county or city node and flowing down to every tablet below, where it is read-only. A
reference record's ``unit`` is the unit that authored it (a ``unit`` record's is its own ``code``).
``escalation`` (吹哨报到) is a need passed up from the township to the county: no personal field, its
``unit`` the need's village, written by township and county staff and read on the village's tablets.
``task_report`` is one village's progress on a task: a village record (no personal field) written on the
village's tablets and by its township, kept at the township; counties and cities see only its counts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection as Some
from dataclasses import dataclass, field as dc_field
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import InvalidValue, UnknownCollection, UnknownField
from .types import ADD, DELETED, KIND_NAMES, REMOVE, SET

SCHEMA_VERSION = 3

GROUPS = ("老年人", "儿童", "困难群众", "残疾人", "独居", "留守")
#: 一老一小一困一残: the four special groups, in the order reports show them.
SPECIAL_GROUPS = GROUPS[:4]
CATEGORIES = (
    "养老服务", "儿童关爱", "困难救助", "助残服务", "医疗健康",
    "家政服务", "生活物资", "心理支持", "就业帮扶", "其他",
)
STATUSES = ("待处理", "已分派", "服务中", "已解决", "已关闭", "已取消")
#: A need in one of these is finished: never overdue, never escalated.
NEED_CLOSED = STATUSES[3:]
#: Allowed status moves when a worker edits a need (a merge never refuses a concurrent move).
NEED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "待处理": ("已分派", "服务中", "已取消"),
    "已分派": ("服务中", "待处理", "已取消"),
    "服务中": ("已解决", "已分派", "已取消"),
    "已解决": ("已关闭", "服务中"),
    "已关闭": ("服务中",),
    "已取消": ("待处理",),
}
URGENCIES = ("一般", "较急", "紧急")
PROVIDER_KINDS = ("社工", "志愿者", "社会组织", "企业", "村干部")
GENDERS = ("男", "女")
TIERS = ("village", "township", "county", "city")
CATALOGUE_KINDS = ("need_category", "service_type")
TASK_STATUSES = ("待办", "进行中", "已完成", "已取消")
#: A village's progress on a task (``task_report``); a village without a report has not started.
REPORT_STATUSES = ("未开始", "进行中", "已完成")
#: 吹哨报到: 已上报 (escalated) → 已受理 (accepted) → 已办结 (resolved), or 已退回 (returned by the county),
#: or 已撤回 (withdrawn by the township: the need was cancelled, its resident removed, say).
ESCALATION_STATUSES = ("已上报", "已受理", "已办结", "已退回", "已撤回")
#: The escalations still open: the county has yet to resolve or return them, the township to withdraw them.
ESCALATION_OPEN = ESCALATION_STATUSES[:2]

Group = Literal["老年人", "儿童", "困难群众", "残疾人", "独居", "留守"]
Category = Literal[
    "养老服务", "儿童关爱", "困难救助", "助残服务", "医疗健康",
    "家政服务", "生活物资", "心理支持", "就业帮扶", "其他",
]
Status = Literal["待处理", "已分派", "服务中", "已解决", "已关闭", "已取消"]
Urgency = Literal["一般", "较急", "紧急"]
ProviderKind = Literal["社工", "志愿者", "社会组织", "企业", "村干部"]
Gender = Literal["男", "女"]
Tier = Literal["village", "township", "county", "city"]
CatalogueKind = Literal["need_category", "service_type"]
TaskStatus = Literal["待办", "进行中", "已完成", "已取消"]
ReportStatus = Literal["未开始", "进行中", "已完成"]
EscalationStatus = Literal["已上报", "已受理", "已办结", "已退回", "已撤回"]

Text = Annotated[str, Meta(max_length=2000)]
Name = Annotated[str, Meta(min_length=1, max_length=60)]
Date = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]
DateTime = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")]
#: A resident ID number (居民身份证号): 17 digits and a check digit or X
ID_NUMBER = r"\d{17}[\dX]"
IdNumber = Annotated[str, Meta(pattern=f"^{ID_NUMBER}$")]
Phone = Annotated[str, Meta(pattern=r"^[0-9+\- ]{5,20}$")]
UnitCode = Annotated[str, Meta(pattern=r"^[0-9]{12}$")]
#: A record's id, as ops name it (a UUID, lower-case hex)
RECORD_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
RecordRef = Annotated[str, Meta(pattern=f"^{RECORD_ID}$")]
Count = Annotated[int, Meta(ge=0, le=100_000)]
Title = Annotated[str, Meta(min_length=1, max_length=200)]
#: The longest note of a task report: a line, not a case file
NOTE_MAX = 200
Note = Annotated[str, Meta(max_length=NOTE_MAX)]
LongText = Annotated[str, Meta(max_length=20_000)]


@dataclass(frozen=True)
class Field:
    name: str
    type: Any
    label: str
    merge: Literal["register", "set"] = "register"
    review: bool = False
    required: bool = False
    personal: bool = False
    since: int = 1
    retired: int | None = None
    #: a catalogue (``need_category``, ``service_type``) whose codes are valid values besides ``type``'s
    catalogue: str | None = None


@dataclass(frozen=True)
class Collection:
    name: str
    label: str
    fields: dict[str, Field]
    #: The field holding the village (or other) unit a record belongs to, for scope.
    unit_field: str = "unit"

    def field(self, name: str) -> Field | None:
        return self.fields.get(name)


def _collection(name: str, label: str, *fields: Field, unit_field: str = "unit") -> Collection:
    deleted = Field(DELETED, bool, "已删除", review=True)
    return Collection(name, label, {f.name: f for f in (*fields, deleted)}, unit_field)


PERSON = _collection(
    "person", "居民",
    Field("name", Name, "姓名", review=True, required=True, personal=True),
    Field("gender", Gender, "性别", review=True),
    Field("birth_date", Date, "出生日期", review=True),
    Field("id_number", IdNumber, "身份证号", review=True, personal=True),
    Field("phone", Phone, "电话", review=True, personal=True),
    Field("address", Text, "住址", review=True, personal=True),
    Field("unit", UnitCode, "所属村/社区", review=True, required=True),
    Field("groups", Group, "人群类别", merge="set"),
    Field("notes", Text, "备注", personal=True),
    Field("merged_into", RecordRef, "合并到", review=True),
)
NEED = _collection(
    "need", "需求",
    Field("person", RecordRef, "居民", required=True),
    Field("unit", UnitCode, "所属村/社区", review=True, required=True),
    Field("category", Category, "需求类别", review=True, required=True, catalogue="need_category"),
    Field("description", Text, "需求描述", personal=True),
    Field("urgency", Urgency, "紧急程度", review=True),
    Field("status", Status, "状态", review=True),
    Field("assignee", Text, "负责人", review=True),
    Field("due_date", Date, "截止日期", review=True),
)
SERVICE = _collection(
    "service", "服务记录",
    Field("need", RecordRef, "对应需求"),
    Field("person", RecordRef, "居民", required=True),
    Field("unit", UnitCode, "所属村/社区", review=True, required=True),
    Field("service_type", Category, "服务类型", review=True, required=True, catalogue="service_type"),
    Field("provider_kind", ProviderKind, "服务主体类型", review=True),
    Field("provider_name", Text, "服务主体名称"),
    Field("served_at", DateTime, "服务时间", review=True, required=True),
    Field("minutes", Count, "服务时长(分钟)", review=True),
    Field("people_served", Count, "服务人次", review=True),
    Field("notes", Text, "备注", personal=True),
)
UNIT = _collection(
    "unit", "单位",
    Field("code", UnitCode, "统计用区划代码", required=True),
    Field("name", Name, "名称", review=True, required=True),
    Field("tier", Tier, "层级", required=True),
    Field("parent", UnitCode, "上级单位"),
    unit_field="code",
)

# -- reference data (schema 2): authored at a township, county or city node, read-only on tablets.
# No field is under review: concurrent edits at two tiers resolve by tier precedence (the higher tier's
# value shows), and nobody below could close a conflict on a tablet that may only read.
CATALOGUE = _collection(
    "catalogue", "目录",
    Field("unit", UnitCode, "发布单位", required=True, since=2),
    Field("kind", CatalogueKind, "目录类别", required=True, since=2),
    Field("code", Name, "代码", required=True, since=2),
    Field("name", Name, "名称", required=True, since=2),
    Field("order", Count, "排序", since=2),
    Field("retired", bool, "已停用", since=2),
)
NOTICE = _collection(
    "notice", "通知",
    Field("unit", UnitCode, "发布单位", required=True, since=2),
    Field("title", Title, "标题", required=True, since=2),
    Field("body", LongText, "正文", since=2),
    Field("published_at", DateTime, "发布时间", since=2),
)
TASK = _collection(
    "task", "任务",
    Field("unit", UnitCode, "发布单位", required=True, since=2),
    Field("title", Title, "标题", required=True, since=2),
    Field("description", LongText, "任务说明", since=2),
    Field("due_date", Date, "截止日期", since=2),
    Field("status", TaskStatus, "状态", since=2),
)
# -- escalations (schema 2): a need the township cannot meet, passed up without any personal field.
ESCALATION = _collection(
    "escalation", "吹哨报到",
    Field("unit", UnitCode, "所属村/社区", required=True, since=2),
    Field("need", RecordRef, "对应需求", required=True, since=2),
    Field("category", Name, "需求类别", required=True, since=2),
    Field("urgency", Urgency, "紧急程度", since=2),
    Field("summary", Text, "情况摘要", required=True, since=2),
    Field("status", EscalationStatus, "状态", since=2),
    Field("escalated_at", DateTime, "上报时间", since=2),
    Field("department", Text, "承办部门", since=2),
    Field("answer", Text, "办理答复", since=2),
    Field("answered_at", DateTime, "答复时间", since=2),
)
# -- task reports (schema 3): one village's progress on a task, set on its tablets or by its township.
# Its id is derived from the task and the village (``sync.reference.task_report_id``), so there is one per
# task and village; concurrent writes resolve by tier, then clock, with no conflict to close.
TASK_REPORT = _collection(
    "task_report", "任务进度",
    Field("unit", UnitCode, "所属村/社区", required=True, since=3),
    Field("task", RecordRef, "任务", required=True, since=3),
    Field("status", ReportStatus, "进度", required=True, since=3),
    Field("note", Note, "说明", since=3),
)

#: Collections tablets enter; personal, kept in their village, never passed above the township.
RECORD_COLLECTIONS = ("person", "need", "service")
#: Collections authored at a node and read below it.
REFERENCE_COLLECTIONS = ("unit", "catalogue", "notice", "task")
#: What links between nodes carry: reference data down, escalations up and their answers down.
LINK_COLLECTIONS = (*REFERENCE_COLLECTIONS, "escalation")

_KIND_FOR_MERGE = {"register": (SET,), "set": (ADD, REMOVE)}


@dataclass(frozen=True)
class Schema:
    version: int
    collections: dict[str, Collection] = dc_field(default_factory=dict)

    def collection(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            known = ", ".join(sorted(self.collections))
            raise UnknownCollection(
                f"unknown collection {name!r}; this node knows: {known}", details={"collection": name}
            ) from None

    def field(self, coll: str, name: str) -> Field:
        f = self.collection(coll).field(name)
        if f is None or f.since > self.version:
            raise UnknownField(
                f"unknown field {name!r} in collection {coll!r}", details={"collection": coll, "field": name}
            )
        return f

    def is_set(self, coll: str, name: str) -> bool:
        c = self.collections.get(coll)
        f = c.field(name) if c else None
        return f is not None and f.merge == "set"

    def needs_review(self, coll: str, name: str) -> bool:
        if name == DELETED:
            return True
        c = self.collections.get(coll)
        f = c.field(name) if c else None
        return f is not None and f.review

    def validate(self, coll: str, name: str, kind: int, value: Any,
                 codes: Callable[[str], Some[str]] | None = None) -> Any:
        """Check one op's field, kind and value; return the value converted to its field's type.

        Retired fields are still accepted: tablets on an older schema may have ops queued for them.
        A field backed by a catalogue also takes any code ``codes(catalogue)`` gives (the replica's synced
        catalogue entries, retired ones too, so queued ops stay valid); it is asked only when the built-in
        type refuses the value.
        """
        f = self.field(coll, name)
        if kind not in _KIND_FOR_MERGE[f.merge]:
            raise InvalidValue(
                f"{coll}.{name} is a {f.merge} field and takes "
                + " or ".join(KIND_NAMES[k] for k in _KIND_FOR_MERGE[f.merge])
                + f" ops, not {KIND_NAMES.get(kind, kind)!r}",
                details={"collection": coll, "field": name, "kind": kind},
            )
        if value is None and f.merge == "register" and not f.required:
            return None
        try:
            return msgspec.convert(value, f.type, strict=True)
        except msgspec.ValidationError as e:
            if f.catalogue and codes is not None and isinstance(value, str) and value in codes(f.catalogue):
                return value
            raise InvalidValue(
                f"invalid value for {coll}.{name} ({f.label}): {e}",
                details={"collection": coll, "field": name},
            ) from None

    def validate_many(self, coll: str, name: str, kind: int, values: list[Any],
                      codes: Callable[[str], Some[str]] | None = None) -> None:
        "Check many values of one field and kind, as ``validate`` checks one: refuses the first bad one"
        f = self.field(coll, name)
        if kind in _KIND_FOR_MERGE[f.merge] and None not in values:
            many = _LIST_OF.get(f.type)
            if many is None:
                many = _LIST_OF[f.type] = list[f.type]  # type: ignore[name-defined]
            try:
                msgspec.convert(values, many, strict=True)
                return
            except msgspec.ValidationError:
                pass  # find the bad one, or accept catalogue codes, one value at a time
        for v in values:
            self.validate(coll, name, kind, v, codes)


_LIST_OF: dict[Any, Any] = {}


SCHEMA = Schema(SCHEMA_VERSION, {c.name: c for c in (PERSON, NEED, SERVICE, UNIT, CATALOGUE, NOTICE, TASK,
                                                     ESCALATION, TASK_REPORT)})



def mask_id_number(id_number: str | None) -> str:
    "An ID number as pages show it: first four and last four characters only"
    if not id_number:
        return ""
    if len(id_number) <= 8:
        return "*" * len(id_number)
    return id_number[:4] + "*" * (len(id_number) - 8) + id_number[-4:]


def mask_phone(phone: str | None) -> str:
    """A phone as pages show it, separators kept: a mobile (11 digits or more) keeps its first three and
    last four digits; a landline (7 to 10) keeps at most its last four and never more than half; anything
    shorter is all hidden"""
    if not phone:
        return ""
    text = phone.strip()
    n = sum(c.isdigit() for c in text)
    head, tail = (3, 4) if n >= 11 else (0, min(4, n // 2) if n >= 7 else 0)
    out, i = [], 0
    for c in text:
        if c.isdigit():
            out.append(c if i < head or i >= n - tail else "*")
            i += 1
        else:
            out.append(c)
    return "".join(out)
