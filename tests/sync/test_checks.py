"""Tests for sync.checks: the value checks the tablet's forms, the workbench and the CLI share."""

from __future__ import annotations

import datetime as dt

import pytest

from sync import checks
from sync.types import CHINA_TIME, china_time

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


def test_a_date_typed_as_8_digits_is_written_as_a_date() -> None:
    "A numeric keypad has no -: 19420308 is 1942-03-08, full-width too; other digits are left to the schema"
    assert checks.normalize("birth_date", "19420308") == "1942-03-08"
    assert checks.normalize("birth_date", "１９４２０３０８") == "1942-03-08"
    assert checks.normalize("due_date", "20240630") == "2024-06-30"
    assert checks.normalize("birth_date", "19420230") == "1942-02-30"  # check says: no such date
    assert checks.normalize("birth_date", "1942038") == "1942038"  # 7 digits: the schema's format help
    assert checks.normalize("phone", "13800138") == "13800138"
    assert checks.normalize("served_at", "20240501") == "20240501"


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


def test_today_and_a_day_ahead_are_china_time_whatever_the_systems_zone(away_from_china: str) -> None:
    now = dt.datetime.now(CHINA_TIME).replace(tzinfo=None)
    assert abs(china_time() - now) < dt.timedelta(seconds=5)

    def found(coll: str, name: str, value: str) -> str | None:
        problem = checks.check(coll, name, value)  # no ``now``: the checks' own clock
        return problem.code if problem else None

    def ahead(hours: int) -> str:
        return (now + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M")

    assert found("person", "birth_date", now.date().isoformat()) is None
    assert found("person", "birth_date", ahead(24)[:10]) == "birth_date_in_future"
    assert found("service", "served_at", ahead(23)) is None
    assert found("service", "served_at", ahead(25)) == "served_at_in_future"


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
