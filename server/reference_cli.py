"""Node commands for reference data and links: notices, tasks, catalogues, the unit tree, link syncs.

Each writes through the node's own editor, so what it writes carries the node's unit and tier and flows
down to every node and tablet below at their next sync.
"""

from __future__ import annotations

import click

from sync import checks
from sync import reference as ref
from sync.schema import CATALOGUE_KINDS, TASK_STATUSES

from .cli_common import checked, db_option, opened
from .reference import publish_units

_user = click.option("--user", default="staff", show_default=True, help="Who writes it (kept in the op log)")


@click.group(name="notice")
def notice_group() -> None:
    "Notices (通知) for every tablet below this node."


@notice_group.command(name="add")
@db_option
@click.option("--title", required=True, help="标题")
@click.option("--body", default="", help="正文")
@_user
def notice_add(db: str, title: str, body: str, user: str) -> None:
    """Publish a notice from this node's unit; it reaches every tablet below at their next sync.

    Example:

        cunsync notice add --db county.db --title 防汛通知 --body 各村做好汛期巡查
    """
    with opened(db) as node:
        rid = ref.add_notice(node.editor(user), title, body)
    click.echo(rid)


@notice_group.command(name="list")
@db_option
def notice_list(db: str) -> None:
    """Notices this node holds (its own and those from above), newest first.

    Example:

        cunsync notice list --db township.db
    """
    with opened(db) as node:
        for n in ref.notices(node.store):
            click.echo(f"{n.get('published_at', '')}  {n['unit']}  {n['title']}")


@click.group(name="task")
def task_group() -> None:
    "Tasks (任务) for the units below this node."


@task_group.command(name="add")
@db_option
@click.option("--title", required=True, help="标题")
@click.option("--description", default="", help="任务说明")
@click.option("--due", "due_date", default=None, help="截止日期, YYYY-MM-DD")
@click.option("--status", default="待办", type=click.Choice(TASK_STATUSES), show_default=True)
@_user
def task_add(db: str, title: str, description: str, due_date: str | None, status: str, user: str) -> None:
    """Set a task for the units below this node.

    Example:

        cunsync task add --db township.db --title 高龄老人走访 --due 2024-06-30
    """
    due_date = checked("task", {"due_date": due_date}, options={"due_date": "--due"}).get("due_date")
    with opened(db) as node:
        rid = ref.add_task(node.editor(user), title, description, due_date=due_date, status=status)
    click.echo(rid)


@task_group.command(name="list")
@db_option
def task_list(db: str) -> None:
    """Tasks this node holds (its own and those from above), the soonest due first: id, unit, status, due
    date, title. On a county or city node, a task set there or above is followed by its villages'
    progress from the snapshots last pulled: 已完成, 进行中, 未开始 or not reported (未开始/未报).

    Example:

        cunsync task list --db township.db
    """
    from .rollup_web import node_rollup
    from .snapshots import Snapshotter

    with opened(db) as node:
        ro = node_rollup(node, Snapshotter(node.store, node.unit)) if node.tier in ("county", "city") else None
        followed = {t["id"] for t in ro.tasks} if ro is not None else set()
        for t in ref.tasks(node.store):
            line = f"{t['id']}  {t['unit']}  {t.get('status', '')}  {t.get('due_date') or '-'}  {t['title']}"
            if ro is not None and t["id"] in followed:
                todo, doing, done = ro.task_progress(t["id"])
                line += f"  已完成 {done} · 进行中 {doing} · 未开始/未报 {todo}"
            click.echo(line)


@task_group.command(name="status")
@db_option
@click.option("--id", "record", required=True, help="The task's id (`cunsync task list`)")
@click.option("--status", required=True, type=click.Choice(TASK_STATUSES))
@_user
def task_status(db: str, record: str, status: str, user: str) -> None:
    """Record a task's progress; it reaches every tablet below at their next sync. Only the node whose
    unit set the task records it.

    Example:

        cunsync task status --db township.db --id 0190f0c2-... --status 进行中
    """
    with opened(db) as node:
        ref.set_task_status(node.editor(user), record, status)
    click.echo(f"task {record}: {status}")


@click.group(name="catalogue")
def catalogue_group() -> None:
    "The need-category and service-type catalogues (目录)."


@catalogue_group.command(name="set")
@db_option
@click.option("--kind", required=True, type=click.Choice(CATALOGUE_KINDS))
@click.option("--code", required=True, help="The entry's code: the value needs and services store")
@click.option("--name", default=None, help="名称 (needed for a new entry)")
@click.option("--order", type=int, default=None, help="Position in lists")
@click.option("--retire/--restore", "retired", default=None, help="Stop (or resume) offering the entry")
@_user
def catalogue_set(db: str, kind: str, code: str, name: str | None, order: int | None, retired: bool | None,
                  user: str) -> None:
    """Add a catalogue entry or change one. The same kind and code is the same entry at every tier; where
    two tiers change it at once, the higher tier's value shows.

    Example:

        cunsync catalogue set --db city.db --kind need_category --code 防汛救灾 --name 防汛救灾 --order 11
    """
    with opened(db) as node:
        rid = ref.set_catalogue(node.editor(user), kind, code, name=name, order=order, retired=retired)
    click.echo(rid)


@catalogue_group.command(name="list")
@db_option
@click.option("--kind", required=True, type=click.Choice(CATALOGUE_KINDS))
def catalogue_list(db: str, kind: str) -> None:
    """A catalogue as this node holds it, retired entries marked.

    Example:

        cunsync catalogue list --db township.db --kind need_category
    """
    with opened(db) as node:
        for e in ref.catalogue(node.store, kind, include_retired=True):
            click.echo(f"{e.get('order', '')}\t{e['code']}\t{e['name']}{'  (retired)' if e.get('retired') else ''}")


@click.command(name="publish")
@db_option
@_user
def units_publish(db: str, user: str) -> None:
    """Publish this node's unit tree (its unit and every unit under it) as synced reference data, so
    the nodes and tablets below hold the units' names.

    Example:

        cunsync units publish --db city.db
    """
    with opened(db) as node:
        n = publish_units(node, user)
    click.echo(f"published {n} units")


@click.command(name="link-sync")
@db_option
@click.option("--url", required=True, help="The lower node's URL")
@click.option("--token", required=True, envvar="CUNSYNC_LINK_TOKEN",
              help="The link credential the lower node issued to this node (env CUNSYNC_LINK_TOKEN)")
def link_sync(db: str, url: str, token: str) -> None:
    """Sync once with a node below: reference data and escalation answers down, escalations up.

    Example:

        cunsync link-sync --db county.db --url http://10.0.0.5:8000 --token ...
    """
    from .relay import LinkError, sync_link

    with opened(db) as node:
        try:
            r = sync_link(node, checks.node_url(url), token)
        except LinkError as e:
            raise click.ClickException(str(e)) from None
    click.echo(f"{r.child}: pushed {r.pushed}, pulled {r.pulled} in {r.rounds} rounds ({r.seconds:.2f} s)")


REFERENCE_COMMANDS: list[click.Command] = [notice_group, task_group, catalogue_group, link_sync]
