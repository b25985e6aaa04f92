"""Finding a resident the way a village worker types: name characters, pinyin (full, initials, or a mix
such as ``zhangs`` or ``zsan``), an ID number or a phone number, or part of any of them.

Names are turned into syllables with ``pypinyin`` (every reading of a heteronym such as 曾 zeng/ceng, so
a worker who guesses either finds the person); ü is written ``v``, as on a pinyin keyboard, and ``u``
also matches it. A query matches pinyin when it can be split, left to right, into non-empty prefixes of
consecutive syllables of the name: ``zhangsan``, ``zs``, ``zhangs``, ``zsan`` and ``san`` all find 张三.
"""

from __future__ import annotations

import itertools
import os
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

# pypinyin's phrase dictionary (about 45 MB resident) only helps to read words of several characters;
# names are read a character at a time here, every reading of each, so it is not loaded
os.environ.setdefault("PYPINYIN_NO_PHRASES", "1")
from pypinyin import Style, lazy_pinyin, pinyin  # noqa: E402

from .store import Record

#: More readings than this per name are cut off (a name of many heteronyms would multiply them).
MAX_READINGS = 64
#: The values of a resident that ``record_matches``, ``find_people`` and ``sort_key`` read: a list of
#: residents to search may hold only these.
FOUND_BY = ("name", "id_number", "phone")
_LATIN = re.compile(r"^[a-zü:]+$")
_DIGITS = re.compile(r"^[0-9xX+\- ]+$")


def sound(name: str) -> str:
    "A name as it sounds, tones left out, one reading per character: 张秀英 and 章秀英 both give 'zhang xiu ying'"
    return " ".join(lazy_pinyin(name.strip()))


@lru_cache(maxsize=32_768)  # a search normalizes its query and every resident's name: names repeat
def normalize(query: str) -> str:
    """What a query is compared as: full-width digits and letters as ASCII (NFKC: a Chinese input method
    in full-width mode types １３８ and Ｘ), lower case, no spaces, ü as v"""
    query = unicodedata.normalize("NFKC", query)
    return re.sub(r"\s+", "", query).lower().replace("ü", "v").replace("u:", "v")


@lru_cache(maxsize=20_000)
def readings(name: str) -> tuple[tuple[str, ...], ...]:
    """Every pinyin reading of a name, as tuples of syllables (non-Chinese characters kept as they are,
    lower case, one syllable per character)"""
    per_char: list[list[str]] = []
    for ch in name:
        if ch.isspace() or ch in "·•":
            continue
        options = pinyin(ch, style=Style.NORMAL, heteronym=True, errors=lambda c: c.lower())[0]
        variants: list[str] = []
        for s in options:
            s = s.lower()
            variants.append(s)
            if "v" in s:
                variants.append(s.replace("v", "u"))  # lv is also typed lu
        per_char.append(list(dict.fromkeys(variants)))
    return tuple(itertools.islice(itertools.product(*per_char), MAX_READINGS))


def _prefix_match(query: str, syllables: tuple[str, ...]) -> bool:
    "Whether the query splits into non-empty prefixes of consecutive syllables, from any syllable on"
    n = len(syllables)

    @lru_cache(maxsize=None)
    def rest(i: int, j: int) -> bool:
        if j == len(query):
            return True
        if i == n:
            return False
        syl = syllables[i]
        k = 0
        while k < len(syl) and j + k < len(query) and syl[k] == query[j + k]:
            k += 1
            if rest(i + 1, j + k):
                return True
        return False

    return any(rest(start, 0) for start in range(n))


@lru_cache(maxsize=20_000)
def _keys(name: str) -> tuple[frozenset[str], tuple[str, ...]]:
    "A name's syllables' first letters, and its readings both written out in full and as initials"
    rs = readings(name)
    firsts = frozenset(syl[0] for r in rs for syl in r if syl)
    return firsts, tuple(["".join(r) for r in rs] + ["".join(syl[:1] for syl in r) for r in rs])


def warm(names: Iterable[str]) -> None:
    "Work out the pinyin of these names now, so the first search is as fast as the next"
    for name in names:
        _keys(name)


def name_matches(query: str, name: str) -> bool:
    "Characters of the name, or pinyin of it"
    q = normalize(query)
    if not q:
        return False
    if q in normalize(name):
        return True
    if not _LATIN.match(q):
        return False
    firsts, spelled = _keys(name)
    if q[0] not in firsts:  # every pinyin match starts at the start of a syllable
        return False
    if any(q in s for s in spelled):  # full pinyin or initials: the common cases, without the search
        return True
    return any(_prefix_match(q, syl) for syl in readings(name))


def record_matches(query: str, data: dict[str, object]) -> bool:
    "A resident matches by name (characters or pinyin), by ID number or by phone"
    q = normalize(query)
    if not q:
        return False
    if _DIGITS.match(q):
        digits = q.replace("-", "").replace("+", "")
        for key in ("id_number", "phone"):
            value = str(data.get(key) or "").lower().replace("-", "").replace(" ", "")
            if digits and digits in value:
                return True
    return name_matches(q, str(data.get("name") or ""))


def sort_key(name: str) -> str:
    "Names in pinyin order, as a list of residents is read"
    r = readings(name)
    return " ".join(r[0]) if r else name


def find_people(people: Iterable[Record], query: str) -> list[Record]:
    """Residents matching a query, exact name, ID number or phone matches first, then in pinyin order"""
    q = normalize(query)
    found = [p for p in people if record_matches(q, p.data)]

    def rank(p: Record) -> tuple[int, str]:
        exact = q in (normalize(str(p.data.get("name", ""))), str(p.data.get("id_number", "")).lower(),
                      str(p.data.get("phone", "")))
        return (0 if exact else 1, sort_key(str(p.data.get("name", ""))))

    return sorted(found, key=rank)
