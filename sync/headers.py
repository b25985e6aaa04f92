"""The HTTP headers every answer carries, on a node and in a tablet's app: pages and API answers show
residents' personal data and secrets (one-time enrolment codes), so no browser keeps them in its cache
(Back after signing out shows nothing), no other site shows them inside a frame, and no answer is sniffed
as another content type. Each app adds a Content-Security-Policy of its own, with ``frame-ancestors 'none'``.
"""

from __future__ import annotations

#: As ASGI header pairs.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make Chromium send Origin: null
    (b"cache-control", b"no-store"),
]
