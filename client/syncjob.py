"""A sync started from the tablet app, run in a background thread so the page stays responsive and can
poll its progress.

The job syncs through its own ``Tablet`` (its own SQLite connection to the same file, opened when the
app is unlocked), never the one the pages use: SQLite then keeps the pages' writes and the sync's
batches in separate transactions, and a page that saves a record while a sync runs waits at most for
one batch. Everything the job reports is plain data behind a lock, read by ``snapshot``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sync.disk import is_disk_full
from sync.wire import SyncResponse

from .tablet import NodeUnreachable, SyncFailed, SyncReport, Tablet

log = logging.getLogger("cunsync.ui")

UNREACHABLE = "无法连接镇街服务器。数据已安全保存在本机，联网后再点同步。"
#: What a refused sync means for the worker, by the node's error code
FAILED = {
    "device_revoked": "本平板已被镇街停用，不能再同步。请联系镇街社会工作服务中心。",
    "unauthorized": "镇街服务器不认识这台平板了（可能是镇街服务器从备份恢复过）。本机的数据都还在，不会丢失。"
                    "请镇街社会工作服务中心发一个新的登记码，在下面输入，重新接入后再同步。",
    "version_mismatch": "本机软件版本与镇街服务器不一致，请先更新软件再同步。",  # the tablet is the older side
    "clock_ahead": "本机时间与镇街服务器相差太多，请把平板的日期和时间调准后再同步。",
    "storage_full": "镇街服务器存储空间已满，暂时无法同步。数据已安全保存在本机，请稍后再试。",
    "storage_read_only": "镇街服务器的数据库无法写入，暂时无法同步。数据已安全保存在本机，请联系镇街技术人员。",
    "too_large": "一次要同步的数据太多，请稍后再试或联系镇街技术人员。",
}
#: ``version_mismatch`` when this tablet is the newer side: the node must be upgraded, not the tablet
NODE_TOO_OLD = ("镇街服务器的软件比本机旧，需要先升级，暂时无法同步。本机的软件不用更新，已录入的数据都安全保存在本机，"
                "不会丢失。请联系镇街社会工作服务中心升级服务器，升级后再同步。")
#: Something other than the node answered (a proxy's error page while the node is down, a captive portal:
#: ``http_error``, ``bad_answer``), or the node was unavailable (502 to 504)
NOT_ANSWERING = "镇街服务器暂时没有正确回应。数据已安全保存在本机，请稍后再试。"
#: The tablet's own storage is full (the node's is ``storage_full`` above)
TABLET_FULL = ("平板存储空间已满，同步没有完成。已录入的数据都安全保存在本机，不会丢失。"
               "请删除不用的照片、视频或应用，清理出空间后再同步。")
#: A refusal the tablet has no words for (a code from a newer node, say)
REFUSED = "镇街服务器没有接受这次同步。数据已安全保存在本机，请稍后再试；如果一直这样，请联系镇街技术人员。"


def refusal_text(e: SyncFailed, known: Mapping[str, str], fallback: str) -> str:
    """What the worker is told of a request the node refused: ``known[code]``; ``NOT_ANSWERING`` when
    something other than the node answered or the node was unavailable; else ``fallback``. Never the
    node's English message or its code: the log has them."""
    if e.code == "version_mismatch" and _node_is_older(e.details):
        return NODE_TOO_OLD
    if e.code in known:
        return known[e.code]
    log.warning("the node refused: %s (HTTP %s)", e, e.status)
    if e.code in ("http_error", "bad_answer") or 502 <= e.status <= 504:
        return NOT_ANSWERING
    return fallback


def _node_is_older(details: Any) -> bool:
    """Whether a ``version_mismatch``'s details (``server.node.Node.check_protocol``) say this tablet speaks a
    newer protocol (``client`` over ``max``) or writes a newer schema (``client_schema`` over ``schema``)"""
    if not isinstance(details, dict):
        return False
    return any(isinstance(details.get(ours), int) and isinstance(details.get(theirs), int)
               and details[ours] > details[theirs] for ours, theirs in (("client", "max"), ("client_schema", "schema")))


@dataclass
class JobState:
    "What the page shows about the current or last sync"

    state: str = "idle"  # idle, running, done, failed
    total: int = 0  # own changes waiting when the sync started
    sent: int = 0
    received: int = 0
    rounds: int = 0
    conflicts: int = 0
    code: str = ""
    message: str = ""
    started: float = 0.0
    finished: float = 0.0


class SyncJob:
    """One sync at a time through ``tablet``; ``on_done(ok, code)`` runs in the job's thread as it ends,
    before ``snapshot`` says so"""

    def __init__(self, tablet: Tablet, *, on_done: Callable[[bool, str], None] | None = None,
                 retries: int = 2, backoff: float = 0.5) -> None:
        self.tablet = tablet
        self.on_done = on_done
        self.retries = retries
        self.backoff = backoff
        self._lock = threading.Lock()
        self._state = JobState()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state.state == "running"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._state)

    def start(self) -> bool:
        "Start a sync unless one runs; False if one was already running"
        with self._lock:
            if self._state.state == "running":
                return False
            self._state = JobState(state="running", started=time.time())
            self._thread = threading.Thread(target=self._run, name="cunsync-ui-sync", daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        "Wait for the running sync to end (tests, and shutting down)"
        t = self._thread
        if t is not None:
            t.join(timeout)

    def _progress(self, report: SyncReport, resp: SyncResponse) -> None:
        with self._lock:
            self._state.sent = report.sent
            self._state.received = report.received
            self._state.rounds = report.rounds

    def _run(self) -> None:
        ok, code, message = False, "", ""
        try:
            with self._lock:
                self._state.total = self.tablet.pending()
            report = self.tablet.sync(progress=self._progress, retries=self.retries, backoff=self.backoff)
            ok = True
            with self._lock:
                self._state.sent, self._state.received = report.sent, report.received
                self._state.rounds, self._state.conflicts = report.rounds, report.conflicts
            message = "同步完成"
        except NodeUnreachable:
            code, message = "unreachable", UNREACHABLE
        except SyncFailed as e:
            code, message = e.code, refusal_text(e, FAILED, REFUSED)
        except Exception as e:  # the page must hear of it; the log has the details
            log.exception("sync from the tablet app failed")
            if is_disk_full(e):  # the write that failed was rolled back: what was saved stays
                code, message = "tablet_storage_full", TABLET_FULL
            else:
                code, message = "internal", "同步时出错，数据已安全保存在本机。请稍后再试，或联系镇街技术人员。"
        if self.on_done is not None:  # before the page hears the sync ended
            try:
                self.on_done(ok, code)
            except Exception:
                log.exception("after the sync")
        with self._lock:
            self._state.state = "done" if ok else "failed"
            self._state.code, self._state.message = code, message
            self._state.finished = time.time()
