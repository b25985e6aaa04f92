"""The tasks page of the township workbench: each task set by the township or a unit above it, and for
each of the staff member's villages its progress (``task_report``: 未开始 / 进行中 / 已完成, with a note) as
its tablets reported it; staff can set a village's progress too (their township tier beats a concurrent
write on a tablet, and the tablets receive it at their next sync).

    GET  /staff/tasks                   the tasks, the soonest due first, each with its villages' progress
    POST /staff/tasks/{task}/report     set one village's progress: ``village``, ``status``, ``note``
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sync import checks, reference as ref
from sync import units as unitlib
from sync.errors import InvalidValue, NotFound
from sync.schema import NOTE_MAX, REPORT_STATUSES

from .auth import Staff
from .pages import PageError, Pages, required
from .snapshots import enrolled_villages


class TaskPages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.node = pages.node

    def villages(self, staff: Staff) -> dict[str, str]:
        """The villages of the staff member's scope, by code, with their names: the unit tree's, then any
        the tree lacks that reported on a task or has a tablet enrolled (one enrolled before ``cunsync
        units import`` listed it, whose reports the county counts), named by its code as the residents
        list names such a village (``unitlib.unnamed``)"""
        lo, hi = staff.scope
        tree = {c: n for c, n in self.pages.villages().items() if lo <= c <= hi and unitlib.tier_of(c) == "village"}
        with self.node.store.lock:
            reported = {v for _, v in ref.task_reports(self.node.store, units=staff.scope)}
            enrolled = enrolled_villages(self.node.store, *staff.scope)
        return {**tree, **{u: unitlib.unnamed(u) for u in sorted(reported | enrolled) if u not in tree}}

    async def list(self, request: Request, staff: Staff) -> Response:
        def view() -> dict[str, Any]:
            villages = self.villages(staff)
            with self.node.store.lock:
                tasks = ref.tasks(self.node.store)
                reports = ref.task_reports(self.node.store, units=staff.scope)
                names = {str(u.data.get("code")): str(u.data.get("name")) for u in self.node.store.records("unit")}
                names.update(unitlib.names(self.node.store.db))  # the tree as imported here, published or not
            rows = []
            for t in tasks:
                progress = {v: reports.get((t["id"], v), {}) for v in villages}
                rows.append({**t, "by": names.get(t["unit"]) or unitlib.unnamed(t["unit"]), "progress": progress,
                             "counts": ref.progress_counts(r.get("status") for r in progress.values())})
            return {"tasks": rows, "villages": villages, "statuses": REPORT_STATUSES, "note_max": NOTE_MAX}

        return self.pages.render(request, staff, "wb_tasks.html", await run_in_threadpool(view))

    async def report(self, request: Request, staff: Staff) -> Response:
        task = request.path_params["task"]
        form = await self.pages.form(request)
        village, status = required(form, "village", "status")
        note = str(form.get("note", "")).strip()
        problem = checks.task_report(status, note)
        if problem is not None:
            raise PageError(problem.zh + "。")

        def write() -> str:
            villages = self.villages(staff)
            if village not in villages:
                raise PageError("这个村/社区不在您负责的范围内，或代码有误。")
            try:
                ref.report_task(self.node.editor(staff.username), task, village, status, note)
            except NotFound:
                raise PageError("没有找到这项任务，它可能已被撤回。", status=404) from None
            except InvalidValue as e:
                raise PageError(ref.TASK_CANCELLED if e.code == "task_cancelled" else "这项任务不是布置给这个村/社区的。") from None
            return f"已保存：{villages[village]}的任务进度为“{status}”。"

        return self.pages.done(request, f"/staff/tasks#task-{task}", await run_in_threadpool(write))


def task_routes(pages: Pages) -> list[BaseRoute]:
    tp = TaskPages(pages)
    return [
        Route("/staff/tasks", pages.page(tp.list)),
        Route("/staff/tasks/{task}/report", pages.page(tp.report), methods=["POST"]),
    ]
