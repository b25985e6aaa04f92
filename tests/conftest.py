"""Shared test settings. In CI (CI=true), Hypothesis runs derandomized: the same examples every run, so a
red build always reproduces; locally it explores new examples each run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# node_db, node, enrol, make_tablet: real nodes on loopback, for tests/e2e, tests/browser and tests/faults
pytest_plugins = ["e2e_fixtures"]

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def umask_022() -> Iterator[None]:
    "The umask of Debian's users and of a systemd service without UMask=: files made plainly are 0644"
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)
