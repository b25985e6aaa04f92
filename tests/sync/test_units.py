"""Tests for sync.units: division codes, the sample tree, CSV import and the units table."""

from __future__ import annotations

import io
from collections.abc import Callable
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.units import (
    SAMPLE_TREE,
    TIER_RANK,
    TIERS,
    Unit,
    UnitCodeError,
    children,
    descendant_range,
    get_unit,
    is_under,
    load_units,
    normalize_code,
    parent_of,
    parse_csv,
    tier_of,
    villages_under,
)

CITY = "510900000000"
COUNTY = "510903000000"
TOWNSHIP = "510903001000"
VILLAGE = "510903001001"


# --- codes -----------------------------------------------------------------------------------


def test_tier_constants() -> None:
    assert TIERS == ("village", "township", "county", "city")
    assert TIER_RANK == {"village": 1, "township": 2, "county": 3, "city": 4}
    assert sorted(TIERS, key=TIER_RANK.__getitem__) == list(TIERS)


def test_tier_rank_agrees_with_the_merge() -> None:
    # The merge ranks concurrent writes with sync.types.TIER_RANK; the two tables must agree.
    types = pytest.importorskip("sync.types")
    assert types.TIER_RANK == TIER_RANK


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (VILLAGE, VILLAGE),
        ("  510903001001\t", VILLAGE),
        ("\u3000510903001001\n", VILLAGE),
        ("510903001", TOWNSHIP),
        ("510903", COUNTY),
        ("510900", CITY),
        ("510000", "510000000000"),
    ],
)
def test_normalize_code_accepts_published_forms(raw: str, expected: str) -> None:
    assert normalize_code(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "51090300100A",
        "abcdefghijkl",
        "51090300100",  # 11 digits
        "5109030010011",  # 13 digits
        "5109030",  # 7 digits
        "５１０９０３",  # full-width digits are not ASCII digits
        "510903-001-001",
        "5109 0300 1001",
        "000000000000",  # no province
        "510000001000",  # township under city 00
        "510903000001",  # village under township 000
    ],
)
def test_normalize_code_rejects_bad_codes(raw: str) -> None:
    with pytest.raises(UnitCodeError) as info:
        normalize_code(raw)
    message = str(info.value)
    assert "12 digits" in message
    assert "510903001001" in message


def test_unit_code_error_is_value_error() -> None:
    assert issubclass(UnitCodeError, ValueError)
    with pytest.raises(ValueError):
        tier_of("x")


@pytest.mark.parametrize(
    ("code", "tier", "parent", "lo", "hi"),
    [
        (VILLAGE, "village", TOWNSHIP, VILLAGE, VILLAGE),
        (TOWNSHIP, "township", COUNTY, TOWNSHIP, "510903001999"),
        (COUNTY, "county", CITY, COUNTY, "510903999999"),
        (CITY, "city", None, CITY, "510999999999"),
        ("441900003000", "township", "441900000000", "441900003000", "441900003999"),  # 东莞: no county
        ("110101000000", "county", "110100000000", "110101000000", "110101999999"),  # 北京东城区
    ],
)
def test_tier_parent_range_per_tier(
    code: str, tier: str, parent: str | None, lo: str, hi: str
) -> None:
    assert tier_of(code) == tier
    assert parent_of(code) == parent
    assert descendant_range(code) == (lo, hi)


def test_short_forms_work_everywhere() -> None:
    assert tier_of("510903") == "county"
    assert tier_of("510903001") == "township"
    assert parent_of("510903001") == COUNTY
    assert descendant_range("510903") == (COUNTY, "510903999999")
    assert is_under(VILLAGE, "510903")


@pytest.mark.parametrize("fn", [tier_of, parent_of, descendant_range])
def test_province_is_not_a_tier(fn: Callable[[str], object]) -> None:
    with pytest.raises(UnitCodeError, match="province"):
        fn("510000000000")


@pytest.mark.parametrize("fn", [tier_of, parent_of, descendant_range])
@pytest.mark.parametrize("raw", ["51090300100A", "51090300100", "5109030010011"])
def test_bad_codes_rejected_by_every_function(fn: Callable[[str], object], raw: str) -> None:
    with pytest.raises(UnitCodeError):
        fn(raw)


def test_is_under() -> None:
    assert is_under(VILLAGE, TOWNSHIP)
    assert is_under(VILLAGE, COUNTY)
    assert is_under(VILLAGE, CITY)
    assert is_under(TOWNSHIP, CITY)
    assert is_under(VILLAGE, VILLAGE)  # inclusive, like descendant_range
    assert is_under(COUNTY, COUNTY)
    assert not is_under(TOWNSHIP, VILLAGE)
    assert not is_under(CITY, COUNTY)
    assert not is_under("510903001002", VILLAGE)  # sibling village
    assert not is_under("510903002001", TOWNSHIP)  # village of a sibling township
    assert not is_under("510904001001", COUNTY)  # village of a sibling county
    assert not is_under("511000000000", CITY)  # another city
    assert not is_under("150203010001", CITY)  # another province
    with pytest.raises(UnitCodeError):
        is_under("510000000000", CITY)
    with pytest.raises(UnitCodeError):
        is_under(VILLAGE, "510000000000")


# --- the sample tree -------------------------------------------------------------------------


def test_sample_tree_is_consistent() -> None:
    codes = [unit.code for unit in SAMPLE_TREE]
    assert len(codes) == len(set(codes))
    by_code = {unit.code: unit for unit in SAMPLE_TREE}
    for unit in SAMPLE_TREE:
        assert unit.code == normalize_code(unit.code)
        assert unit.tier == tier_of(unit.code)
        assert unit.parent == parent_of(unit.code)
        assert unit.name.strip() == unit.name and unit.name
        if unit.parent is not None:
            assert unit.parent in by_code, unit
            assert TIER_RANK[by_code[unit.parent].tier] == TIER_RANK[unit.tier] + 1


def test_sample_tree_townships_have_villages() -> None:
    townships = [unit for unit in SAMPLE_TREE if unit.tier == "township"]
    assert {unit.name for unit in townships} == {"育才路街道", "凤凰街道", "新会镇", "昆北街道"}
    for township in townships:
        villages = [u for u in SAMPLE_TREE if u.tier == "village" and u.parent == township.code]
        assert len(villages) >= 3, township
        suffix = "社区" if township.name.endswith("街道") else "村"
        assert all(v.name.endswith(suffix) for v in villages), villages


def test_sample_tree_names_and_illustrative_flags() -> None:
    by_name = {unit.name: unit for unit in SAMPLE_TREE}
    assert by_name["遂宁市"] == Unit("510900000000", "遂宁市", "city", None)
    assert by_name["船山区"].code == "510903000000"
    assert by_name["安居区"].code == "510904000000"
    assert by_name["蓬溪县"].code == "510921000000"
    assert by_name["包头市"] == Unit("150200000000", "包头市", "city", None)
    assert by_name["昆都仑区"].code == "150203000000"
    assert by_name["育才路街道"].parent == by_name["船山区"].code
    assert by_name["凤凰街道"].parent == by_name["安居区"].code
    assert by_name["新会镇"].parent == by_name["蓬溪县"].code
    assert by_name["昆北街道"].parent == by_name["昆都仑区"].code
    assert by_name["海威社区"].parent == by_name["昆北街道"].code
    assert by_name["海威社区"].tier == "village"
    for unit in SAMPLE_TREE:
        # Only the city and county codes are real; lower codes are invented and say so.
        assert unit.illustrative == (unit.tier in ("township", "village")), unit


# --- CSV import ------------------------------------------------------------------------------


def test_parse_csv_file_with_bom_header_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "units.csv"
    path.write_text(
        "\ufeffcode,name\n"
        "\n"
        "510900000000,遂宁市\n"
        "  510903 , 船山区  \n"
        "   \n"
        "510903001,育才路街道\n"
        '510903001001,"育才社区"\n',
        encoding="utf-8",
    )
    with path.open(encoding="utf-8", newline="") as handle:
        units, problems = parse_csv(handle)
    assert problems == []
    assert units == [
        Unit(CITY, "遂宁市", "city", None),
        Unit(COUNTY, "船山区", "county", CITY),
        Unit(TOWNSHIP, "育才路街道", "township", COUNTY),
        Unit(VILLAGE, "育才社区", "village", TOWNSHIP),
    ]


def test_parse_csv_chinese_header_and_bom_on_data_row() -> None:
    units, problems = parse_csv(["统计用区划代码,名称", "510900000000,遂宁市"])
    assert problems == []
    assert [u.code for u in units] == [CITY]
    units, problems = parse_csv(["\ufeff510900000000,遂宁市\r\n", "510903000000,船山区\r\n"])
    assert problems == []
    assert [(u.code, u.name) for u in units] == [(CITY, "遂宁市"), (COUNTY, "船山区")]


def test_parse_csv_header_only_counts_as_first_row() -> None:
    units, problems = parse_csv(["510900000000,遂宁市", "code,name"])
    assert [u.code for u in units] == [CITY]
    assert len(problems) == 1
    assert problems[0].startswith("line 2: error:")
    assert "'code'" in problems[0]


def test_parse_csv_reports_bad_rows_with_line_numbers() -> None:
    lines = [
        "code,name",  # 1
        "510900000000,遂宁市",  # 2
        "51090300000A,坏代码",  # 3
        "51090300000,十一位",  # 4
        "510903000000",  # 5 missing name
        "510903000000,  ",  # 6 blank name
        ",无代码",  # 7
        "510903000000,船山区,多余",  # 8
        "510903000000,船山区",  # 9
        "510903000000,船山区（重复）",  # 10
        "510903001001,育才社区",  # 11 parent township missing
        "510000000000,四川省",  # 12 province
        "150000,内蒙古自治区",  # 13 province, short form
    ]
    units, problems = parse_csv(lines)
    assert [(u.code, u.name) for u in units] == [
        (CITY, "遂宁市"),
        (COUNTY, "船山区"),
        (VILLAGE, "育才社区"),
    ]
    assert len(problems) == 9, problems
    assert [p.split(": ")[:2] for p in problems[:-1]] == [
        ["line 3", "error"],
        ["line 4", "error"],
        ["line 5", "error"],
        ["line 6", "error"],
        ["line 7", "error"],
        ["line 8", "error"],
        ["line 10", "error"],
        ["line 11", "warning"],
    ]
    by_line = {p.split(":")[0]: p for p in problems[:-1]}
    assert "51090300000A" in by_line["line 3"]
    assert "11 characters" in by_line["line 4"]
    assert "missing name" in by_line["line 5"] and COUNTY in by_line["line 5"]
    assert "missing name" in by_line["line 6"]
    assert "missing code" in by_line["line 7"]
    assert "2 columns" in by_line["line 8"]
    assert "duplicate code 510903000000 (first on line 9)" in by_line["line 10"]
    assert "warning" in by_line["line 11"] and TOWNSHIP in by_line["line 11"]
    assert "line 9" not in by_line
    assert problems[-1] == (
        "warning: skipped 2 province row(s) (line 12, 13): provinces are not a tier in cunsync"
    )


def test_parse_csv_problem_order_and_kinds() -> None:
    lines = ["510903000000,船山区", "x,y", "510903000000,again"]
    units, problems = parse_csv(lines)
    assert [u.code for u in units] == [COUNTY]
    assert [p.split(": ")[0:2] for p in problems] == [
        ["line 1", "warning"],  # parent city not in the file
        ["line 2", "error"],
        ["line 3", "error"],
    ]


def test_parse_csv_empty_and_quoted_names() -> None:
    assert parse_csv([]) == ([], [])
    assert parse_csv(["", "  ", "\ufeff"]) == ([], [])
    units, problems = parse_csv(['510900000000,"遂宁市, 四川"'])
    assert problems == []
    assert units[0].name == "遂宁市, 四川"


def test_parse_csv_reads_a_stream_and_round_trips_the_sample_tree() -> None:
    text = "code,name\n" + "".join(f"{u.code},{u.name}\n" for u in SAMPLE_TREE)
    units, problems = parse_csv(io.StringIO(text))
    assert problems == []
    assert units == [
        Unit(u.code, u.name, u.tier, u.parent) for u in SAMPLE_TREE
    ]  # the file carries no illustrative flag


# --- the units table -------------------------------------------------------------------------


@pytest.fixture
def db() -> sqlite_utils.Database:
    return sqlite_utils.Database(memory=True)


def test_reads_on_an_empty_database(db: sqlite_utils.Database) -> None:
    assert get_unit(db, CITY) is None
    assert children(db, CITY) == []
    assert villages_under(db, CITY) == []
    assert load_units(db, []) == 0
    assert db.table("units").exists()
    assert get_unit(db, CITY) is None


def test_load_units_round_trip(db: sqlite_utils.Database) -> None:
    assert load_units(db, SAMPLE_TREE) == len(SAMPLE_TREE)
    assert db.table("units").count == len(SAMPLE_TREE)
    for unit in SAMPLE_TREE:
        assert get_unit(db, unit.code) == unit
    assert get_unit(db, "510903") == Unit(COUNTY, "船山区", "county", CITY)
    assert get_unit(db, "510905000000") is None
    columns = {c.name: c.type for c in db.table("units").columns}
    assert columns == {
        "code": "TEXT",
        "name": "TEXT",
        "tier": "TEXT",
        "parent": "TEXT",
        "illustrative": "INTEGER",
    }
    assert db.table("units").pks == ["code"]
    indexes = {index.name: index.columns for index in db.table("units").indexes}
    assert indexes["idx_units_parent"] == ["parent"]
    illustrative = db.execute("select count(*) from units where illustrative = 1").fetchone()
    assert illustrative[0] == sum(1 for u in SAMPLE_TREE if u.illustrative)


def test_children_and_villages_under(db: sqlite_utils.Database) -> None:
    load_units(db, SAMPLE_TREE)
    assert [u.name for u in children(db, CITY)] == ["船山区", "安居区", "蓬溪县"]
    assert [u.name for u in children(db, "510903")] == ["育才路街道"]
    assert [u.name for u in children(db, TOWNSHIP)] == ["育才社区", "广场社区", "和平社区"]
    assert children(db, VILLAGE) == []
    assert [u.code for u in villages_under(db, TOWNSHIP)] == [
        "510903001001",
        "510903001002",
        "510903001003",
    ]
    suining = villages_under(db, CITY)
    assert len(suining) == 9
    assert all(u.tier == "village" and is_under(u.code, CITY) for u in suining)
    assert [u.name for u in villages_under(db, "150200")] == ["海威社区", "昆北社区", "钢铁社区"]
    assert villages_under(db, VILLAGE) == [get_unit(db, VILLAGE)]


def test_load_units_upserts_and_is_idempotent(db: sqlite_utils.Database) -> None:
    load_units(db, SAMPLE_TREE)
    load_units(db, SAMPLE_TREE)
    assert db.table("units").count == len(SAMPLE_TREE)
    renamed = Unit(COUNTY, "船山区（新）", "county", CITY)
    assert load_units(db, iter([renamed])) == 1
    assert get_unit(db, COUNTY) == renamed
    assert db.table("units").count == len(SAMPLE_TREE)


@pytest.mark.parametrize(
    "bad",
    [
        Unit("510903", "船山区", "county", CITY),  # not the 12-digit form
        Unit(COUNTY, "船山区", "township", CITY),  # wrong tier
        Unit(COUNTY, "船山区", "county", None),  # wrong parent
        Unit(COUNTY, " ", "county", CITY),  # no name
        Unit("510000000000", "四川省", "city", None),  # province
    ],
)
def test_load_units_rejects_bad_units_and_writes_nothing(
    db: sqlite_utils.Database, bad: Unit
) -> None:
    load_units(db, SAMPLE_TREE[:2])
    good = Unit("510904000000", "安居区", "county", CITY)
    with pytest.raises(ValueError):
        load_units(db, [good, bad])
    assert get_unit(db, good.code) is None
    assert db.table("units").count == 2


def test_load_units_is_one_transaction(db: sqlite_utils.Database) -> None:
    # More rows than sqlite-utils writes per statement, so the write spans several statements;
    # the last one fails, and the earlier ones must be rolled back with it.
    many = [Unit(f"510903001{n:03d}", f"第{n}社区", "village", TOWNSHIP) for n in range(1, 400)]
    load_units(db, SAMPLE_TREE[:1])
    db.execute(
        "create trigger refuse_last before insert on units when new.code = '510903001399' "
        "begin select raise(abort, 'refused'); end"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        load_units(db, many)
    assert db.table("units").count == 1
    assert get_unit(db, "510903001001") is None
    assert load_units(db, many[:-1]) == 398  # the same rows load once the trigger allows them
    assert db.table("units").count == 399


def test_descendant_range_in_sql_between(db: sqlite_utils.Database) -> None:
    load_units(db, SAMPLE_TREE)
    # Records tagged with every unit of the tree plus neighbours just outside each range.
    outside = ["510902000000", "510903002000", "510903002001", "510905000000", "511000000000"]
    tagged = [u.code for u in SAMPLE_TREE] + outside
    db.table("records").insert_all([{"id": i, "unit": code} for i, code in enumerate(tagged)])
    for ancestor in [u.code for u in SAMPLE_TREE]:
        lo, hi = descendant_range(ancestor)
        got = [
            row["unit"]
            for row in db.query(
                "select unit from records where unit between ? and ? order by unit", [lo, hi]
            )
        ]
        expected = sorted(code for code in tagged if is_under(code, ancestor))
        assert got == expected, ancestor
        assert ancestor in got
    lo, hi = descendant_range(TOWNSHIP)
    got_township = [
        row["unit"] for row in db.query("select unit from records where unit between ? and ?", [lo, hi])
    ]
    assert sorted(got_township) == [TOWNSHIP, "510903001001", "510903001002", "510903001003"]
    lo, hi = descendant_range(COUNTY)
    got_county = {
        row["unit"] for row in db.query("select unit from records where unit between ? and ?", [lo, hi])
    }
    assert got_county == {
        COUNTY,
        TOWNSHIP,
        "510903001001",
        "510903001002",
        "510903001003",
        "510903002000",
        "510903002001",
    }


# --- properties ------------------------------------------------------------------------------


@st.composite
def valid_codes(draw: st.DrawFn) -> str:
    province = draw(st.integers(11, 99))
    city = draw(st.integers(1, 99))
    tier = draw(st.sampled_from(TIERS))
    county = 0 if tier == "city" else draw(st.integers(0 if tier != "county" else 1, 99))
    township = draw(st.integers(1, 999)) if tier in ("township", "village") else 0
    village = draw(st.integers(1, 999)) if tier == "village" else 0
    return f"{province:02d}{city:02d}{county:02d}{township:03d}{village:03d}"


@settings(database=None, max_examples=300)
@given(valid_codes())
def test_parent_contains_child(code: str) -> None:
    tier = tier_of(code)
    assert normalize_code(code) == code
    lo, hi = descendant_range(code)
    assert lo == code <= hi
    parent = parent_of(code)
    if parent is None:
        assert tier == "city"
        return
    assert is_under(code, parent)
    assert not is_under(parent, code)
    plo, phi = descendant_range(parent)
    assert plo <= code <= phi
    assert plo <= lo and hi <= phi  # a child's range nests inside its parent's
    assert TIER_RANK[tier_of(parent)] > TIER_RANK[tier]


@settings(database=None, max_examples=300)
@given(valid_codes(), st.data())
def test_is_under_matches_the_ancestor_chain(code: str, data: st.DataObject) -> None:
    chain = [code]
    for _ in range(4):  # bounded: a parent_of that loops must fail, not hang
        parent = parent_of(chain[-1])
        if parent is None:
            break
        assert parent != chain[-1]
        chain.append(parent)
    assert parent_of(chain[-1]) is None
    assert tier_of(chain[-1]) == "city"
    other = data.draw(st.one_of(st.sampled_from(chain), valid_codes()))
    assert is_under(code, other) == (other in chain)
    lo, hi = descendant_range(other)
    assert (lo <= code <= hi) == (other in chain)


def test_parse_csv_reports_unreadable_rows_and_reads_on() -> None:
    huge = "名" * 200_000  # beyond the csv module's field size limit
    units, problems = parse_csv(["510900000000,遂宁市", f"510903000000,{huge}", "510904000000,安居区"])
    assert [u.code for u in units] == [CITY, "510904000000"]
    assert len(problems) == 1
    assert problems[0].startswith("line 2: error: unreadable row")
