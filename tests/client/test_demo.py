"""`make demo` (``cunsync demo``) end to end, as a user runs it: four tiers of real nodes on loopback, tablets
working offline, the merge, reference data down, an escalation round trip, and the city's roll-up checked
against the tablets' own records (the demo exits non-zero when they differ)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_harness import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_runs_four_tiers_and_its_figures_agree(tmp_path: Path) -> None:
    "Run in a folder of the user's, not the repository's, with --dir relative to it"
    out = subprocess.run([sys.executable, "-m", "client", "demo", "--dir", "demo", "--tablets", "3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's, from anywhere
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "the township's correction wins the concurrent edit" in text
    assert "open conflicts: 0" in text
    assert "the city's figures equal the tablets' ✓" in text
    assert "tablet-1 reads “汛期走访独居老人” and offers 防汛救灾" in text
    assert "tablet-1 sees the answer: 已办结 · 区民政局养老服务科 · 已协调社区食堂每日送餐上门" in text
    assert "遂宁市 sees, for 船山区: 已完成 1, 进行中 1, 未开始 1 (villages)" in text  # two of its three reported
    assert (tmp_path / "demo" / "city.db").exists() and (tmp_path / "demo" / "tablet-1.db").exists()


def test_the_sample_residents_pass_the_checks_a_worker_s_form_makes() -> None:
    "A demo user who edits a sample resident's ID number, gender or birth date is not told it was wrong"
    import random

    from client import sample
    from sync import checks

    rng = random.Random(7)
    for _ in range(200):
        p = sample.person(rng, "510903001001")
        assert {n: checks.check("person", n, v) for n, v in p.items()} == dict.fromkeys(p), p
        assert checks.disagreements(p, p) == {}, p
