"""Tests for sync.checks: the value checks the tablet's forms, the workbench and the CLI share."""

from __future__ import annotations

import datetime as dt

import pytest

from sync import checks

NOW = dt.datetime(2025, 6, 1, 10, 0)


def codes(coll: str, name: str, value: object) -> str | None:
    found = checks.check(coll, name, value, now=NOW)
    return found.code if found else None


def test_full_width_digits_and_signs_become_ascii_only_in_fields_of_digits() -> None:
    assert checks.normalize("id_number", "５１０９０３１９４２０３０８１２３１") == "510903194203081231"
    assert checks.normalize("birth_date", "１９４２－０３－０８") == "1942-03-08"
    assert checks.normalize("served_at", "２０２５-０５-０１ ０９：３０") == "2025-05-01 09:30"
    assert checks.normalize("phone", "＋８６ １３８") == "+86 138"
    assert checks.normalize("name", "Ａ张") == "Ａ张"  # names and notes are kept as typed


@pytest.mark.parametrize(("name", "value", "code"), [
    ("birth_date", "1942-03-08", None),
    ("birth_date", "2025-06-01", None),
    ("birth_date", "2025-06-02", "birth_date_in_future"),
    ("birth_date", "1889-12-31", "birth_date_too_early"),
    ("birth_date", "1890-01-01", None),
    ("birth_date", "1942-02-30", "no_such_date"),
    ("birth_date", "1942/3/8", None),  # the wrong shape: the schema refuses it, with its format help
    ("id_number", "510903194203081231", None),
    ("id_number", "51090319500101123X", None),
    ("id_number", "510903194203081271", "id_number_check_digit"),  # one digit mistyped
    ("id_number", "510903194203081230", "id_number_check_digit"),
    ("id_number", "510903199913451234", "id_number_date"),  # month 13
    ("phone", "13800138000", None),
    ("phone", "139 0000 1111", None),
    ("phone", "0825-2222222", None),
    ("phone", "+86 138 0013 8000", None),
    ("phone", "-----", "phone_shape"),
    ("phone", "138--0013", "phone_shape"),
    ("phone", "12 34", "phone_shape"),  # four digits
])
def test_person_values(name: str, value: str, code: str | None) -> None:
    assert codes("person", name, value) == code


def test_a_service_may_be_dated_up_to_a_day_ahead_of_the_clock() -> None:
    assert codes("service", "served_at", "2025-06-02T09:59") is None
    assert codes("service", "served_at", "2025-06-02T10:00") is None  # a day ahead, to the minute
    assert codes("service", "served_at", "2025-06-02T10:01") == "served_at_in_future"
    assert codes("service", "served_at", "2099-05-01T09:30") == "served_at_in_future"
    assert codes("service", "served_at", "2025-13-45T99:99") == "no_such_date"
    assert codes("need", "due_date", "2024-02-30") == "no_such_date"
    assert codes("need", "due_date", "2099-01-01") is None  # a due date may lie far ahead


def test_problems_say_what_to_fix_in_english_and_chinese() -> None:
    found = checks.check("person", "id_number", "510903194203081271")
    assert found is not None and found.zh == "身份证号最后一位校验码不对，请核对" and "check digit" in found.message
    found = checks.check("service", "served_at", "2025-02-30T09:00")
    assert found is not None and found.zh == "服务时间不是一个存在的时间，请核对"
    found = checks.check("need", "due_date", "2024-02-30")
    assert found is not None and found.zh == "截止日期不是一个存在的日期，请核对"


def test_the_check_digit_follows_gb_11643() -> None:
    assert checks.id_check_digit("11010519491231002") == "X"  # the standard's own example
    assert checks.id_check_digit("44052418800101001") == "4"


def test_disagreements_with_the_id_number_go_to_the_field_that_changed() -> None:
    person = {"id_number": "510903194203081231", "birth_date": "1942-03-09", "gender": "女"}
    both = checks.disagreements(person, ["birth_date", "gender"])
    assert {k: p.code for k, p in both.items()} == {"birth_date": "birth_date_disagrees",
                                                   "gender": "gender_disagrees"}
    assert "1942-03-08" in both["birth_date"].zh and "男" in both["gender"].zh
    assert list(checks.disagreements(person, ["id_number"])) == ["id_number"]  # the ID number was changed
    assert checks.disagreements(person, ["phone"]) == {}  # none of the three changed: not this edit's problem
    agreeing = {"id_number": "510903194203081231", "birth_date": "1942-03-08", "gender": "男"}
    assert checks.disagreements(agreeing, ["id_number", "birth_date", "gender"]) == {}
    assert checks.disagreements({"id_number": "510903194203081231"}, ["id_number"]) == {}  # none given, none contradicts
    assert checks.id_number_facts("5109031942030812311") is None  # 19 characters: no ID number
