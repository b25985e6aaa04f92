"""What the CSV and XLSX exports share: text that a spreadsheet would run as a formula stays text.

Excel and LibreOffice take a cell starting with = + - @ (or a tab or carriage return before one) as a
formula, so a category code or a note like ``=HYPERLINK(...)`` would become a live link in the file staff
open (OWASP, "CSV injection"). CSV cells like that get a leading apostrophe (``formula_safe``); XLSX cells
are written as string cells, which no spreadsheet runs. An XLSX file cannot hold most control characters
(a note pasted from elsewhere, a title sent through the API may carry one): ``xlsx_text`` leaves them out
rather than fail the whole export.
"""

from __future__ import annotations

import re

#: How a cell that a spreadsheet runs as a formula starts.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: object) -> object:
    "A CSV cell as written: text that would start a formula gets a leading apostrophe, anything else is as is"
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


#: What an XLSX cell cannot hold: the control characters but tab, newline and carriage return (as openpyxl's
#: ``ILLEGAL_CHARACTERS_RE``)
_NOT_IN_XLSX = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def xlsx_text(value: object) -> object:
    "An XLSX cell's value: text without the control characters the format cannot hold, anything else as is"
    return _NOT_IN_XLSX.sub("", value) if isinstance(value, str) else value
