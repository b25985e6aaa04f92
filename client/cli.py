"""The ``cunsync`` command line: tablet commands here, node commands from ``server.cli``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
import contextlib
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import httpx

import sync
from sync import checks
from sync.disk import is_disk_full, is_read_only
from sync.errors import SyncError
from sync.reference import now_text
from sync.schema import GROUPS, PROVIDER_KINDS, URGENCIES
from sync.store import is_encrypted
from sync.types import china_time
from server.cli_common import checked

from .tablet import AlreadyEnrolled, NodeUnreachable, NotEnrolled, PinError, SyncFailed, SyncReport, Tablet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sync.__version__, prog_name="cunsync")
def cli() -> None:
    "cunsync: offline-first sync for village social-work stations."


def _register_node_commands() -> None:
    from server.cli import COMMANDS

    for cmd in COMMANDS:
        cli.add_command(cmd)


_register_node_commands()

_db_option = click.option(
    "--db", "db", envvar="CUNSYNC_TABLET", default="tablet.db", show_default=True,
    type=click.Path(dir_okay=False), help="The tablet's database file (env CUNSYNC_TABLET)",
)
_PIN = "cunsync.pin"


def _remember_pin(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta[_PIN] = value


_pin_option = click.option(
    "--pin", envvar="CUNSYNC_PIN", default=None, expose_value=False, callback=_remember_pin,
    help="The worker's PIN that unlocks the tablet's database (env CUNSYNC_PIN; asked for, hidden, when "
         "not given; other users can see a PIN given on the command line)",
)
F = TypeVar("F", bound=Callable[..., Any])


def tablet_option(f: F) -> F:
    "--db and --pin: which tablet database, and the PIN that unlocks it (read by ``_open``)"
    return _db_option(_pin_option(f))


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _has_data(db: str) -> bool:
    return os.path.exists(db) and os.path.getsize(db) > 0


def _pin_for(db: str, *, warn: bool = True) -> str | None:
    "The PIN to open an existing tablet database with; None for one set up without a PIN"
    pin: str | None = click.get_current_context().meta.get(_PIN)
    if not is_encrypted(db):
        if warn and _has_data(db):
            unused = " (no PIN needed)" if pin else ""
            click.echo(f"warning: {db} is not encrypted{unused}; protect residents' data with "
                       f"`cunsync tablet pin --db {db}`", err=True)
        return None
    if pin:
        return pin
    if _interactive():
        return str(click.prompt("PIN", hide_input=True))
    raise click.ClickException(f"{db} is encrypted; give its PIN with --pin or CUNSYNC_PIN")


def _new_pin(db: str) -> str | None:
    "The PIN for a tablet database being set up: given, or chosen at a prompt; None leaves it plaintext"
    if _has_data(db):
        return _pin_for(db)
    pin: str | None = click.get_current_context().meta.get(_PIN)
    if pin:
        return pin
    if _interactive():
        return str(click.prompt("Choose the PIN that will unlock this tablet", hide_input=True,
                                confirmation_prompt=True))
    click.echo(f"warning: no PIN given, so {db} is not encrypted; give --pin or CUNSYNC_PIN, or "
               f"encrypt it later with `cunsync tablet pin --db {db}`", err=True)
    return None


_SET_UP = "`cunsync tablet init --server URL --code CODE` with the township's enrolment code"


def _open(db: str, *, warn: bool = True) -> Tablet:
    if not os.path.exists(db):  # opening would make an empty, plaintext database
        raise click.ClickException(f"{db} does not exist: this tablet is not set up; run {_SET_UP}")
    pin = _pin_for(db, warn=warn)
    tab: Tablet = _run(lambda: Tablet(db, pin=pin))
    if not tab.enrolled:
        tab.close()
        raise click.ClickException(f"{db} is not set up; run {_SET_UP}")
    return tab


def _discard_unset(db: str, pin: str | None = None) -> None:
    """Remove a database that was never set up and holds nothing: a plaintext one (an older cunsync made
    one for any command), so that set-up makes it anew, encrypted; or one a failed set-up made"""
    if not _has_data(db) or (pin is None and is_encrypted(db)):
        return
    tab: Tablet = _run(lambda: Tablet(db, pin=pin))
    if tab.enrolled or tab.store.conn.execute("SELECT 1 FROM ops LIMIT 1").fetchone():
        tab.close()
    else:
        tab.wipe()


@contextmanager
def opened(db: str, *, warn: bool = True) -> Iterator[Tablet]:
    "An enrolled tablet, unlocked with the PIN, closed however the command ends"
    tab = _open(db, warn=warn)
    try:
        yield tab
    finally:
        tab.close()


def _run(fn: Callable[[], Any]) -> Any:
    "Domain errors, and the tablet's own full or read-only storage, become click errors only here, at the CLI layer"
    try:
        return fn()
    except (SyncError, SyncFailed, NodeUnreachable, NotEnrolled, AlreadyEnrolled, PinError) as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:  # sqlite3's, SQLCipher's (an encrypted tablet's) or the OS's
        # the write that failed was rolled back; what was saved before stays, and a sync resumes
        if is_disk_full(e):
            raise click.ClickException(
                f"this tablet's storage is full ({e}). Nothing saved on it is lost, and what the node acknowledged "
                "the node holds; the step that failed wrote nothing. Free space on the tablet (delete photos, "
                "videos or apps it does not need), then run the command again") from None
        if is_read_only(e):
            raise click.ClickException(
                f"this tablet's storage cannot be written ({e}). Nothing saved on it is lost; the step that failed "
                "wrote nothing. Restart the tablet (its storage may have been remounted read-only after an "
                "error), then run the command again") from None
        raise


def _csv(value: str | None) -> list[str]:
    "A comma-separated list, typed with ASCII or full-width (Chinese) commas"
    return [v.strip() for v in value.replace("，", ",").split(",") if v.strip()] if value else []


@cli.group()
def tablet() -> None:
    "Set up this tablet; read the notices and tasks that came down to it."


@tablet.command(name="init")
@tablet_option
@click.option("--server", required=True, help="The township node's URL, e.g. http://192.168.1.10:8000")
@click.option("--code", default=None, help="The one-time enrolment code from the township (e.g. 7KQ4M-2XD9P)")
@click.option("--token", default=None, help="A device token instead of a code (development)")
def tablet_init(db: str, server: str, code: str | None, token: str | None) -> None:
    """Set up a tablet with the enrolment code the township printed for it.

    On a tablet set up already whose token a node restored from a backup refuses, a new code re-attaches
    it: same device, all its data kept, everything re-sent at the next sync.

    Example:

        cunsync tablet init --db tablet.db --server http://127.0.0.1:8000 --code 7KQ4M-2XD9P
    """
    if bool(code) == bool(token):
        raise click.UsageError("give one of --code (from the township) or --token")
    try:
        server = checks.node_url(server)
    except SyncError as e:
        raise click.BadParameter(f"{e.message} [{e.code}]", param_hint="--server") from None
    _discard_unset(db)
    new = not os.path.exists(db)
    pin = _new_pin(db)
    try:
        try:
            if code:
                tab = _run(lambda: Tablet.enrol(db, server, code, pin=pin))
            else:
                tab = _run(lambda: Tablet.init(db, server, token or "", pin=pin))
        except httpx.TransportError as e:
            raise click.ClickException(f"the township node at {server} did not answer ({type(e).__name__}); "
                                       "check --server and the network, then run this again; nothing was set up"
                                       ) from None
    except click.ClickException:
        if new:
            _discard_unset(db, pin)
        raise
    with contextlib.closing(tab):
        click.echo(f"tablet {tab.device} for unit {tab.unit} ready in {db}"
                   + (", encrypted with the PIN" if pin else ""))


@tablet.command(name="pin")
@tablet_option
@click.option("--new-pin", envvar="CUNSYNC_NEW_PIN", default=None,
              help="The new PIN (env CUNSYNC_NEW_PIN; asked for twice, hidden, when not given)")
def tablet_pin(db: str, new_pin: str | None) -> None:
    """Set or change the PIN that encrypts this tablet's database.

    Asks for the current PIN (none for a database set up without one, which is encrypted now), then
    the new one twice. The old PIN stops working. Close the tablet app first: the PIN is not changed
    while the app, or any other command, has the database open.

    Example:

        cunsync tablet pin --db tablet.db
    """
    with opened(db, warn=False) as tab:
        if new_pin is None:
            if not _interactive():
                raise click.ClickException("give the new PIN with --new-pin or CUNSYNC_NEW_PIN")
            new_pin = str(click.prompt("New PIN", hide_input=True, confirmation_prompt=True))
        was_encrypted = tab.store.encrypted
        _run(lambda: tab.change_pin(new_pin or ""))
    click.echo(f"PIN of {db} changed" if was_encrypted else f"{db} is now encrypted with the PIN")


def _from_above(db: str, kind: str) -> list[dict[str, Any]]:
    "The notices or tasks (``kind``) on the tablet, newest first, as the tablet app shows them"
    from .pages import from_above

    with opened(db) as tab:
        return list(from_above(tab)[kind])


@tablet.command(name="notices")
@tablet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines")
def tablet_notices(db: str, as_json: bool) -> None:
    """The notices (通知) from the township, county and city, newest first: when (China time), who
    published it, the title, then the body. Read-only: notices are published on a node.

    Example:

        cunsync tablet notices --db tablet.db
    """
    for n in _from_above(db, "notices"):
        if as_json:
            click.echo(json.dumps(n, ensure_ascii=False))
            continue
        click.echo(f"{n['at']}  {n['by']}  {n['title']}")
        for line in str(n.get("body") or "").splitlines():
            click.echo(f"    {line}")


@tablet.command(name="tasks")
@tablet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines")
def tablet_tasks(db: str, as_json: bool) -> None:
    """The tasks (任务) set by the township, county and city, the newest set first: due date (OVERDUE
    when it is past, China's day, and the task is not done), status, title, who set it, then the
    description. Read-only on the tablet.

    Example:

        cunsync tablet tasks --db tablet.db
    """
    for t in _from_above(db, "tasks"):
        if as_json:
            click.echo(json.dumps(t, ensure_ascii=False))
            continue
        due = f"due {t['due_date']}" if t.get("due_date") else "no due date"
        click.echo(f"{due}{' OVERDUE' if t['overdue'] else ''}  {t['status']}  {t['title']}  ({t['by']})")
        for line in str(t.get("description") or "").splitlines():
            click.echo(f"    {line}")


@tablet.command(name="ui")
@tablet_option
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535),
              help="The port on 127.0.0.1 to serve the app on")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the tablet's browser")
@click.option("--server", default="", help="For a tablet not set up yet: the township node's URL its set-up "
              "page suggests")
def tablet_ui(db: str, port: int, open_browser: bool, server: str) -> None:
    """Serve the tablet app (in Chinese) on 127.0.0.1, for the village worker's browser.

    It works with no network: residents, needs and services are saved on the tablet, and the sync
    page sends them to the township when the node can be reached. The app asks for the PIN on its
    lock page, unless --pin or CUNSYNC_PIN unlocks it at start. A tablet not set up yet is set up on
    the app's first page, with the township's enrolment code and the worker's new PIN.

    Example:

        cunsync tablet ui --db tablet.db --port 8765 --open
    """
    from .ui import TabletApp, check_port, serve_ui

    pin: str | None = click.get_current_context().meta.get(_PIN)
    try:
        check_port("127.0.0.1", port)
    except OSError as e:
        raise click.ClickException(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}; "
                                   "choose another --port") from None
    tapp = _run(lambda: TabletApp(db, port=port, pin=(pin or None) if _has_data(db) else None, server=server))
    state = ("unlocked" if tapp.unlocked else f"locked: {tapp.start_error}" if tapp.start_error
             else "locked: enter the PIN" if tapp.set_up else "not set up yet")
    click.echo(f"the tablet app is at {tapp.origin}/ ({state}); Ctrl-C stops it")
    try:
        serve_ui(tapp, open_browser=open_browser)
    except OSError as e:
        raise click.ClickException(f"cannot serve on {tapp.origin}: {e.strerror or e}; "
                                   "choose another --port") from None
    finally:
        tapp.close()


@cli.group()
def person() -> None:
    "Residents (居民)."


@person.command(name="add")
@tablet_option
@click.option("--name", required=True, help="姓名")
@click.option("--gender", type=click.Choice(["男", "女"]), help="性别")
@click.option("--birth-date", help="出生日期, YYYY-MM-DD")
@click.option("--id-number", help="身份证号 (18 characters)")
@click.option("--phone", help="电话")
@click.option("--address", help="住址")
@click.option("--groups", help="Comma-separated: " + ",".join(GROUPS))
@click.option("--notes", help="备注")
def person_add(db: str, name: str, gender: str | None, birth_date: str | None, id_number: str | None,
               phone: str | None, address: str | None, groups: str | None, notes: str | None) -> None:
    """Register a resident in this tablet's village (works offline).

    Example:

        cunsync person add --name 张秀英 --gender 女 --birth-date 1942-03-08 --groups 老年人,独居
    """
    values = checked("person", {"name": name, "gender": gender, "birth_date": birth_date, "id_number": id_number,
                                 "phone": phone, "address": address, "notes": notes, "groups": _csv(groups)})
    with opened(db) as tab:
        rid = _run(lambda: tab.create("person", values))
    click.echo(rid)


@person.command(name="list")
@tablet_option
@click.option("--search", "text", default=None, help="Name, ID number or phone contains this")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines")
def person_list(db: str, text: str | None, as_json: bool) -> None:
    """List the village's residents.

    Example:

        cunsync person list --search 张
    """
    with opened(db) as tab:
        recs = tab.search("person", text) if text else tab.list("person")
    for r in recs:
        if as_json:
            click.echo(json.dumps({"id": r.id, **r.data}, ensure_ascii=False))
        else:
            flag = " [冲突]" if r.conflicts else ""
            click.echo(f"{r.id}  {r.data.get('name', '')}  {','.join(r.data.get('groups', []))}{flag}")


@cli.group()
def need() -> None:
    "Needs (需求)."


@need.command(name="add")
@tablet_option
@click.option("--person", "person_id", required=True, help="The resident's record id")
@click.option("--category", required=True, help="需求类别: one of the built-in list or the synced catalogue's")
@click.option("--description", help="需求描述")
@click.option("--urgency", type=click.Choice(URGENCIES), default="一般", show_default=True)
@click.option("--due-date", help="截止日期, YYYY-MM-DD")
def need_add(db: str, person_id: str, category: str, description: str | None, urgency: str,
             due_date: str | None) -> None:
    """Record a resident's need.

    Example:

        cunsync need add --person 0190... --category 养老服务 --description 需要助餐
    """
    values = checked("need", {"person": person_id, "category": category, "description": description,
                               "urgency": urgency, "status": "待处理", "due_date": due_date})
    with opened(db) as tab:
        _check_here(tab, "person", person_id, "--person")
        _check_offered(category, tab.need_categories(), "need category", "--category")
        click.echo(_run(lambda: tab.create("need", values)))


def _check_here(tab: Tablet, coll: str, rid: str, option: str) -> None:
    "Refuse the id of a record that is not a live ``coll`` record of this tablet's village"
    rec = tab.get(rid)
    if rec is None or rec.coll != coll or rec.deleted or rec.unit != tab.unit:
        raise click.BadParameter(f"no {coll} {rid} in this tablet's village {tab.unit}; copy the id from "
                                 "`cunsync person list` (a resident's needs and services are in the tablet app)",
                                 param_hint=option)


def _check_offered(value: str, offered: list[str], what: str, option: str) -> None:
    "Refuse a need category or service type the tablet does not offer, naming the ones it does"
    if value not in offered:
        raise click.BadParameter(f"{value!r} is not a {what} here; choose from " + ", ".join(offered),
                                 param_hint=option)


@cli.group()
def service() -> None:
    "Services delivered (服务记录)."


@service.command(name="add")
@tablet_option
@click.option("--person", "person_id", required=True, help="The resident's record id")
@click.option("--need", "need_id", help="The need it answers (optional)")
@click.option("--type", "service_type", required=True,
              help="服务类型: one of the built-in list or the synced catalogue's")
@click.option("--provider-kind", type=click.Choice(PROVIDER_KINDS), default="社工", show_default=True)
@click.option("--provider-name", help="服务主体名称")
@click.option("--served-at", default=None, help="服务时间, YYYY-MM-DDTHH:MM (default: now)")
@click.option("--minutes", type=int, help="服务时长(分钟)")
@click.option("--people", "people_served", type=int, default=1, show_default=True, help="服务人次")
@click.option("--notes", help="备注")
def service_add(db: str, person_id: str, need_id: str | None, service_type: str, provider_kind: str,
                provider_name: str | None, served_at: str | None, minutes: int | None, people_served: int,
                notes: str | None) -> None:
    """Record a service delivered to a resident.

    Example:

        cunsync service add --person 0190... --type 养老服务 --minutes 45
    """
    values = checked("service", {"person": person_id, "need": need_id, "service_type": service_type,
                                  "provider_kind": provider_kind, "provider_name": provider_name,
                                  "served_at": served_at or now_text(),
                                  "minutes": minutes, "people_served": people_served, "notes": notes})
    with opened(db) as tab:
        _check_here(tab, "person", person_id, "--person")
        if need_id:
            _check_here(tab, "need", need_id, "--need")
        _check_offered(service_type, tab.service_types(), "service type", "--type")
        click.echo(_run(lambda: tab.create("service", values)))


@cli.command(name="sync")
@tablet_option
@click.option("--silent", is_flag=True, help="No progress bar")
@click.option("--retries", default=6, show_default=True, help="Retries with exponential back-off")
def sync_cmd(db: str, silent: bool, retries: int) -> None:
    """Sync with the township node: push what was entered offline, pull the village's changes.

    Resumes where an interrupted sync stopped.

    Example:

        cunsync sync --db tablet.db
    """
    bar: Any = None
    pending = 0

    def progress(report: SyncReport, resp: Any) -> None:
        nonlocal bar
        if silent:
            return
        if bar is None:
            bar = click.progressbar(length=max(pending, 1), label="syncing", show_pos=True)
            bar.__enter__()
        bar.update(max(0, min(report.sent, pending) - bar.pos))
        bar.label = f"sent {report.sent} · received {report.received}"

    with opened(db) as tab:
        pending = tab.pending()
        try:
            report = _run(lambda: tab.sync(progress=progress, retries=retries))
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    click.echo(f"sent {report.sent} ops, received {report.received}, removed {report.removed}; "
               f"{report.rounds} round trips, {report.bytes_up + report.bytes_down} bytes, "
               f"{report.seconds:.2f} s; {report.conflicts} open conflicts")


@cli.command()
@tablet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def status(db: str, as_json: bool) -> None:
    """Pending ops, last sync, open conflicts.

    Example:

        cunsync status --db tablet.db
    """
    with opened(db) as tab:
        st = tab.status()
    if as_json:
        click.echo(json.dumps(st, ensure_ascii=False))
        return
    last = (china_time(st["last_sync"]).strftime("%Y-%m-%d %H:%M:%S (China time)") if st["last_sync"]
            else "never")
    click.echo(f"device      {st['device']} ({st['user']}, unit {st['unit']})")
    click.echo(f"node        {st['server']}")
    click.echo(f"pending     {st['pending']} ops not yet acknowledged")
    click.echo(f"last sync   {last}")
    click.echo("records     " + ", ".join(f"{k} {v}" for k, v in st["records"].items()))
    click.echo(f"conflicts   {st['conflicts']} open")


@cli.command()
@click.option("--dir", "directory", default="demo-data", show_default=True, help="Where to put the databases")
@click.option("--tablets", default=6, show_default=True, help="Simulated tablets in the first township")
def demo(directory: str, tablets: int) -> None:
    """Run the demo: a city, its counties and townships on loopback, simulated tablets working offline,
    then syncing; the counties and the city pull aggregated snapshots; the city's roll-up is printed beside
    the totals counted from the tablets.

    Example:

        cunsync demo --dir demo-data
    """
    from .demo import run

    run(directory, tablets=tablets)
