"""What the CSV and XLSX exports share: text that a spreadsheet would run as a formula stays text.

Excel and LibreOffice take a cell starting with = + - @ (or a tab or carriage return before one) as a
formula, so a category code or a note like ``=HYPERLINK(...)`` would become a live link in the file staff
open (OWASP, "CSV injection"). CSV cells like that get a leading apostrophe (``formula_safe``); XLSX cells
are written as string cells, which no spreadsheet runs.
"""

from __future__ import annotations

#: How a cell that a spreadsheet runs as a formula starts.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: object) -> object:
    "A CSV cell as written: text that would start a formula gets a leading apostrophe, anything else is as is"
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value
