"""Run the fault scenarios alone and print what they did:

    python -m tests.faults                     # every scenario, the CI seed
    python -m tests.faults --seed 7            # other faults
    python -m tests.faults --only full_disk    # one scenario (repeat --only for more)

A table — scenario, faults injected, ops acknowledged, ops lost (must be 0), seconds, what happened —
then, as the last line, one JSON object: ``faults``, ``acknowledged``, ``lost`` (and ``failed``, the
scenarios whose checks failed). The exit status is 1 if any op was lost or any check failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .scenarios import SCENARIOS, Outcome
from .test_faults import SEED


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only this scenario")
    ap.add_argument("--keep", action="store_true", help="keep the work directories (node logs, databases)")
    args = ap.parse_args(argv)

    rows: list[tuple[Outcome, float, str]] = []
    failed: list[str] = []
    for name, scenario in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        work = Path(tempfile.mkdtemp(prefix=f"cunsync-faults-{name}-"))
        print(f"# {name} (seed {args.seed}) in {work}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            out = scenario(work, args.seed)
            status = "ok" if out.lost == 0 else "LOST OPS"
        except Exception:
            traceback.print_exc()
            out = Outcome(name, 0, 0, 0, "see the traceback above")
            status = "FAILED"
            failed.append(name)
        rows.append((out, time.perf_counter() - t0, status))
        if not args.keep and status == "ok":
            shutil.rmtree(work, ignore_errors=True)

    table = [("scenario", "faults injected", "ops acknowledged", "ops lost", "seconds", "result", "detail")]
    table += [(o.scenario, str(o.faults), f"{o.acknowledged:,}", str(o.lost), f"{s:.1f}", st, o.detail)
              for o, s, st in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) if j in (0, 5) else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
              + "  " + r[-1])
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    totals = {"faults": sum(o.faults for o, _, _ in rows),
              "acknowledged": sum(o.acknowledged for o, _, _ in rows),
              "lost": sum(o.lost for o, _, _ in rows),
              "failed": failed}
    print(json.dumps(totals), flush=True)
    return 1 if failed or totals["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
