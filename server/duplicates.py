"""Finding residents who look like the same person, for township staff to merge.

Three signs, strongest first:

    same_id        the same ID number (身份证号), in any village of the township
    same_birth     the same name and the same birth date, in any village
    same_name      in one village, the same name (and nothing, such as a birth date, tells them apart)
    same_pinyin    in one village, names that sound the same (张秀英 / 章秀英: zhang xiu ying)
    one_apart      in one village, names one character apart (王建国 / 王建华, 李明 / 李明明)

Near names are common among different people, so a near-name pair is dropped when the two residents
hold different birth dates or different ID numbers: those tell them apart. Every pair found is only a
suggestion; staff look and decide. Residents already merged (deleted) are not considered, nor those an older
version left half-merged (``half_merged``: restored after their merge, so current yet merged into another):
no merge takes them, so the page lists them apart, with the reason, for staff to finish the merge or keep
them as residents of their own (``server.workbench``). What a merged-away resident received after her merge
(``late_changes``) is shown on the kept resident's page.

Staff who find that a pair is two people mark it so (``dismiss``): the node keeps the pair with the
reasons it was found for, and who said so. The pair stays off the list until a reason it was not
dismissed for appears (two near names that later get the same ID number come back).
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync import checks
from sync.lookup import sound
from sync.store import Change, Record, Store

REASONS = {"same_id": "身份证号相同", "same_birth": "姓名和出生日期相同", "same_name": "同村同名",
           "same_pinyin": "同村、姓名读音相同",
           "one_apart": "同村、姓名只差一个字"}


#: Why a resident left half-merged is not suggested, by where its merge leads
HALF_MERGED = {"restored": "已合并到另一位居民，之后又被恢复（旧版本允许这样做）",
               "kept_gone": "已合并到另一位居民，之后又被恢复；它合并到的居民现在已不存在、已移出或同样未完成合并"}
#: A merge or a dismissal naming a resident left half-merged, refused
HALF_MERGED_REFUSED = ("{name}是旧版本留下的未完成合并（已合并到另一位居民，之后又被恢复），不能再合并或标记。"
                       "请看疑似重复页面下方的“未完成的旧合并”。")


@dataclass
class HalfMerged:
    "A current resident that an older version left merged into another (it restored the merged-away one)"

    rec: Record
    kept: Record | None  # where its merge leads (following merges), if that resident is current

    @property
    def reason(self) -> str:
        return HALF_MERGED["restored" if self.kept is not None else "kept_gone"]


def half_merged(store: Store, people: Iterable[Record]) -> list[HalfMerged]:
    "The residents among ``people`` (current ones) that are merged into another all the same"
    out = []
    for p in people:
        if p.merged_into is None:
            continue
        end = store.get(store.resolve_id(p.id))
        current = end is not None and end.coll == "person" and not end.deleted and end.merged_into is None
        out.append(HalfMerged(p, end if current else None))
    return out


def late_changes(store: Store, merged: Record, fields: Iterable[str]) -> list[Change]:
    """The changes of ``fields`` a resident merged away received after her merge: those this node applied
    after her ``merged_into`` op (by sequence number, so also a tablet's edit made before it heard of the
    merge but synced after it). The merge filled the kept resident from what she held then; these values
    (an older tablet's restore and the worker's edits after it, which ``Node._follow_restores`` deleted again)
    stay only in her history, for staff to copy to the kept resident where they are right."""
    history = store.history(merged.id)
    at = max((h.seq for h in history if h.field == "merged_into" and h.new == merged.merged_into), default=None)
    wanted = set(fields)
    return [h for h in history if at is not None and h.seq > at and h.field in wanted]


@dataclass
class Pair:
    "Two residents that may be one person, and why"

    a: Record
    b: Record
    reasons: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [REASONS[r] for r in self.reasons]


@functools.lru_cache(maxsize=65536)  # a township's names repeat, and pinyin is the slow part of find_pairs
def pinyin_key(name: str) -> str:
    "A name as it sounds, tones left out: 张秀英 and 章秀英 both give 'zhang xiu ying'"
    return sound(name)


def one_apart(a: str, b: str) -> bool:
    "Whether two names differ by one character changed, added or left out"
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@functools.lru_cache(maxsize=32768)  # worked out again for every resident each time the page pairs them
def _near_keys(name: str) -> tuple[str, ...]:
    "Keys two names one character apart share: the name with one position blanked, or one left out; each once"
    keys = [name]
    for i in range(len(name)):
        keys += ("~" + name[:i] + "?" + name[i + 1:], name[:i] + name[i + 1:])
    return tuple(dict.fromkeys(keys))


def _marks(p: Record) -> tuple[Any, Any]:
    "What tells a resident apart from another of a near name: her birth date and ID number, as typed keys"
    return (checks.typed_key("birth_date", p.data.get("birth_date")),
            checks.typed_key("id_number", p.data.get("id_number")))


def _tells_apart(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    "Whether two residents' ``_marks`` differ where both have one"
    return any(x and y and x != y for x, y in zip(a, b))


def _birth_alike(group: Sequence[Record], marks: Mapping[str, tuple[Any, Any]]) -> Iterator[tuple[Record, Record]]:
    """The pairs of a group that their birth dates do not tell apart: those born the same day, and those
    without a birth date with every other. A village's residents of one surname share a near-name key
    (张? for 张伟, 张敏...), and nearly all of them are told apart by their birth dates: not pairing those
    at all is what keeps a township of 30,000 residents to seconds"""
    born: dict[Any, list[Record]] = defaultdict(list)
    unknown: list[Record] = []
    for p in group:
        (born[marks[p.id][0]] if marks[p.id][0] else unknown).append(p)
    for same in born.values():
        yield from itertools.combinations(same, 2)
    for i, a in enumerate(unknown):
        yield from ((a, b) for b in unknown[i + 1:])
        yield from ((a, b) for same in born.values() for b in same)


def find_pairs(people: Sequence[Record]) -> list[Pair]:
    """Pairs of residents that may be the same person, strongest signs first. ``people`` are live
    person records (one township's); those merged into another (``half_merged``) are left out."""
    people = [p for p in people if p.merged_into is None]
    marks = {p.id: _marks(p) for p in people}  # once a resident, not once a candidate pair
    pairs: dict[tuple[str, str], Pair] = {}

    def note(a: Record, b: Record, reason: str) -> None:
        if a.id == b.id:
            return
        x, y = (a, b) if a.id < b.id else (b, a)
        p = pairs.setdefault((x.id, y.id), Pair(x, y))
        if reason not in p.reasons:
            p.reasons.append(reason)

    def groups(key_of: Mapping[Any, list[Record]]) -> Iterable[list[Record]]:
        return (g for g in key_of.values() if len(g) > 1)

    by_id: dict[str, list[Record]] = defaultdict(list)
    by_birth: dict[tuple[str, str], list[Record]] = defaultdict(list)
    by_sound: dict[tuple[str | None, str], list[Record]] = defaultdict(list)
    by_near: dict[tuple[str | None, str], list[Record]] = defaultdict(list)
    for p in people:
        name = str(p.data.get("name") or "").strip()
        if p.data.get("id_number"):
            by_id[marks[p.id][1]].append(p)
        if name and p.data.get("birth_date"):
            by_birth[(name, str(p.data["birth_date"]))].append(p)
        if name:
            by_sound[(p.unit, pinyin_key(name))].append(p)
            for k in _near_keys(name):
                by_near[(p.unit, k)].append(p)
    for g in groups(by_id):
        for i, a in enumerate(g):
            for b in g[i + 1:]:
                note(a, b, "same_id")
    for g2 in groups(by_birth):
        for i, a in enumerate(g2):
            for b in g2[i + 1:]:
                note(a, b, "same_birth")
    for reason, index in (("same_pinyin", by_sound), ("one_apart", by_near)):
        for g3 in groups(index):
            for a, b in _birth_alike(g3, marks):
                na, nb = str(a.data.get("name", "")), str(b.data.get("name", ""))
                if reason == "one_apart" and not one_apart(na, nb):
                    continue  # a shared key of identical names, or of two names two apart
                if _tells_apart(marks[a.id], marks[b.id]):
                    continue
                if reason == "same_pinyin" and na == nb:
                    if "same_birth" not in _reasons(pairs, a, b):
                        note(a, b, "same_name")
                    continue
                note(a, b, reason)
    order = list(REASONS)
    return sorted(pairs.values(), key=lambda p: (min(order.index(r) for r in p.reasons), p.a.unit or "",
                                                 str(p.a.data.get("name", "")), p.a.id, p.b.id))


def _reasons(pairs: dict[tuple[str, str], Pair], a: Record, b: Record) -> list[str]:
    key = (a.id, b.id) if a.id < b.id else (b.id, a.id)
    return pairs[key].reasons if key in pairs else []


# -- pairs staff said are two people ---------------------------------------------------------------

_SQL = """
CREATE TABLE IF NOT EXISTS duplicate_dismissals (
    a TEXT NOT NULL, b TEXT NOT NULL, reasons TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (a, b)) WITHOUT ROWID
"""


def ensure_table(store: Store) -> None:
    with store.transaction() as c:
        c.execute(_SQL)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def dismissed(store: Store) -> dict[tuple[str, str], tuple[set[str], str, int]]:
    "Every pair staff said is two people: (a, b) -> (the reasons it was found for, who, when in unix s)"
    return {(a, b): (set(r.split(",")), by, at) for a, b, r, by, at in store.conn.execute(
        "SELECT a, b, reasons, by, at FROM duplicate_dismissals")}


def dismiss(store: Store, pair: Pair, by: str, at: int) -> None:
    "Note that a pair is two people, for the reasons it is found for now"
    with store.transaction() as c:
        c.execute("INSERT OR REPLACE INTO duplicate_dismissals VALUES (?,?,?,?,?)",
                  (*_key(pair.a.id, pair.b.id), ",".join(sorted(pair.reasons)), by, at))


def undismiss(store: Store, a: str, b: str) -> bool:
    "Put a dismissed pair back on the list; whether it was dismissed"
    with store.transaction() as c:
        return c.execute("DELETE FROM duplicate_dismissals WHERE a = ? AND b = ?", _key(a, b)).rowcount > 0


def split(pairs: Iterable[Pair], said: Mapping[tuple[str, str], tuple[set[str], str, int]]
          ) -> tuple[list[Pair], list[Pair]]:
    "(pairs to show, pairs staff dismissed): a pair found for a reason it was not dismissed for shows again"
    show: list[Pair] = []
    hidden: list[Pair] = []
    for p in pairs:
        d = said.get(_key(p.a.id, p.b.id))
        (hidden if d is not None and set(p.reasons) <= d[0] else show).append(p)
    return show, hidden
