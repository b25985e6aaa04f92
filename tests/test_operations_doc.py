"""docs/operations.md as an operator follows it, step by step."""

from __future__ import annotations

import re
from pathlib import Path

DOC = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    return DOC[start:DOC.index("\n## ", start + 1)]


def test_every_folder_the_systemd_unit_lets_the_node_write_is_made_by_the_install_steps_for_its_user() -> None:
    "systemd refuses to start a unit whose ReadWritePaths= folder is missing (226/NAMESPACE)"
    install = section("Install")
    made = set(re.findall(r"--home (\S+) --create-home cunsync", install))
    made.update(re.findall(r"install -d -o cunsync -g cunsync(?: -m \d+)? (\S+)", install))
    (line,) = re.findall(r"^ReadWritePaths=(.*)$", section("A systemd unit"), re.M)
    paths = line.split()
    assert paths and {p for p in paths if not p.startswith("-")} <= made, (paths, made)
