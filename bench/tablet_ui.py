"""Tablet app benchmark: how long the pages a village worker uses take on a village of residents.

    .venv/bin/python bench/tablet_ui.py                 # 2,000 residents, each with a need and a service
    .venv/bin/python bench/tablet_ui.py --scale 0.1     # 200, a quick check

Set-up (not timed): an encrypted tablet database (PIN) set up without a node, with the residents made by
``client.sample`` in one transaction. The app is driven in-process through Starlette's TestClient (no
socket; the figures are the app's own work: the handler, SQLite through SQLCipher, the template).

Timed, each the median of ``--repeat`` requests: unlocking (two scrypt key derivations: the pages' and
the background sync's connections); the residents list; the duplicate search by pinyin initials
(``zs``), by full pinyin, and by part of an ID number; a resident's page; registering one resident
(the POST, its checks and the write); the sync page. The first pinyin search is also reported on its
own, made right after unlocking while the app still works out the residents' pinyin in the background.

Goal: every page under 300 ms on this machine for a village of 2,000 (a tap should feel immediate).
The last line on stdout is one JSON object of the figures (milliseconds).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import _common as common  # also puts the project root on sys.path

# bench/concurrent.py would shadow the standard library's concurrent package that asyncio (starlette)
# imports: this folder leaves the path once _common is loaded
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from client import sample  # noqa: E402
from client.tablet import Tablet  # noqa: E402
from client.ui import TabletApp, create_app  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

VILLAGE = "510903001001"
PIN = "246810"
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


def build(path: Path, n: int, seed: int) -> tuple[str, str]:
    "A tablet with n residents, each with a need and a service; returns one resident's id and ID number"
    rng = random.Random(seed)
    tab = Tablet(path, pin=PIN)
    try:
        for k, v in (("device", "tab-bench"), ("user", "王芳"), ("unit", VILLAGE), ("tier", "village"),
                     ("server", "http://127.0.0.1:9")):
            tab.store.set_meta(k, v)
        first = ("", "")
        with tab.store.transaction():
            for i in range(n):
                values = sample.person(rng, VILLAGE)
                pid = tab.create("person", values)
                nid = tab.create("need", sample.need(rng, VILLAGE, pid))
                tab.create("service", sample.service(rng, VILLAGE, pid, nid, "养老服务"))
                if i == n // 2:
                    first = (pid, str(values.get("id_number") or ""))
    finally:
        tab.close()
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--residents", type=int, default=2000)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = max(1, int(args.residents * args.scale))
    common.print_machine()
    work = Path(tempfile.mkdtemp(prefix="cunsync-bench-ui-"))
    try:
        db = work / "tablet.db"
        pid, id_number = build(db, n, args.seed)
        tapp = TabletApp(db, port=PORT)
        figures: dict[str, Any] = {"residents": n}
        rows = []
        with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
            def post(url: str, data: dict[str, Any]) -> Any:
                return c.post(url, data={"csrf": tapp.csrf, **data}, headers={"origin": ORIGIN})

            wall, _, r = common.timed(lambda: post("/unlock", {"pin": PIN}))
            assert r.status_code == 303, r.text
            figures["unlock_ms"] = wall * 1000
            rows.append(("unlock (PIN, two connections)", wall * 1000))
            def found_at(q: str) -> str:
                "The duplicate search's results page for ``q``: the form posts it, the page names a token"
                r = post("/people/new/find", {"q": q})
                assert r.status_code == 303 and "s=" in r.headers["location"], r.text
                return str(r.headers["location"])

            cold = found_at("zs")
            wall, _, r = common.timed(lambda: c.get(cold))
            assert r.status_code == 200 and 'matches"' in r.text, r.text[:500]  # the search's results
            figures["search_initials_cold_ms"] = wall * 1000
            rows.append(("duplicate search 'zs', just unlocked", wall * 1000))
            pages = {
                "people_list": ("/people", {}),
                "search_initials": (found_at("zs"), {}),
                "search_full_pinyin": (found_at("zhangxiuying"), {}),
                "search_id_number": (found_at(id_number[6:14] or "1942"), {}),
                "resident_page": (f"/people/{pid}", {}),
                "sync_page": ("/sync", {}),
            }
            for key, (url, params) in pages.items():
                times = []
                for _ in range(args.repeat):
                    wall, _, r = common.timed(lambda: c.get(url, params=params or None))  # {} would drop s=
                    assert r.status_code == 200, (url, r.status_code)
                    assert "s=" not in url or 'matches"' in r.text, r.text[:300]  # a search's results
                    times.append(wall * 1000)
                figures[f"{key}_ms"] = common.median(times)
                rows.append((f"{url.split('?')[0]} ({key})" if "s=" in url else f"{url} {params or ''}".strip(),
                             common.median(times)))
            times = []
            for i in range(args.repeat):
                wall, _, r = common.timed(lambda: post("/people/new", {
                    "searched": "测试", "name": f"测试{i}", "groups": ["老年人"]}))
                assert r.status_code == 303, r.text
                times.append(wall * 1000)
            figures["register_ms"] = common.median(times)
            rows.append(("register a resident (POST)", common.median(times)))
        tapp.close()
        print()
        common.print_table(["page", "ms (median)"], rows)
        slowest = max(v for k, v in figures.items() if k.endswith("_ms") and k != "unlock_ms")
        figures["slowest_page_ms"] = slowest
        print(f"\nslowest page: {slowest:.0f} ms (goal: under 300 ms for 2,000 residents)")
        common.emit_json({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
