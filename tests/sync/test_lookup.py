"""Finding residents the way workers type: characters, full pinyin, initials, a mix of both, every
reading of a heteronym, ü typed as v or u; ID numbers and phones by any part. And no false friends."""

from __future__ import annotations

import pytest

from sync.lookup import find_people, name_matches, record_matches
from sync.store import Record


@pytest.mark.parametrize("query", ["张三", "张", "三", "zhangsan", "zs", "ZS", "zhang san", "zhangs", "zsan", "san",
                                   "zhan"])
def test_zhang_san_is_found(query: str) -> None:
    assert name_matches(query, "张三")


@pytest.mark.parametrize("query", ["zhangsn", "sz", "ls", "hangsan", "zhangsana", "李", "z s x", "x"])
def test_zhang_san_is_not_found(query: str) -> None:
    assert not name_matches(query, "张三")


def test_every_reading_of_a_heteronym_and_either_spelling_of_u_umlaut() -> None:
    for query in ("zengxiaoming", "cengxiaoming", "zxm", "cxm"):
        assert name_matches(query, "曾小明"), query
    for query in ("lvfang", "lufang", "lf", "lüfang"):
        assert name_matches(query, "吕芳"), query


def test_id_numbers_and_phones_match_by_any_part_names_by_pinyin_first() -> None:
    person = {"name": "王秀英", "id_number": "51090319420308122X", "phone": "138-0013-8000"}
    for query in ("5109", "19420308", "122x", "122X", "13800138000", "0013", "wxy", "wangxiuying"):
        assert record_matches(query, person), query
    for query in ("5110", "139", "wxx", ""):
        assert not record_matches(query, person), query


def test_full_width_digits_and_letters_from_a_chinese_input_method_match_as_ascii() -> None:
    person = {"name": "王秀英", "id_number": "51090319420308122X", "phone": "13800138000"}
    for query in ("１３８００１３８０００", "５１０９", "１２２Ｘ", "１２２ｘ", "ｗｘｙ", "ｗａｎｇ ｘｉｕｙｉｎｇ"):
        assert record_matches(query, person), query
    assert not record_matches("５１１０", person)
    people = [Record("1", "person", "510903001001", False, person, [], 1)]
    assert find_people(people, "５１０９０３１９４２０３０８１２２Ｘ") == people


def test_exact_matches_come_first_then_pinyin_order() -> None:
    people = [Record(str(i), "person", "510903001001", False, {"name": n}, [], i)
              for i, n in enumerate(["赵珊", "张三丰", "张三"])]
    assert [p.data["name"] for p in find_people(people, "张三")] == ["张三", "张三丰"]
    assert [p.data["name"] for p in find_people(people, "zs")] == ["张三", "张三丰", "赵珊"]
