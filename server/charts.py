"""Small charts drawn on the server as inline SVG: no JavaScript, readable on a tablet, printable.

    hbars(rows, legend)   horizontal stacked bars, one row per label, one segment per series
    columns(points)       vertical columns, one per label (e.g. services per month)

Every text is escaped; each chart carries a <title> for screen readers, and the numbers are in the
tables beside it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#b71c1c", "#f9a825", "#1565c0", "#2e7d32", "#6a1b9a", "#9e9e9e", "#00838f", "#ef6c00",
           "#5d4037", "#455a64")


def hbars(rows: Sequence[tuple[str, Sequence[int]]], legend: Sequence[str], *, title: str,
          width: int = 640, bar: int = 26) -> Markup:
    "One stacked horizontal bar per row; segment ``i`` of every bar is series ``legend[i]``"
    label_w, gap, right = 110, 10, 50
    top = 30
    height = top + len(rows) * (bar + gap) + 10
    biggest = max([sum(v) for _, v in rows] + [1])
    scale = (width - label_w - right) / biggest
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    x = 0
    for i, name in enumerate(legend):  # the legend along the top
        out.append(f'<rect x="{x}" y="4" width="14" height="14" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 18}" y="16" font-size="13">{escape(name)}</text>')
        x += 28 + 14 * len(name)
    for r, (label, values) in enumerate(rows):
        y = top + r * (bar + gap)
        out.append(f'<text x="{label_w - 6}" y="{y + bar * 0.7:.0f}" font-size="14" text-anchor="end">'
                   f'{escape(label)}</text>')
        x0 = float(label_w)
        for i, v in enumerate(values):
            if v <= 0:
                continue
            w = v * scale
            out.append(f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{bar}" '
                       f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)} {escape(legend[i])}: {v}'
                       f'</title></rect>')
            x0 += w
        out.append(f'<text x="{x0 + 6:.1f}" y="{y + bar * 0.7:.0f}" font-size="13">{sum(values)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def columns(points: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 640,
            height: int = 220) -> Markup:
    "One column per point, labelled below, its value above"
    bottom, top, left = 40, 20, 10
    n = max(len(points), 1)
    slot = min((width - left * 2) / n, 90.0)
    biggest = max([v for _, v in points] + [1])
    scale = (height - bottom - top) / biggest
    out = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for i, (label, v) in enumerate(points):
        h = v * scale
        x = left + i * slot + slot * 0.15
        w = slot * 0.7
        y = height - bottom - h
        shown = f"{v:g}{unit}"
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
                   f'<title>{escape(label)}: {escape(shown)}</title></rect>')
        out.append(f'<text x="{x + w / 2:.1f}" y="{y - 4:.1f}" font-size="12" text-anchor="middle">'
                   f'{escape(shown)}</text>')
        out.append(f'<text x="{x + w / 2:.1f}" y="{height - bottom + 16}" font-size="12" '
                   f'text-anchor="middle">{escape(label)}</text>')
    out.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" '
               'stroke="#9aa5b1"/></svg>')
    return Markup("".join(out))
