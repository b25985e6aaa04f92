"""The schedule inside a county or city node: every ``CUNSYNC_PULL_MINUTES`` (default 15; 0 turns it
off) it runs each job in ``JOBS`` for each link to a node below, links side by side in a few threads, jobs
of one link in order: ``sync_records`` (reference data down, escalations up: ``cunsync link-sync`` by hand)
then ``pull_snapshot`` (``cunsync snapshot pull`` by hand).

A job is ``job(node, link) -> None``; it records its own outcome (the snapshot pull writes the link's
row) and an exception it raises is logged, never stops the others. To add a job, append it to ``JOBS``
(or pass ``jobs=``):

    from server import schedule
    schedule.JOBS.append(sync_reference_data)   # def sync_reference_data(node, link) -> None
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from . import config, links, relay
from .links import Link, PullResult
from .node import Node

log = logging.getLogger("cunsync.schedule")
#: Links worked on at once.
WORKERS = 4


class Job(Protocol):
    def __call__(self, node: Node, link: Link, /) -> None: ...


def pull_snapshot(node: Node, link: Link) -> None:
    "The snapshot pull as a scheduled job"
    result = links.pull(node.store, link)
    if not result.ok:
        log.warning("snapshot pull from %s failed: %s", link.unit, result.error)


def sync_records(node: Node, link: Link) -> None:
    "Reference data down, escalations up and their answers down (``server.relay``), as a scheduled job"
    try:
        relay.sync_link(node, link.url, link.token)
    except relay.LinkUnreachable as e:
        log.warning("link sync with %s: unreachable: %s", link.unit, e)
    except relay.LinkError as e:
        log.warning("link sync with %s refused: %s", link.unit, e)


#: The jobs run for every link, in this order.
JOBS: list[Job] = [sync_records, pull_snapshot]


def run_once(node: Node, jobs: Sequence[Job] | None = None,
             on_error: Callable[[Link, Job, BaseException], None] | None = None) -> int:
    "Run every job for every link once; returns the number of links"
    todo = list(JOBS if jobs is None else jobs)
    found = links.links(node.store)

    def work(link: Link) -> None:
        for job in todo:
            try:
                job(node, link)
            except Exception as e:  # one job's failure must not stop the others
                log.exception("job %s for link %s failed", getattr(job, "__name__", job), link.unit)
                if on_error is not None:
                    on_error(link, job, e)

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cunsync-link") as pool:
        list(pool.map(work, found))
    return len(found)


def pull_all(node: Node) -> list[PullResult]:
    "Pull a snapshot from every link now, side by side; the results in link order"
    found = links.links(node.store)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cunsync-pull") as pool:
        return list(pool.map(lambda link: links.pull(node.store, link), found))


async def run(node: Node, stop: asyncio.Event, *, minutes: float | None = None,
              jobs: Sequence[Job] | None = None) -> None:
    """Run the jobs now and then every ``minutes`` until ``stop`` is set (a no-op below the county tier
    or when ``minutes`` is 0)"""
    every = config.PULL_MINUTES if minutes is None else minutes
    if every <= 0 or node.tier not in ("county", "city"):
        return
    while not stop.is_set():
        try:
            await asyncio.to_thread(run_once, node, jobs)
        except Exception:
            log.exception("scheduled jobs failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=every * 60)
        except asyncio.TimeoutError:
            pass
