"""A node's roll-up as people read it: its snapshot's cells grouped by the units one tier below the node
(a city's counties, a county's townships, a township's villages), with totals, resolution rates and
medians, and how fresh each child's figures are; and the same as CSV and XLSX for staff who work in Excel.

Suppressed cells (see ``server.snapshots``) add nothing to a total; the page, the exports (a 说明 table) and
``cunsync snapshot pull`` say how many were withheld, and under which threshold: the township's own, for a
township node; for a county or city, each township's as its last snapshot said (``Source.suppress_below``),
naming a township at 0 as one that withholds nothing. A township's closed month is one row of the page
and of the exports' 已关账月份 table (``MonthClosure``), with each part revised since (需求, 服务, 办结)
and its changed cells as staff read them: the village by name, a withheld value as <3（未上报）.
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sync import units as unitlib
from sync.schema import CATEGORIES, STATUSES

from .pages import age_text, local_time
from .snapshots import GROUPS, MONTHLY, RESOLVED, CellDiff, Closure, Part, Source
from .spreadsheet import formula_safe, xlsx_text

Triple = tuple[int, int, int]
#: The sections whose cells may be withheld, and those a closed month freezes, as tables name them.
SECTION_NAMES = {"needs": "需求", "services": "服务", "resolved": "办结", "residents": "居民"}


def child_of(top: str, code: str) -> str:
    "The unit directly under ``top`` that ``code`` lies in (``code`` itself when it is directly under)"
    c = code
    while (p := unitlib.parent_of(c)) is not None and p != top:
        c = p
    return c


def median_of(hist: Mapping[int, int]) -> float | None:
    "The median of values given as value -> how many times"
    n = sum(hist.values())
    if n == 0:
        return None
    lo_at, hi_at = (n - 1) // 2, n // 2
    seen = 0
    lo = hi = None
    for value in sorted(hist):
        nxt = seen + hist[value]
        if lo is None and lo_at < nxt:
            lo = value
        if hi_at < nxt:
            hi = value
            break
        seen = nxt
    assert lo is not None and hi is not None
    return (lo + hi) / 2


@dataclass
class Freshness:
    unit: str
    name: str
    taken_at: int
    pulled_at: int
    age: int | None
    error: str
    #: parts held from the child, or from a node under it, that the figures leave out as malformed
    bad_parts: list[str] = field(default_factory=list)

    @property
    def age_text(self) -> str:
        return age_text(self.age)


@dataclass
class Revision:
    "A part of a closed month changed since: its section (需求, 服务, 办结), revision number and changed cells"

    section: str
    revision: int
    #: each changed cell as pages say it: 凤凰村 · 养老服务：<3（未上报） → 3 次，90 分钟，3 人次
    changes: list[str]


@dataclass
class MonthClosure:
    "A township's closed month, one row for its parts: when and by whom it was closed, and each part revised"

    unit: str
    month: str
    closed_at: int
    closed_by: str
    revisions: list[Revision] = field(default_factory=list)


@dataclass
class Rollup:
    unit: str
    tier: str
    names: dict[str, str]
    children: list[str]
    #: needs by child, then (category, status)
    needs: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    #: services by month, then child: (count, minutes, people served)
    services: dict[str, dict[str, Triple]] = field(default_factory=dict)
    #: services by type: (count, minutes, people served)
    service_types: dict[str, Triple] = field(default_factory=dict)
    #: days to resolve by child: days -> needs
    resolved_days: dict[str, dict[int, int]] = field(default_factory=dict)
    residents: dict[str, dict[str, int]] = field(default_factory=dict)
    devices: dict[str, Triple] = field(default_factory=dict)
    #: cells withheld as small, by section
    suppressed: dict[str, int] = field(default_factory=dict)
    #: the small-cell threshold each township under (or at) this node published with, where known
    thresholds: dict[str, int] = field(default_factory=dict)
    closures: list[MonthClosure] = field(default_factory=list)
    #: villages' progress by task, then child: (未开始 or not reported, 进行中, 已完成)
    progress: dict[str, dict[str, Triple]] = field(default_factory=dict)
    #: the tasks set by this node's unit or a unit above it, the soonest due first: what the page lists
    tasks: list[dict[str, object]] = field(default_factory=list)
    freshness: list[Freshness] = field(default_factory=list)
    taken_at: int = 0
    watermark: int = 0

    def name(self, code: str) -> str:
        "A unit's name; one the unit tree lacks as the workbench names it (``unitlib.unnamed``)"
        return self.names.get(code) or unitlib.unnamed(code)

    # -- figures the pages show -----------------------------------------------------------------

    def need_total(self, child: str | None = None, *, status: str | None = None,
                   category: str | None = None) -> int:
        kids = [child] if child is not None else list(self.needs)
        return sum(n for c in kids for (cat, st), n in self.needs.get(c, {}).items()
                   if (status is None or st == status) and (category is None or cat == category))

    def resolution_rate(self, child: str | None = None) -> float | None:
        "Needs resolved or closed, of all needs not cancelled"
        total = self.need_total(child) - self.need_total(child, status="已取消")
        done = sum(self.need_total(child, status=s) for s in RESOLVED)
        return done / total if total else None

    def median_days(self, child: str | None = None) -> float | None:
        hist: dict[int, int] = defaultdict(int)
        for c, h in self.resolved_days.items():
            if child is None or c == child:
                for d, n in h.items():
                    hist[d] += n
        return median_of(hist)

    def resolved_count(self, child: str | None = None) -> int:
        return sum(n for c, h in self.resolved_days.items() if child is None or c == child for n in h.values())

    def service_total(self, child: str | None = None) -> Triple:
        rows = [t for m in self.services.values() for c, t in m.items() if child is None or c == child]
        return (sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows))

    def service_total_month(self, month: str) -> int:
        return sum(t[0] for t in self.services.get(month, {}).values())

    def months(self) -> list[str]:
        return sorted(self.services)

    def resident_total(self, group: str, child: str | None = None) -> int:
        return sum(g.get(group, 0) for c, g in self.residents.items() if child is None or c == child)

    def categories(self) -> list[str]:
        seen = {cat for m in self.needs.values() for cat, _ in m}
        return [c for c in CATEGORIES if c in seen] + sorted(seen - set(CATEGORIES))

    def withheld(self) -> int:
        "How many cells were withheld as small"
        return sum(self.suppressed.values())

    def threshold_values(self) -> list[int]:
        "The distinct small-cell thresholds cells were withheld under, where known (a township at 0 withholds none)"
        return sorted({t for t in self.thresholds.values() if t > 0})

    def threshold_text(self) -> str:
        """Which cells were withheld, as pages say it: 小于 3 的格子不上报, and the townships that withhold
        nothing by name: （凤凰街道不设阈值，全部上报）"""
        found = self.threshold_values()
        if len(found) == 1:
            text = f"小于 {found[0]} 的格子不上报"
        elif found:
            text = f"各镇街小于其所设阈值（{'、'.join(map(str, found))}）的格子不上报"
        else:
            text = "各镇街数量过小的格子不上报"
        exact = [self.name(u) for u, t in sorted(self.thresholds.items()) if t == 0]
        return text + (f"（{'、'.join(exact)}不设阈值，全部上报）" if exact else "")

    def cell_text(self, township: str, section: str, values: list[int | None] | None) -> str:
        """A closed month's cell as pages say it: 无 (none), <3（未上报） (withheld under the township's
        threshold), a count, or a service cell's 3 次，90 分钟，3 人次"""
        if values is None:
            return "无"
        if any(v is None for v in values):
            below = self.thresholds.get(township)
            return f"<{below}（未上报）" if below else "数量过小（未上报）"
        if section == "services":
            return "{} 次，{} 分钟，{} 人次".format(*values)
        return str(values[0])

    def change_text(self, township: str, section: str, d: CellDiff) -> str:
        "A changed cell of a closed month: 凤凰村 · 养老服务：<3（未上报） → 3 次，90 分钟，3 人次"
        key = [self.name(d.k[0]), *(f"用时 {k} 天" if section == "resolved" else k for k in d.k[1:])]
        return (f"{' · '.join(key)}：{self.cell_text(township, section, d.before)} → "
                f"{self.cell_text(township, section, d.after)}")

    def task_progress(self, task: str, child: str | None = None) -> Triple:
        "How many villages (of one child, or all) are 未开始 or have not reported, 进行中, 已完成 on a task"
        rows = [t for c, t in self.progress.get(task, {}).items() if child is None or c == child]
        return (sum(r[0] for r in rows), sum(r[1] for r in rows), sum(r[2] for r in rows))

    def stale(self) -> list[Freshness]:
        "The children whose figures are old, or leave out a malformed part"
        return [f for f in self.freshness if f.error or f.bad_parts]


def build(unit: str, parts: Mapping[str, Part], sources: Iterable[Source] = (), *,
          names: Mapping[str, str] | None = None, taken_at: int = 0, watermark: int = 0,
          now: float | None = None, suppress_below: int | None = None) -> Rollup:
    """A roll-up of ``parts`` for the node at ``unit``; ``suppress_below``: a township node's own small-cell
    threshold (the townships below a county or city say theirs in ``sources``)"""
    at = now if now is not None else time.time()
    sources = list(sources)
    ro = Rollup(unit=unit, tier=unitlib.tier_of(unit), names=dict(names or {}), children=[],
                taken_at=taken_at, watermark=watermark)
    ro.thresholds = {s.unit: s.suppress_below for s in sources
                     if s.tier == "township" and s.suppress_below is not None}
    if ro.tier == "township" and suppress_below is not None:
        ro.thresholds[unit] = suppress_below
    kids: set[str] = set()
    suppressed: dict[str, int] = defaultdict(int)
    needs: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    services: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    types: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    days: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    residents: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    devices: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    progress: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    closures: list[tuple[str, Closure]] = []
    for name, part in parts.items():
        section, _, month = name.partition("/")
        closures.extend((section, cl) for cl in part.closures)
        for cell in part.cells:
            child = child_of(unit, cell.k[0])
            kids.add(child)
            if any(v is None for v in cell.v):
                suppressed[section] += 1
                continue
            v = [int(x or 0) for x in cell.v]
            if section == "needs":
                needs[child][(cell.k[1], cell.k[2])] += v[0]
            elif section == "services":
                row = services[month][child]
                trow = types[cell.k[1]]
                for i in range(3):
                    row[i] += v[i]
                    trow[i] += v[i]
            elif section == "resolved":
                days[child][int(cell.k[1])] += v[0]
            elif section == "residents":
                residents[child][cell.k[1]] += v[0]
            elif section == "devices":
                for i in range(3):
                    devices[child][i] += v[i]
            elif section == "tasks":  # [进行中, 已完成] of one village
                progress[cell.k[1]][child][2 if v[1] else 1 if v[0] else 0] += 1
    ro.freshness = _freshness(unit, sources, ro.name, at)
    kids.update(f.unit for f in ro.freshness)
    ro.children = sorted(kids)
    ro.needs = {c: dict(m) for c, m in needs.items()}
    ro.services = {m: {c: (r[0], r[1], r[2]) for c, r in cs.items()} for m, cs in services.items()}
    ro.service_types = {t: (r[0], r[1], r[2]) for t, r in types.items()}
    ro.resolved_days = {c: dict(h) for c, h in days.items()}
    ro.residents = {c: dict(g) for c, g in residents.items()}
    ro.devices = {c: (r[0], r[1], r[2]) for c, r in devices.items()}
    ro.progress = {t: {c: (r[0], r[1], r[2]) for c, r in cs.items()} for t, cs in progress.items()}
    ro.suppressed = dict(suppressed)
    ro.closures = _month_closures(ro, closures)
    return ro


def _month_closures(ro: Rollup, closures: Iterable[tuple[str, Closure]]) -> list[MonthClosure]:
    "Each township's closed month once (its parts are closed together), with the parts revised since"
    months: dict[tuple[str, str], MonthClosure] = {}
    order = {s: i for i, s in enumerate(MONTHLY)}  # 需求, 服务, 办结
    for section, cl in sorted(closures, key=lambda sc: order.get(sc[0], len(order))):
        row = months.setdefault((cl.month, cl.unit), MonthClosure(cl.unit, cl.month, cl.closed_at, cl.closed_by))
        if cl.closed_at > row.closed_at:
            row.closed_at, row.closed_by = cl.closed_at, cl.closed_by
        if cl.revision:
            row.revisions.append(Revision(SECTION_NAMES.get(section, section), cl.revision,
                                          [ro.change_text(cl.unit, section, d) for d in cl.diff]))
    return [months[k] for k in sorted(months)]


def _freshness(unit: str, sources: Iterable[Source], name: Callable[[str], str], at: float) -> list[Freshness]:
    """How fresh each child's figures are: as old as the oldest snapshot under it (a child's own, or one
    of the nodes below it that it last pulled: never pulled is oldest), with the child's own error or
    else the first of those nodes'. So a city sees a county as stale while a township under it is.
    Malformed parts left out of the figures, the child's or those nodes', are named too."""
    own: dict[str, Source] = {}
    below: dict[str, list[Source]] = defaultdict(list)
    for src in sources:
        if src.unit == unit or not unitlib.is_under(src.unit, unit):
            continue
        child = child_of(unit, src.unit)
        if src.unit == child:
            own[child] = src
        else:
            below[child].append(src)
    out = []
    for child, src in sorted(own.items()):
        taken_at = min(s.taken_at for s in [src, *below[child]])
        error = src.last_error or next((f"{name(s.unit)} ({s.unit}): {s.last_error}" for s in below[child]
                                        if s.last_error), "")
        bad = [*src.bad_parts, *(f"{name(s.unit)} ({s.unit}): {p}" for s in below[child] for p in s.bad_parts)]
        out.append(Freshness(child, name(child), taken_at, src.pulled_at,
                             int(at - taken_at) if taken_at else None, error, bad))
    return out


# -- exports --------------------------------------------------------------------------------------

def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return ""
    return f"{x * 100:.1f}%" if pct else f"{x:g}"


def tables(ro: Rollup) -> dict[str, list[list[object]]]:
    "The roll-up as named tables, header row first: what both exports write"
    kid = "下级单位代码"
    out: dict[str, list[list[object]]] = {}
    out["需求"] = [[kid, "下级单位", "需求类别", *STATUSES, "合计"]]
    for c in ro.children:
        for cat in ro.categories():
            row = [ro.need_total(c, category=cat, status=s) for s in STATUSES]
            if any(row):
                out["需求"].append([c, ro.name(c), cat, *row, sum(row)])
    out["服务"] = [["月份", kid, "下级单位", "服务次数", "服务时长(分钟)", "服务人次"]]
    for m in ro.months():
        for c, (n, minutes, people) in sorted(ro.services[m].items()):
            out["服务"].append([m, c, ro.name(c), n, minutes, people])
    out["办结"] = [[kid, "下级单位", "需求数(不含已取消)", "已解决或已关闭", "办结率", "办结天数中位数"]]
    for c in ro.children:
        total = ro.need_total(c) - ro.need_total(c, status="已取消")
        out["办结"].append([c, ro.name(c), total, sum(ro.need_total(c, status=s) for s in RESOLVED),
                          _fmt(ro.resolution_rate(c), pct=True), _fmt(ro.median_days(c))])
    out["居民"] = [[kid, "下级单位", *GROUPS]]
    for c in ro.children:
        out["居民"].append([c, ro.name(c), *(ro.resident_total(g, c) for g in GROUPS)])
    out["平板"] = [[kid, "下级单位", "在用平板", "7天内同步", "30天内同步"]]
    for c in ro.children:
        out["平板"].append([c, ro.name(c), *ro.devices.get(c, (0, 0, 0))])
    out["任务进度"] = [["任务", "截止日期", "状态", kid, "下级单位", "已完成", "进行中", "未开始或未报"]]
    for t in ro.tasks:  # villages (counted) at each stage of the tasks set here or above, as the page shows them
        tid, task = str(t["id"]), [t.get("title", ""), t.get("due_date") or "", t.get("status", "")]
        for c in ro.children:
            p = ro.task_progress(tid, c)
            out["任务进度"].append([*task, c, ro.name(c), p[2], p[1], p[0]])
        p = ro.task_progress(tid)
        out["任务进度"].append([*task, "", "合计", p[2], p[1], p[0]])
    out["数据来源"] = [[kid, "下级单位", "数据时间", "拉取时间", "距今", "最近错误", "格式有误、未计入的数据"]]
    for f in ro.freshness:
        out["数据来源"].append([f.unit, f.name, _when(f.taken_at), _when(f.pulled_at), f.age_text, f.error,
                             "；".join(f.bad_parts)])
    out["已关账月份"] = [["单位代码", "单位", "月份", "关账时间", "关账人", "关账后修订的部分", "修订次数", "修订内容"]]
    for cl in ro.closures:
        for r in cl.revisions or [Revision("", 0, ["无"])]:
            out["已关账月份"].append([cl.unit, ro.name(cl.unit), cl.month, _when(cl.closed_at), cl.closed_by,
                                   r.section, r.revision, "；".join(r.changes)])
    out["说明"] = [["项目", "说明"]]
    if ro.withheld():
        out["说明"].append(["未计入合计的格子", f"{ro.threshold_text()}，共 {ro.withheld()} 个格子未计入以上合计，"
                                              "合计因此偏少"])
        out["说明"].extend([f"{SECTION_NAMES.get(s, s)}：未计入的格子", n] for s, n in sorted(ro.suppressed.items()))
    else:
        out["说明"].append(["未计入合计的格子", "无"])
    return out


def _when(ts: int) -> str:
    return local_time(ts) if ts else ""


def to_csv(ro: Rollup) -> str:
    "Every table one after the other, each under its name, in one CSV (UTF-8 with BOM, for Excel)"
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    for name, rows in tables(ro).items():
        w.writerow([f"# {name}"])
        w.writerows([formula_safe(v) for v in row] for row in rows)
        w.writerow([])
    return buf.getvalue()


def to_xlsx(ro: Rollup) -> bytes:
    "One sheet per table, header rows bold and frozen; text is always a string cell, never a formula"
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    first = True
    for name, rows in tables(ro).items():
        ws = wb.active if first else wb.create_sheet()
        assert ws is not None
        first = False
        ws.title = name
        for row in rows:
            ws.append([xlsx_text(v) for v in row])
            for cell in ws[ws.max_row]:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # openpyxl makes "=..." a formula; a child's category code is text
        for cell in ws[1]:
            cell.font = Font(bold=True)
        ws.freeze_panes = "A2"
        for col in ws.columns:
            width = max(len(str(c.value or "")) for c in col)
            ws.column_dimensions[col[0].column_letter].width = min(40, 4 + width * 2)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
