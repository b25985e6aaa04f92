"""Administrative units: statistical division codes (统计用区划代码) and the unit tree.

A code has 12 digits ``PPCCXXTTTVVV``: province, city, county, township, village. cunsync has four
tiers, city 市 > county 县/区 > township 镇/街道 > village 村/社区; the tier of a code is its lowest
non-zero segment. A province code (``510000000000``) is valid as a code but is not a tier here:
``tier_of`` rejects it and ``parse_csv`` skips province rows, reporting how many it skipped.

The published 6-digit (county/city) and 9-digit (township) forms are accepted and padded with zeros.
A few cities have no county tier (东莞 441900, 中山 442000, 儋州 460400, 嘉峪关 620200): their townships
have county digits ``00``, and ``parent_of`` gives the city code as their parent.

``SAMPLE_TREE`` is the pilot tree. Codes of cities and counties are the real published codes; the
township and village codes are plausible but invented (``illustrative=True``), laid out the way the
published data is (街道 001-099, 镇 100-199; 社区 001-199, 村 200-399). Village and community names,
except 海威社区, are placeholders too.

| code | name | tier | illustrative |
|---|---|---|---|
| 510900000000 | 遂宁市 | city | no |
| 510903000000 | 船山区 | county | no |
| 510904000000 | 安居区 | county | no |
| 510921000000 | 蓬溪县 | county | no |
| 510903001000 | 育才路街道 | township | yes |
| 510903001001-003 | 育才社区, 广场社区, 和平社区 | village | yes |
| 510904001000 | 凤凰街道 | township | yes |
| 510904001001-003 | 凤凰社区, 文峰社区, 安居社区 | village | yes |
| 510921101000 | 新会镇 | township | yes |
| 510921101201-203 | 石板村, 龙潭村, 红星村 | village | yes |
| 150200000000 | 包头市 | city | no |
| 150203000000 | 昆都仑区 | county | no |
| 150203010000 | 昆北街道 | township | yes |
| 150203010001-003 | 海威社区, 昆北社区, 钢铁社区 | village | yes |
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

TIERS = ("village", "township", "county", "city")
TIER_RANK: dict[str, int] = {"village": 1, "township": 2, "county": 3, "city": 4}
#: Each tier's name on the pages and the tablet (zh-CN)
TIER_NAMES: dict[str, str] = {"village": "村/社区", "township": "镇街", "county": "县区", "city": "市"}

# Number of leading digits that identify a unit of each tier; the rest are zeros.
_PREFIX_LEN: dict[str, int] = {"city": 4, "county": 6, "township": 9, "village": 12}
_FORMAT = re.compile(r"[0-9]{12}|[0-9]{9}|[0-9]{6}")
_VALID = (
    "a valid code has 12 digits PPCCXXTTTVVV (province, city, county, township, village), "
    "e.g. 510903001001 (village), 510903001000 (township), 510903000000 (county), "
    "510900000000 (city); the published 6-digit (510903) and 9-digit (510903001) forms are accepted"
)
_HEADERS = {("code", "name"), ("统计用区划代码", "名称")}


class UnitCodeError(ValueError):
    """A division code that is malformed, or that names no cunsync tier (a province)."""


def normalize_code(code: str) -> str:
    """Return the 12-digit form of ``code``: surrounding whitespace stripped, 6/9 digits padded."""
    if not isinstance(code, str):
        raise UnitCodeError(f"division code must be a string, got {type(code).__name__}; {_VALID}")
    text = code.strip()
    if not _FORMAT.fullmatch(text):
        what = "empty" if not text else f"{len(text)} characters, not 6, 9 or 12 ASCII digits"
        raise UnitCodeError(f"bad division code {code!r} ({what}); {_VALID}")
    full = text.ljust(12, "0")
    if full[:2] == "00":
        raise UnitCodeError(f"bad division code {full}: province digits 1-2 are 00; {_VALID}")
    if full[2:4] == "00" and full[4:] != "0" * 8:
        raise UnitCodeError(f"bad division code {full}: lower digits set under city 00; {_VALID}")
    if full[6:9] == "000" and full[9:] != "000":
        raise UnitCodeError(f"bad division code {full}: village digits set under township 000; {_VALID}")
    return full


def tier_of(code: str) -> str:
    """Tier of the unit named by ``code``; raises UnitCodeError for province codes."""
    full = normalize_code(code)
    if full[9:] != "000":
        return "village"
    if full[6:9] != "000":
        return "township"
    if full[4:6] != "00":
        return "county"
    if full[2:4] != "00":
        return "city"
    raise UnitCodeError(
        f"{full} is a province code; provinces are not a tier in cunsync "
        f"(tiers: city, county, township, village); {_VALID}"
    )


def unnamed(code: str) -> str:
    """How a page names a unit the unit tree lacks (a village enrolled before ``cunsync units import``
    listed it): 未命名村/社区（510903001009）; a code of no tier as it is"""
    try:
        return f"未命名{TIER_NAMES[tier_of(code)]}（{code}）"
    except UnitCodeError:
        return code


def parent_of(code: str) -> str | None:
    """Code of the unit directly above ``code`` (None for a city)."""
    full = normalize_code(code)
    tier = tier_of(full)
    if tier == "city":
        return None
    keep = {"village": 9, "township": 6, "county": 4}[tier]
    return full[:keep].ljust(12, "0")


def ancestors(code: str) -> tuple[str, ...]:
    """Codes of every unit above ``code``, nearest first (a village: its township, county and city)."""
    out: list[str] = []
    parent = parent_of(code)
    while parent is not None:
        out.append(parent)
        parent = parent_of(parent)
    return tuple(out)


def descendant_range(code: str) -> tuple[str, str]:
    """Inclusive bounds (lo, hi): every code under ``code``, and ``code`` itself, lies in them."""
    full = normalize_code(code)
    keep = _PREFIX_LEN[tier_of(full)]
    return full, full[:keep].ljust(12, "9")


def is_under(code: str, ancestor: str) -> bool:
    """True if ``code`` is ``ancestor`` or lies beneath it (inclusive, like descendant_range)."""
    full = normalize_code(code)
    tier_of(full)
    lo, hi = descendant_range(ancestor)
    return lo <= full <= hi


@dataclass(frozen=True)
class Unit:
    code: str
    name: str
    tier: str
    parent: str | None
    illustrative: bool = False


def _unit(code: str, name: str, illustrative: bool = False) -> Unit:
    full = normalize_code(code)
    return Unit(full, name, tier_of(full), parent_of(full), illustrative)


SAMPLE_TREE: tuple[Unit, ...] = (
    _unit("510900000000", "遂宁市"),
    _unit("510903000000", "船山区"),
    _unit("510904000000", "安居区"),
    _unit("510921000000", "蓬溪县"),
    _unit("510903001000", "育才路街道", True),
    _unit("510903001001", "育才社区", True),
    _unit("510903001002", "广场社区", True),
    _unit("510903001003", "和平社区", True),
    _unit("510904001000", "凤凰街道", True),
    _unit("510904001001", "凤凰社区", True),
    _unit("510904001002", "文峰社区", True),
    _unit("510904001003", "安居社区", True),
    _unit("510921101000", "新会镇", True),
    _unit("510921101201", "石板村", True),
    _unit("510921101202", "龙潭村", True),
    _unit("510921101203", "红星村", True),
    _unit("150200000000", "包头市"),
    _unit("150203000000", "昆都仑区"),
    _unit("150203010000", "昆北街道", True),
    _unit("150203010001", "海威社区", True),
    _unit("150203010002", "昆北社区", True),
    _unit("150203010003", "钢铁社区", True),
)


def parse_csv(lines: Iterable[str]) -> tuple[list[Unit], list[str]]:
    """Parse published ``code,name`` rows into units, and a list of problems found.

    Each problem reads ``line N: error: ...`` (the row was not imported) or ``line N: warning: ...``
    (imported; its parent is not in the file). Province rows are skipped and counted in a final
    warning. The first of two rows with the same code wins.
    """
    units: list[Unit] = []
    first_seen: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    province_lines: list[int] = []
    started = False
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((reader.line_num, f"error: unreadable row ({exc})"))
            continue
        line = reader.line_num
        cells = [cell.replace("\ufeff", "").strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if not started:
            started = True
            if tuple(cell.lower() for cell in cells) in _HEADERS:
                continue
        if len(cells) > 2:
            problems.append((line, f"error: expected 2 columns (code,name), got {len(cells)}"))
            continue
        if not cells[0]:
            problems.append((line, "error: missing code"))
            continue
        try:
            code = normalize_code(cells[0])
        except UnitCodeError as exc:
            problems.append((line, f"error: {exc}"))
            continue
        if code[2:] == "0" * 10:
            province_lines.append(line)
            continue
        name = cells[1] if len(cells) == 2 else ""
        if not name:
            problems.append((line, f"error: missing name for code {code}"))
            continue
        if code in first_seen:
            first = first_seen[code]
            problems.append((line, f"error: duplicate code {code} (first on line {first}); row ignored"))
            continue
        first_seen[code] = line
        units.append(_unit(code, name))
    for unit in units:
        if unit.parent is not None and unit.parent not in first_seen:
            message = f"warning: parent {unit.parent} of {unit.code} {unit.name} is not in the file"
            problems.append((first_seen[unit.code], message))
    problems.sort(key=lambda item: item[0])
    report = [f"line {line}: {message}" for line, message in problems]
    if province_lines:
        where = ", ".join(str(n) for n in province_lines)
        report.append(
            f"warning: skipped {len(province_lines)} province row(s) (line {where}): "
            "provinces are not a tier in cunsync"
        )
    return units, report


_COLUMNS: dict[str, type] = {"code": str, "name": str, "tier": str, "parent": str, "illustrative": int}


def _check_unit(unit: Unit) -> None:
    full = normalize_code(unit.code)
    if full != unit.code:
        raise UnitCodeError(f"unit code {unit.code!r} must be stored in its 12-digit form {full}")
    tier, parent = tier_of(full), parent_of(full)
    if (unit.tier, unit.parent) != (tier, parent):
        raise UnitCodeError(
            f"unit {full} has tier {unit.tier!r} and parent {unit.parent!r}, "
            f"but its code says tier {tier!r} and parent {parent!r}"
        )
    if not unit.name.strip():
        raise ValueError(f"unit {full} has an empty name")


def load_units(db: Database, units: Iterable[Unit]) -> int:
    """Upsert ``units`` into table ``units`` in one transaction; return how many rows were written.

    Every unit is checked first (12-digit code, tier and parent matching the code, a name), so a
    bad unit raises before anything is written.
    """
    rows: list[dict[str, Any]] = []
    for unit in units:
        _check_unit(unit)
        rows.append({"code": unit.code, "name": unit.name, "tier": unit.tier,
                     "parent": unit.parent, "illustrative": int(unit.illustrative)})
    with db.atomic():
        table = db.table("units")
        if not table.exists():
            table.create(_COLUMNS, pk="code", not_null={"name", "tier", "illustrative"})
        table.create_index(["parent"], if_not_exists=True)
        if rows:
            table.upsert_all(rows, pk="code")
    return len(rows)


def remove_illustrative(db: Database, keep: Iterable[str]) -> list[str]:
    """Delete the illustrative units (the sample tree's invented ones) except those in ``keep`` and the
    units above them, in one transaction; return the codes deleted, in order."""
    if not db.table("units").exists():
        return []
    kept: set[str] = set()
    for code in keep:
        try:
            kept.update((normalize_code(code), *ancestors(code)))
        except UnitCodeError:
            continue
    with db.atomic():
        gone = [str(row["code"]) for row in db.query("select code from units where illustrative order by code")
                if row["code"] not in kept]
        db.conn.executemany("delete from units where code = ?", [(code,) for code in gone])
    return gone


def _select(db: Database, where: str, params: list[str]) -> list[Unit]:
    if not db.table("units").exists():
        return []
    sql = f"select code, name, tier, parent, illustrative from units where {where} order by code"
    return [
        Unit(
            code=str(row["code"]),
            name=str(row["name"]),
            tier=str(row["tier"]),
            parent=None if row["parent"] is None else str(row["parent"]),
            illustrative=bool(row["illustrative"]),
        )
        for row in db.query(sql, params)
    ]


def get_unit(db: Database, code: str) -> Unit | None:
    """The stored unit with ``code`` (any accepted form), or None."""
    found = _select(db, "code = ?", [normalize_code(code)])
    return found[0] if found else None


def names(db: Database) -> dict[str, str]:
    "Every unit's name in the stored tree, by code (none before ``cunsync units import``)"
    if not db["units"].exists():
        return {}
    return {str(code): str(name) for code, name in db.execute("SELECT code, name FROM units")}


def children(db: Database, code: str) -> list[Unit]:
    """Stored units whose parent is ``code``, ordered by code."""
    return _select(db, "parent = ?", [normalize_code(code)])


def villages_under(db: Database, code: str) -> list[Unit]:
    """Stored villages under ``code`` (a village gives itself), ordered by code."""
    lo, hi = descendant_range(code)
    return _select(db, "tier = 'village' and code between ? and ?", [lo, hi])
