"""The fault-injection suite: a real node and real tablets on 127.0.0.1, with the node killed, the link
cut, tablets killed and the disk full; nothing acknowledged may be lost. The scenarios live in
``scenarios.py``; pytest runs them (``test_faults.py``) and so does ``python -m tests.faults``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the shared end-to-end harness (pytest puts it on the path through pyproject's ``pythonpath``; the
# runner, ``python -m tests.faults``, needs it too)
_E2E = str(Path(__file__).resolve().parents[1] / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)
