"""Shared test settings. In CI (CI=true), Hypothesis runs derandomized: the same examples every run, so a
red build always reproduces; locally it explores new examples each run."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
