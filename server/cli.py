"""Node commands: serve, enrol devices, import the unit tree."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import click

from sync import units as unitlib
from sync.errors import SyncError

from . import config, links, schedule
from .app import check_bind, create_app, serve
from .cli_common import db_option, open_node, opened
from .cli_links import link_group, snapshot_group
from .devicepages import device_flags
from .node import Node
from .pages import local_time
from .reference import withdraw_units
from .reference_cli import REFERENCE_COMMANDS, units_publish


def ensure_units(node: Node) -> int:
    "Load the sample unit tree into an empty node"
    if "units" in node.store.db.table_names() and node.store.db["units"].count:
        return 0
    return unitlib.load_units(node.store.db, unitlib.SAMPLE_TREE)


@click.command()
@db_option
@click.option("--unit", default=config.UNIT or None, required=not config.UNIT,
              help="This node's unit: a 12-digit statistical division code (env CUNSYNC_UNIT)")
@click.option("--bind", default=config.BIND, show_default=True, help="host:port to listen on (env CUNSYNC_BIND)")
@click.option("--certfile", default=config.CERTFILE or None, type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS: the certificate chain, PEM (env CUNSYNC_CERTFILE); needs --keyfile")
@click.option("--keyfile", default=config.KEYFILE or None, type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS: the certificate's private key, PEM (env CUNSYNC_KEYFILE); needs --certfile")
def serve_cmd(db: str, unit: str, bind: str, certfile: str | None, keyfile: str | None) -> None:
    """Run a node (township, county or city) over HTTP with hypercorn, or HTTPS with --certfile and
    --keyfile.

    Examples:

    \b
        cunsync serve --db township.db --unit 510903001000 --bind 127.0.0.1:8000
        cunsync serve --db township.db --unit 510903001000 --bind 0.0.0.0:8443 \\
            --certfile /etc/cunsync/cert.pem --keyfile /etc/cunsync/key.pem
    """
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("HTTPS needs both --certfile and --keyfile")
    if config.MAX_BODY_MB <= 0:
        raise click.UsageError("CUNSYNC_MAX_BODY_MB must be more than 0")
    try:
        check_bind(bind)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    node = open_node(db, unit)
    try:
        node.check_writable()  # a read-only database would otherwise fail every sync, while health says ok
    except SyncError as e:
        node.close()
        raise click.ClickException(f"{db}: {e.message}") from None
    ensure_units(node)
    app = create_app(node, max_body=int(config.MAX_BODY_MB * 1024 * 1024))
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        scheme = "https" if certfile else "http"
        click.echo(f"cunsync node {node.unit} ({node.tier}) on {scheme}://{bind}  db={db}", err=True)
        jobs = asyncio.create_task(schedule.run(node, stop))  # county and city: pull from the links below
        await serve(app, bind, stop, certfile=certfile, keyfile=keyfile)
        stop.set()
        await jobs

    try:
        asyncio.run(main())
    finally:
        node.close()


@click.group(name="device")
def device_group() -> None:
    "Devices enrolled to this node."


@device_group.command(name="add")
@db_option
@click.option("--unit", required=True, help="The village (or other unit) the device works in")
@click.option("--user", required=True, help="The worker who carries it")
@click.option("--device", default=None, help="A device id (default: generated)")
@click.option("--tier", default="village", show_default=True,
              type=click.Choice(["village", "township", "county", "city"]),
              help="The device's tier; county or city makes a link device for the node above "
                   "(--unit is then that node's unit)")
def device_add(db: str, unit: str, user: str, device: str | None, tier: str) -> None:
    """Add a device and print its token (shown once). Its main use is a link device: with --tier county
    (or city) and the upper node's --unit, the token lets the node above pull this node's snapshots and
    sync reference data and escalations (give it to `cunsync link add` there). Enrol tablets with
    `cunsync enrol create` instead: a one-time code and QR code, no token handed around. A village
    device made here is set up with `cunsync tablet init --token` (for tests and development).

    Example:

        cunsync device add --db township.db --unit 510903000000 --user county-link --tier county
    """
    with opened(db) as node:
        dev, token = node.add_device(unit, user, device=device, tier=tier)
    click.echo(f"device {dev}\ntoken  {token}")


@device_group.command(name="revoke")
@db_option
@click.option("--device", required=True, help="The device id (see `cunsync device list`)")
@click.option("--wipe", is_flag=True, help="Erase the tablet's local data at its next contact")
def device_revoke(db: str, device: str, wipe: bool) -> None:
    """Revoke a lost or retired tablet at once. Without --wipe it may still send what it holds but
    receives nothing, and is told so; with --wipe it erases its local data at its next contact.

    Example:

        cunsync device revoke --db township.db --device tab-3f2a9c --wipe
    """
    with opened(db) as node:
        if node.device(device) is None:
            raise click.ClickException(f"no device {device!r}; see `cunsync device list --db {db}`")
        node.revoke(device, wipe=wipe)
    click.echo(f"revoked {device}" + (" (its data will be erased at its next contact)" if wipe else ""))


@click.group(name="user")
def user_group() -> None:
    "Staff accounts for the node's pages."


@user_group.command(name="add")
@db_option
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(["township", "county", "city", "admin"]))
@click.option("--unit", default=None, help="The staff member's unit (default: the node's)")
@click.option("--name", "display_name", default=None, help="姓名, shown on the pages (a reset keeps the old one)")
@click.password_option(help="At least 8 characters (prompted, hidden, if not given)")
def user_add(db: str, username: str, role: str, unit: str | None, display_name: str | None, password: str) -> None:
    """Add or reset a staff account; the password is stored as a scrypt hash. A reset (an existing
    username) sets the new password, role and unit, enables and unlocks the account, and signs out
    every session of it; the name stays unless --name is given.

    Example:

        cunsync user add --db township.db --username liu --role township --name 刘主任
    """
    with opened(db) as node:
        staff = node.accounts.add(username, password, role=role, unit=unit, display_name=display_name)
    click.echo(f"staff {staff.username}: {staff.role} at {staff.unit}")


@user_group.command(name="disable")
@db_option
@click.option("--username", required=True, help="The account (see `cunsync user list`)")
def user_disable(db: str, username: str) -> None:
    """Disable the account of someone who left: it can no longer sign in, and its sessions end at their
    next request. The account stays listed, so the history still shows who wrote what under its
    username; `cunsync user add` with the same username enables it again with a new password.

    Example:

        cunsync user disable --db township.db --username liu
    """
    with opened(db) as node:
        try:
            staff = node.accounts.disable(username)
        except SyncError as e:
            raise click.ClickException(f"{e.message}; see `cunsync user list --db {db}`") from None
    click.echo(f"disabled {staff.username}; its sessions are signed out")


@user_group.command(name="list")
@db_option
def user_list(db: str) -> None:
    """List staff accounts: username, name, role, unit, and whether disabled (never the password).

    Example:

        cunsync user list --db township.db
    """
    with opened(db) as node:
        for staff, disabled in node.accounts.listing():
            click.echo(f"{staff.username:<16} {staff.display_name or '-':<10} {staff.role:<8} {staff.unit}"
                       + ("  disabled" if disabled else ""))


#: An enrolment code lives at most this long (30 days): a code is for a tablet about to be set up
MAX_CODE_HOURS = 720


@click.group(name="enrol")
def enrol_group() -> None:
    "One-time enrolment codes for tablets."


@enrol_group.command(name="create")
@db_option
@click.option("--unit", required=True, help="The village the tablet will work in")
@click.option("--user", required=True, help="The worker who will carry it")
@click.option("--hours", default=72, show_default=True, type=click.IntRange(1, MAX_CODE_HOURS),
              help=f"Hours before the code expires, 1 to {MAX_CODE_HOURS}")
@click.option("--server", default=None, help="The node's URL as tablets reach it, put in the QR code")
@click.option("--png", type=click.Path(dir_okay=False), default=None, help="Also save the QR code as a PNG")
@click.option("--reattach", default=None, metavar="DEVICE",
              help="Re-attach this tablet (its device id, shown on its sync page) after a restore: the code is "
                   "for it alone, and it keeps its data")
def enrol_create(db: str, unit: str, user: str, hours: int, server: str | None, png: str | None,
                 reattach: str | None) -> None:
    """Create a one-time enrolment code for a worker's tablet, with a QR code to print.

    Example:

        cunsync enrol create --db township.db --unit 510903001001 --user 王芳 --server http://10.0.0.2:8000

    After a restore, a tablet enrolled since the backup re-attaches with a code made for it:

        cunsync enrol create --db township.db --unit 510903001001 --user 王芳 --reattach tab-3f2a9c1d0e4b
    """
    import segno

    if png and not Path(png).parent.is_dir():  # before the code is made: a code with no QR code to print
        raise click.BadParameter(f"the folder {Path(png).parent} does not exist; create it first", param_hint="--png")
    with opened(db) as node:
        enr = node.create_enrolment(unit, user, hours=hours, reattach=reattach)
    payload = f"cunsync:enrol?code={enr.code}" + (f"&server={server}" if server else "")
    qr = segno.make(payload, error="m")
    click.echo(f"enrolment code {enr.display} for {enr.user}, unit {enr.unit}"
               + (f", to re-attach tablet {reattach} only" if reattach else "")
               + f"; valid until {local_time(enr.expires_at)} China time (UTC+8), once")
    qr.terminal(compact=True)
    if png:
        qr.save(png, scale=8, border=2)
        click.echo(f"QR code saved to {png}")


@device_group.command(name="list")
@db_option
def device_list(db: str) -> None:
    """List devices: last seen (China time, UTC+8, or never), ops received, gaps, clock skew. A village
    tablet the workbench's devices page shows in red is marked SILENT (not seen for days) or NEVER SYNCED
    (enrolled days ago): it may hold work the node has not got.

    Example:

        cunsync device list --db township.db
    """
    now = time.time()
    with opened(db) as node:
        devices = node.devices()
    for d in devices:
        flags = device_flags(d, now)
        seen = local_time(d["last_seen"]) if d["last_seen"] else "never"
        gaps = ", ".join(f"{a}–{b}" for a, b in d["gaps"]) or "-"
        mark = ("  SILENT: call the worker" if flags["silent"] else
                "  NEVER SYNCED: call the worker" if flags["never_synced"] else "")
        click.echo(f"{d['device']:<20} {d['unit']} {d['user']:<8} last seen {seen:<16} ops={d['max_counter']:<6} "
                   f"gaps={gaps} skew_ms={d['skew_ms']} revoked={bool(d['revoked'])}{mark}")


@click.command(name="backup")
@db_option
@click.option("--to", "to", required=True, type=click.Path(dir_okay=False), help="The backup file to write")
def backup_cmd(db: str, to: str) -> None:
    """Take a consistent backup of a node's database, safely while tablets sync.

    Example:

        cunsync backup --db township.db --to backups/township-2026-11-27.db
    """
    with opened(db) as node:
        size = node.backup(to)
    click.echo(f"backed up {db} to {to} ({size:,} bytes)")


@click.command(name="restore")
@db_option
@click.option("--from", "source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The backup to bring back")
def restore_cmd(db: str, source: str) -> None:
    """Restore a node's database from a backup. Stop the node first: the restore is refused while anything
    has the database open. A new epoch starts: tablets fetch their village again and re-send every op the
    backup lacks, so nothing they acknowledged is lost.
    Devices are as the backup holds them: revoke again the tablets revoked since, and re-attach those
    enrolled since with a new enrolment code (docs/operations.md, Backups).

    Example:

        cunsync restore --db township.db --from backups/township-2026-11-27.db
    """
    try:
        epoch = Node.restore(db, source)
    except SyncError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored {db} from {source}; new epoch {epoch}")
    click.echo("Devices changed since the backup are as they were then. Revoke again the tablets revoked "
               "since (`cunsync device revoke --device ... --wipe`); a tablet enrolled since is refused (unknown "
               "device token): give it a new enrolment code made for it (`cunsync enrol create --reattach "
               "tab-...`; its device id is on its sync page) and re-attach it with that code (`cunsync tablet "
               "init --code ...` on the tablet, or its sync page); it keeps its data and re-sends it.")


@click.group(name="units")
def units_group() -> None:
    "The unit tree (统计用区划代码)."


@units_group.command(name="import")
@db_option
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
def units_import(db: str, csv_file: str) -> None:
    """Import a unit tree from a CSV of `code,name` rows (tier and parent follow from the code), UTF-8
    or, as Excel saves "CSV" on a Chinese Windows, GBK. The sample tree's invented units that nothing
    uses (no record, op log entry, device, enrolment code, staff account, link or snapshot pulled from
    below) are removed; those of them this node published as `unit` records (`cunsync units publish`)
    are deleted, so the nodes and tablets below drop them at their next sync.

    Example:

        cunsync units import --db township.db 2023-sichuan.csv
    """
    units, problems = unitlib.parse_csv(_read_text(csv_file).splitlines())
    for p in problems:
        click.echo(p, err=True)
    with opened(db) as node:
        used = _units_in_use(node)  # before the transaction: reading the links' tables may create them
        with node.store.transaction():
            n = unitlib.load_units(node.store.db, units)
            removed = unitlib.remove_illustrative(node.store.db, used) if units else []
            withdrawn = withdraw_units(node, removed)
    click.echo(f"imported {n} units into {db}"
               + (f"; removed {len(removed)} sample units nothing uses" if removed else "")
               + (f"; withdrew {withdrawn} of them published below (deleted there at the next syncs)"
                  if withdrawn else ""))
    if not units and problems:
        sys.exit(1)


def _read_text(path: str) -> str:
    "A CSV file's text: UTF-8 (with or without Excel's BOM) or GB 18030, which GBK is a part of"
    data = Path(path).read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            pass
    raise click.ClickException(f"{path} is neither UTF-8 nor GBK text; in Excel, save it as \"CSV UTF-8\"")


def _units_in_use(node: Node) -> set[str]:
    """Every unit the node keeps a code of outside its unit tree: its own; those of records (the tree's own
    ``unit`` records aside), of the op log and of moves (where records were before they moved away or were
    deleted); of op authors, devices, enrolment codes, staff accounts, links and relay links; and those the
    snapshots pulled from the nodes below name (cells, closures and sources)"""
    used = {node.unit}
    tables = set(node.store.db.table_names())
    not_a_unit_record = "record NOT IN (SELECT id FROM records WHERE coll = 'unit')"
    queries = {"records": "SELECT DISTINCT unit FROM records WHERE coll != 'unit'",
               "ops": "SELECT DISTINCT unit FROM ops WHERE coll != 'unit'",
               "moves": f"SELECT old_unit FROM moves WHERE {not_a_unit_record}"
                        f" UNION SELECT new_unit FROM moves WHERE {not_a_unit_record}",
               "relay_links": "SELECT child FROM relay_links",
               **{t: f"SELECT DISTINCT unit FROM {t}" for t in ("authors", "devices", "enrolments", "staff", "links")}}
    for table, sql in queries.items():
        if table in tables:
            used.update(str(row[0]) for row in node.store.db.execute(sql) if row[0] is not None)
    if "child_parts" in tables:
        children, _ = links.stored_parts(node.store)  # a malformed part's units are left out
        for parts in children.values():
            for part in parts.values():
                used.update(cell.k[0] for cell in part.cells)
                for closure in part.closures:
                    used.add(closure.unit)
                    used.update(diff.k[0] for diff in closure.diff)
        used.update(source.unit for source in links.sources(node.store))
    return used


COMMANDS = [serve_cmd, device_group, enrol_group, user_group, units_group, backup_cmd, restore_cmd,
            link_group, snapshot_group, *REFERENCE_COMMANDS]
units_group.add_command(units_publish)
serve_cmd.name = "serve"
