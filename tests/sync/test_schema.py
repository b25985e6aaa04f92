"""Tests for sync.schema: the collections, value checks and masking of personal fields."""

from __future__ import annotations

from typing import Any

import pytest

from sync import SCHEMA, Collection, Field, InvalidValue, Op, Schema, Store, SyncError, UnknownCollection, UnknownField
from sync.schema import NEED_TRANSITIONS, STATUSES, mask_id_number, mask_phone
from sync.types import ADD, DELETED, REMOVE, SET

PERSON = "01890a5d-ac96-774b-bcce-b302099a8057"


@pytest.mark.parametrize(
    ("coll", "name", "kind", "value"),
    [
        ("person", "name", SET, "张三"),
        ("person", "gender", SET, "女"),
        ("person", "birth_date", SET, "1948-03-01"),
        ("person", "id_number", SET, "51090319480301123X"),
        ("person", "phone", SET, "138 0013 8000"),
        ("person", "unit", SET, "510903001001"),
        ("person", "groups", ADD, "老年人"),
        ("person", "groups", REMOVE, "独居"),
        ("person", "notes", SET, None),
        ("person", DELETED, SET, True),
        ("need", "person", SET, PERSON),
        ("need", "category", SET, "生活物资"),
        ("need", "status", SET, "待处理"),
        ("service", "served_at", SET, "2024-05-01T09:30"),
        ("service", "minutes", SET, 45),
        ("unit", "tier", SET, "township"),
    ],
)
def test_validate_accepts_good_values(coll: str, name: str, kind: int, value: Any) -> None:
    assert SCHEMA.validate(coll, name, kind, value) == value


@pytest.mark.parametrize(
    ("coll", "name", "kind", "value", "error", "words"),
    [
        ("person", "name", SET, 5, InvalidValue, ["person.name", "str"]),
        ("person", "name", SET, "", InvalidValue, ["person.name"]),
        ("person", "name", SET, None, InvalidValue, ["person.name"]),  # required
        ("need", "category", SET, "买菜", InvalidValue, ["need.category", "买菜"]),
        ("need", "status", SET, "done", InvalidValue, ["need.status"]),
        ("person", "id_number", SET, "51090319480301123", InvalidValue, ["person.id_number"]),
        ("person", "id_number", SET, "5109031948030112Xa", InvalidValue, ["person.id_number"]),
        ("person", "unit", SET, "510903", InvalidValue, ["person.unit"]),
        # a unit is picked from a list, never typed: full-width digits are no unit code
        ("person", "unit", SET, "５１０９０３００１００１", InvalidValue, ["person.unit"]),
        ("service", "minutes", SET, -1, InvalidValue, ["service.minutes"]),
        ("service", "minutes", SET, "45", InvalidValue, ["service.minutes"]),  # strict: no coercion
        ("person", "groups", SET, "老年人", InvalidValue, ["person.groups", "set field", "add or remove"]),
        ("person", "groups", ADD, "买菜", InvalidValue, ["person.groups"]),
        ("person", "name", ADD, "张三", InvalidValue, ["person.name", "register"]),
        ("person", "nickname", SET, "x", UnknownField, ["nickname", "person"]),
        ("resident", "name", SET, "x", UnknownCollection, ["resident", "person, service, task, task_report, unit"]),
    ],
)
def test_validate_refuses_bad_values_naming_the_field(
    coll: str, name: str, kind: int, value: Any, error: type[SyncError], words: list[str]
) -> None:
    with pytest.raises(error) as exc:
        SCHEMA.validate(coll, name, kind, value)
    for word in words:
        assert word in exc.value.message
    assert exc.value.status == 400
    assert exc.value.details["collection"] == coll


def test_invalid_value_passes_msgspecs_reason_through() -> None:
    with pytest.raises(InvalidValue, match=r"身份证号.*regex"):
        SCHEMA.validate("person", "id_number", SET, "123")


def test_retired_fields_still_validate_and_future_fields_do_not() -> None:
    fields = {
        "phone": Field("phone", str, "电话", retired=2),
        "wechat": Field("wechat", str, "微信", since=3),
    }
    schema = Schema(2, {"contact": Collection("contact", "联系方式", fields)})
    assert schema.validate("contact", "phone", SET, "13800138000") == "13800138000"
    with pytest.raises(UnknownField, match="wechat"):
        schema.validate("contact", "wechat", SET, "x")


def test_every_collection_has_a_deleted_register_under_review() -> None:
    for coll in SCHEMA.collections.values():
        f = coll.fields[DELETED]
        assert (f.type, f.merge, f.review) == (bool, "register", True)
        assert SCHEMA.needs_review(coll.name, DELETED)


def test_field_kinds() -> None:
    assert SCHEMA.is_set("person", "groups")
    assert not SCHEMA.is_set("person", "name")
    assert not SCHEMA.is_set("nowhere", "groups")
    assert SCHEMA.needs_review("person", "name")
    assert not SCHEMA.needs_review("person", "notes")
    assert SCHEMA.collection("unit").unit_field == "code"


def test_need_transitions_only_name_known_statuses() -> None:
    assert set(NEED_TRANSITIONS) == set(STATUSES)
    for status, targets in NEED_TRANSITIONS.items():
        assert status not in targets
        assert set(targets) <= set(STATUSES)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("51090319480301123X", "5109**********123X"),
        ("510903194803011234", "5109**********1234"),
        ("12345678", "********"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_id_number(raw: str | None, masked: str) -> None:
    assert mask_id_number(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("13800138000", "138****8000"),
        (" 13800138000 ", "138****8000"),
        ("123456", "******"),
        ("5821234", "****234"),  # a landline shows at most half its digits
        ("58212345", "****2345"),
        ("582-1234", "***-*234"),
        ("0825-5821234", "082*-***1234"),
        ("+86 13800138000", "+86 1******8000"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_phone(raw: str | None, masked: str) -> None:
    assert mask_phone(raw) == masked


def test_a_catalogue_backed_field_also_takes_its_catalogues_codes() -> None:
    synced = {"need_category": {"防汛救灾"}, "service_type": {"上门探访"}}

    def codes(kind: str) -> set[str]:
        return synced[kind]

    assert SCHEMA.validate("need", "category", SET, "防汛救灾", codes) == "防汛救灾"
    assert SCHEMA.validate("service", "service_type", SET, "上门探访", codes) == "上门探访"
    with pytest.raises(InvalidValue):
        SCHEMA.validate("need", "category", SET, "防汛救灾")  # no catalogue given: the built-in list only
    with pytest.raises(InvalidValue):
        SCHEMA.validate("need", "category", SET, "上门探访", codes)  # another catalogue's code
    with pytest.raises(InvalidValue):
        SCHEMA.validate("need", "urgency", SET, "防汛救灾", codes)  # a field with no catalogue


@pytest.mark.parametrize(("coll", "name", "value"), [
    ("person", "id_number", "５１０９０３１９４８０３０１１２３７"),  # full-width, as an input method types it
    ("person", "birth_date", "１９４８-03-01"),
    ("need", "due_date", "2024-02-30"),  # not on the calendar
    ("service", "served_at", "2024-05-01T09:30:00.000"),  # a browser's time with milliseconds
])
def test_a_node_takes_what_older_tablet_apps_let_through(coll: str, name: str, value: str) -> None:
    "Refusing them would strand the ops queued behind them; what a person types now is checked by sync.checks"
    assert SCHEMA.validate(coll, name, SET, value) == value
    SCHEMA.validate_many(coll, name, SET, [value])


def test_a_date_not_on_the_calendar_is_stored_and_read_as_ever(store: Store) -> None:
    "An older tablet app let such a date through: its op is taken, read and merged like any other"
    rid = "01890a5d-ac96-774b-bcce-b302099a8057"
    store.apply([Op("tab-old", 1, 1 << 16, "person", rid, "name", SET, "张秀英", (), "wang", "510903001001", 0),
                 Op("tab-old", 2, 2 << 16, "person", rid, "unit", SET, "510903001001", (), "wang", "510903001001", 0),
                 Op("tab-old", 3, 3 << 16, "person", rid, "birth_date", SET, "1942-02-30", (), "wang",
                    "510903001001", 0)])
    rec = store.get(rid)
    assert rec is not None and rec.data["birth_date"] == "1942-02-30"
