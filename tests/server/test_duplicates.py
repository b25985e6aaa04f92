"""Finding duplicate residents (``server.duplicates``), on records built in memory."""

from __future__ import annotations

from typing import Any

from hypothesis import given, strategies as st

from server.duplicates import find_pairs, one_apart, pinyin_key
from sync.store import Record

V1, V2 = "510903001001", "510903001002"


def person(rid: str, unit: str = V1, **data: Any) -> Record:
    return Record(rid, "person", unit, False, data, [], 0)


def reasons(people: list[Record]) -> dict[tuple[str, str], list[str]]:
    return {(p.a.id, p.b.id): p.reasons for p in find_pairs(people)}


def test_the_same_id_number_in_two_villages() -> None:
    assert reasons([person("a", name="李桂兰", id_number="51090319450101002x"),
                    person("b", V2, name="李贵兰", id_number="51090319450101002X")]) == {("a", "b"): ["same_id"]}


def test_an_id_number_an_older_app_kept_in_full_width_digits_is_the_same_number() -> None:
    assert reasons([person("a", name="李桂兰", id_number="５１０９０３１９４５０１０１００２Ｘ", birth_date="１９４５-01-01"),
                    person("b", V2, name="李贵兰", id_number="51090319450101002X", birth_date="1945-01-01")]
                   ) == {("a", "b"): ["same_id"]}


def test_the_same_name_and_birth_date_in_two_villages() -> None:
    assert reasons([person("a", name="张三", birth_date="1950-01-01"),
                    person("b", V2, name="张三", birth_date="1950-01-01"),
                    person("c", V2, name="张三", birth_date="1951-01-01")]) == {("a", "b"): ["same_birth"]}


def test_near_names_in_one_village_only() -> None:
    found = reasons([person("a", name="张桂芳"), person("b", name="章桂芳"), person("c", V2, name="张桂芳"),
                     person("d", name="王建国"), person("e", name="王建华"), person("f", name="李明"),
                     person("g", name="李明明"), person("h", name="刘强"), person("i", name="刘强")])
    assert found == {("a", "b"): ["same_pinyin", "one_apart"], ("d", "e"): ["one_apart"], ("f", "g"): ["one_apart"],
                     ("h", "i"): ["same_name"]}


def test_near_names_told_apart_by_birth_date_or_id_are_not_suggested() -> None:
    assert reasons([person("a", name="赵明", birth_date="1950-02-02"), person("b", name="赵敏", birth_date="1960-03-03"),
                    person("c", name="刘强", id_number="510903195001010011"),
                    person("d", name="刘强", id_number="510903195001010022")]) == {}


def test_strongest_signs_come_first() -> None:
    pairs = find_pairs([person("d", name="王建国"), person("e", name="王建华"),
                        person("a", name="甲", id_number="51090319450101002X"),
                        person("b", V2, name="乙", id_number="51090319450101002X")])
    assert [p.reasons[0] for p in pairs] == ["same_id", "one_apart"]
    assert pairs[0].labels == ["身份证号相同"]


def test_pinyin_ignores_tones() -> None:
    assert pinyin_key("张秀英") == pinyin_key("章秀英") == "zhang xiu ying"


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


names = st.text(alphabet="王李张刘陈杨明华国芳", min_size=1, max_size=4)


@given(names, names)
def test_one_apart_is_edit_distance_one(a: str, b: str) -> None:
    assert one_apart(a, b) == (_edit_distance(a, b) == 1)


@given(st.lists(names, min_size=2, max_size=12))
def test_every_one_apart_pair_in_a_village_is_found(people: list[str]) -> None:
    recs = [person(f"r{i:02}", name=n) for i, n in enumerate(people)]
    found = reasons(recs)
    for i, a in enumerate(recs):
        for b in recs[i + 1:]:
            near = one_apart(a.data["name"], b.data["name"])
            assert near == ("one_apart" in found.get((a.id, b.id), []))


_people = st.lists(st.fixed_dictionaries({
    "unit": st.sampled_from([V1, V2]),
    "name": st.builds(lambda s, g: s + g, st.sampled_from("张王李"), st.text("伟敏英兰", min_size=1, max_size=2)),
    "birth_date": st.sampled_from([None, "1950-01-01", "1950-01-02"]),
    "id_number": st.sampled_from([None, "510903195001010011", "51090319500101001X"]),
}), min_size=2, max_size=16)


@given(_people)
def test_pairing_only_residents_born_alike_finds_what_pairing_all_finds(people: list[dict[str, Any]],
                                                                        ) -> None:
    "``_birth_alike`` leaves out only pairs that their birth dates tell apart: the same pairs, reasons and order"
    import itertools

    from server import duplicates

    records = [person(f"r{i:02d}", p["unit"], **{k: v for k, v in p.items() if k != "unit" and v is not None})
               for i, p in enumerate(people)]
    pruned = [(p.a.id, p.b.id, p.reasons) for p in find_pairs(records)]
    real = duplicates._birth_alike
    try:
        duplicates._birth_alike = lambda group, marks: itertools.combinations(group, 2)  # every pair of a group
        every = [(p.a.id, p.b.id, p.reasons) for p in find_pairs(records)]
    finally:
        duplicates._birth_alike = real
    assert pruned == every
