"""Commands for links to the nodes below and for snapshots: ``cunsync link ...``, ``cunsync snapshot ...``."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from sync.errors import BadRequest
from sync.types import CHINA_TIME

from . import links, schedule, snapshots
from .cli_common import db_option, opened
from .pages import local_time, span_parts
from .rollup import to_csv, to_xlsx
from .rollup_web import node_rollup


@click.group(name="link")
def link_group() -> None:
    "Links from a county or city node to the nodes directly below it."


@link_group.command(name="add")
@db_option
@click.option("--unit", required=True, help="The child node's unit, one tier below this node's")
@click.option("--url", required=True, help="The child node's URL, e.g. http://10.0.0.5:8000")
@click.option("--token", required=True, help="The link device token the child issued "
              "(`cunsync device add --tier county ...` on the child)")
def link_add(db: str, unit: str, url: str, token: str) -> None:
    """Link this node to a node below it (adding it again replaces the URL and token).

    Example:

        cunsync link add --db county.db --unit 510903001000 --url http://10.0.0.5:8000 --token 3q...
    """
    with opened(db) as node:
        link = links.add_link(node.store, node.unit, unit, url, token)
    click.echo(f"linked {link.unit} at {link.url}; pull with `cunsync snapshot pull --db {db}`")


@link_group.command(name="remove")
@db_option
@click.option("--unit", required=True, help="The child node's unit")
def link_remove(db: str, unit: str) -> None:
    """Forget a child node: its link and the figures pulled from it.

    Example:

        cunsync link remove --db county.db --unit 510903001000
    """
    with opened(db) as node:
        links.remove_link(node.store, unit)
    click.echo(f"removed the link to {unit}")


@link_group.command(name="list")
@db_option
def link_list(db: str) -> None:
    """List links: each child's last snapshot (China time, UTC+8), its age, the last pull and the last error.

    Example:

        cunsync link list --db county.db
    """
    now = time.time()
    with opened(db) as node:
        found = links.links(node.store)
    if not found:
        click.echo("no links; add one with `cunsync link add`")
    for ln in found:
        when = local_time(ln.taken_at) if ln.taken_at else "never"
        state = f"error: {ln.last_error}" if ln.last_error else "ok"
        click.echo(f"{ln.unit}  {ln.url:<28} snapshot {when} ({_age(ln.age(now))}), watermark {ln.watermark}, "
                   f"last pull {ln.last_bytes:,} bytes / {ln.last_parts} parts  {state}")


def _age(seconds: int | None) -> str:
    "An age as the pages round it (``age_text``), in English: just now, 5 min ago, 3 h 5 min ago, 2 d ago"
    if seconds is None:
        return "never pulled"
    if seconds < 60:
        return "just now"
    return " ".join(f"{n} {unit}" for n, unit in span_parts(seconds)) + " ago"


@click.group(name="snapshot")
def snapshot_group() -> None:
    "Aggregated snapshots: pull them from the nodes below, close a month, export the roll-up."


@snapshot_group.command(name="pull")
@db_option
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "xlsx"]), default="text", show_default=True,
              help="After pulling, write the roll-up in this format")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The file to write the roll-up to (csv, xlsx); text goes to the terminal")
@click.option("--offline", is_flag=True, help="Don't pull; export what this node holds")
def snapshot_pull(db: str, fmt: str, out: str | None, offline: bool) -> None:
    """Pull every linked child's snapshot now (only what changed), then show or export the roll-up.

    Example:

        cunsync snapshot pull --db county.db --format xlsx --out 船山区-汇总.xlsx
    """
    if fmt != "text" and not out:
        raise click.UsageError(f"--format {fmt} needs --out FILE")
    if out and not Path(out).parent.is_dir():
        raise click.BadParameter(f"the folder {Path(out).parent} does not exist; create it first", param_hint="--out")
    with opened(db) as node:
        if not offline:
            for r in schedule.pull_all(node):
                if r.ok:
                    click.echo(f"{r.unit}: {r.changed} of {r.parts} parts changed, {r.bytes:,} bytes, "
                               f"{r.seconds:.2f} s", err=True)
                else:
                    link = links.get_link(node.store, r.unit)
                    age = link.age() if link else None
                    click.echo(f"{r.unit}: FAILED ({r.error}); keeping its last snapshot ({_age(age)})", err=True)
        ro = node_rollup(node, snapshots.Snapshotter(node.store, node.unit))
    if fmt == "csv":
        assert out
        Path(out).write_text(to_csv(ro), encoding="utf-8")
        click.echo(f"wrote {out}")
    elif fmt == "xlsx":
        assert out
        Path(out).write_bytes(to_xlsx(ro))
        click.echo(f"wrote {out}")
    else:
        click.echo(f"{ro.name(ro.unit)} ({ro.unit}): needs {ro.need_total()}, services {ro.service_total()[0]}, "
                   f"residents {ro.resident_total('合计')}")
        if ro.withheld():
            found = ro.threshold_values()
            below = f"under {found[0]}" if len(found) == 1 else "under each township's threshold" + (
                f" ({', '.join(map(str, found))})" if found else "")
            sections = ", ".join(f"{s} {n}" for s, n in sorted(ro.suppressed.items()))
            click.echo(f"  withheld: {ro.withheld()} cells counting {below} ({sections}), which townships do "
                       "not report; these totals undercount")
        for c in ro.children:
            fresh = next((f for f in ro.freshness if f.unit == c), None)
            note = f"  data {_age(fresh.age)}" + ("  (last pull failed)" if fresh.error else "") if fresh else ""
            click.echo(f"  {c} {ro.name(c):<8} needs {ro.need_total(c):>6}  services {ro.service_total(c)[0]:>6}"
                       f"  residents {ro.resident_total('合计', c):>6}{note}")


@snapshot_group.command(name="close")
@db_option
@click.option("--month", required=True, help="The month to close, YYYY-MM (2026-9 is taken as 2026-09)")
@click.option("--by", "by", default="staff", show_default=True, help="Who closes it")
def snapshot_close(db: str, month: str, by: str) -> None:
    """Close a month on a township node: its figures freeze as published now. Data entry goes on; a later
    change to that month reaches the county as a revision, with what changed.

    Example:

        cunsync snapshot close --db township.db --month 2026-10 --by 刘主任
    """
    try:
        month = snapshots.month_arg(month)
    except BadRequest as e:
        raise click.BadParameter(f"{e.message} [{e.code}]", param_hint="--month") from None
    this_month = dt.datetime.now(CHINA_TIME).strftime("%Y-%m")
    if month > this_month:
        raise click.BadParameter(f"{month} has not begun (it is {this_month}); close a month once it is over",
                                 param_hint="--month")
    with opened(db) as node:
        if node.tier != "township":
            raise click.ClickException("months are closed on township nodes, where the records are")
        names = snapshots.close_month(node.store, node.unit, month, by=by)
    click.echo(f"closed {month}: {', '.join(names)}")
