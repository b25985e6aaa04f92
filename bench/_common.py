"""Shared helpers for the bench scripts: machine info, medians, a figures table, the final JSON line,
and a cProfile wrapper.

Every bench script prints a human-readable table and then, as its last line on stdout, one JSON object
of its figures, so a CI job or a later run can compare results with ``tail -n1 | jq``.
"""

from __future__ import annotations

import cProfile
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere, installed or not
    sys.path.insert(0, str(ROOT))

T = TypeVar("T")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    "What a figure depends on besides the code: interpreter, SQLite, CPU, load"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(terse=True),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load1": round(load, 2) if load is not None else None,
    }


def print_machine(file: Any = sys.stdout) -> None:
    m = machine_info()
    print(
        f"# python {m['python']}, sqlite {m['sqlite']}, {m['platform']}, {m['cpu']} x{m['cpus']}, "
        f"load {m['load1']}",
        file=file,
    )


def pace_ms(rounds: int = 5) -> float:
    """How fast this machine runs right now: the median CPU milliseconds of a fixed loop (50,000 rows
    into an in-memory SQLite table, then 100,000 dict writes). The machines are shared and their speed
    drifts by up to 1.8x from one minute to the next; absolute figures of two runs compare only at a
    similar pace. Scripts print it before and after their timed part."""
    rows = [(i, "x" * 40, "张三" * 10) for i in range(50_000)]
    times = []
    for _ in range(rounds):
        t = time.process_time()
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c TEXT)")
        conn.executemany("INSERT INTO t VALUES (?,?,?)", rows)
        conn.close()
        d: dict[int, tuple[int, int]] = {}
        for i in range(100_000):
            d[i % 5000] = (i, i)
        times.append((time.process_time() - t) * 1000)
    return round(statistics.median(times), 1)


def source_id(relpath: str) -> str:
    "A file of the project and a short hash of its content: which version of the code a figure is for"
    data = (ROOT / relpath).read_bytes()
    return f"{relpath} sha256:{hashlib.sha256(data).hexdigest()[:12]} ({len(data.splitlines())} lines)"


def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    """Wall seconds and CPU seconds (this process) one call takes, after a full collection so an
    earlier run's garbage is not billed to it. Wall well above CPU means waiting: on fsync, or on a
    CPU the machine's other tenants hold."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def fmt_num(x: float) -> str:
    "12,345 / 1.23 / 0.0123: thousands separators for big numbers, three significant-ish digits else"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], file: Any = sys.stdout) -> None:
    "A plain fixed-width table; numbers right-aligned"
    cells = [[h for h in headers]] + [
        [fmt_num(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else str(c) for c in r]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, numeric)).rstrip()

    print(line(cells[0]), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells[1:]:
        print(line(r), file=file)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "", 1).lstrip("-").isdigit() or s in ("inf", "-")


def emit_json(figures: dict[str, Any]) -> None:
    "The last line of a bench script's output: its figures as one JSON object"
    sys.stdout.flush()
    print(json.dumps(figures, ensure_ascii=False, sort_keys=False), flush=True)


def profile(fn: Callable[[], T], *, top: int = 25, file: Any = sys.stderr,
            also_tottime: int = 15) -> tuple[float, T]:
    """Run ``fn`` under cProfile; print the ``top`` functions by cumulative time (and, if asked, the
    heaviest by own time) to ``file``. Returns the profiled seconds and ``fn``'s result."""
    prof = cProfile.Profile()
    gc.collect()
    t0 = time.perf_counter()
    prof.enable()
    try:
        out = fn()
    finally:
        prof.disable()
    seconds = time.perf_counter() - t0
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    print(f"== profile: top {top} by cumulative time ({seconds:.2f} s profiled) ==", file=buf)
    st.sort_stats("cumulative").print_stats(top)
    if also_tottime:
        print(f"== profile: top {also_tottime} by own time ==", file=buf)
        st.sort_stats("tottime").print_stats(also_tottime)
    text = buf.getvalue().replace(str(ROOT) + os.sep, "")
    print(text, file=file, flush=True)
    return seconds, out


def uuid7_at(rng: random.Random, ms: int) -> str:
    "A UUIDv7 of the time ``ms`` (unix ms), its random bits from ``rng``: a record made at that time, reproducibly"
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rng.getrandbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
