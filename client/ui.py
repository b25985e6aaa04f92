"""The tablet app: a local web app for village workers, served on 127.0.0.1 by hypercorn, that works with
no network at all (``cunsync tablet ui``).

    GET  /unlock                 the lock page: the worker's PIN opens the encrypted database
    GET  /setup                  a new tablet: the township's enrolment code and the worker's new PIN
    GET  /                       home: what waits to sync, the day's shortcuts
    GET  /people?s=              residents, searched by name, pinyin, ID number or phone: the search is a
                                 POST /people, its query kept in memory behind the token ``s``
    GET  /people/new?s=          registering starts with a search of the village (duplicates; POST
                                 /people/new/find)
    GET  /people/new/form?s=     ... and only then the form
    GET  /people/{id}            a resident: details, needs, services, open conflicts
    GET  /needs, /services       lists, searched and filtered
    GET  /notices                the notices and tasks that came down from the township and above
    POST /tasks/{id}/report      the village's progress on a task: 进行中 or 已完成, with a note
    GET  /sync                   pending changes, sync with progress, conflicts with competing values
    POST /sync/reattach          a tablet the node no longer knows (restored): the township's new code
    GET  /api/status             JSON: pending, conflicts, the sync job's progress (the page polls it)
    POST /api/sync               JSON: start a sync in the background

Safety of a local web app: every request must name the bound address in ``Host`` (a DNS-rebinding
page gets nothing); every POST must come with a same-origin ``Origin`` *and* the app's CSRF token (a
form or script on another site open in the same browser cannot write); pages may not be framed.
Pages answer errors with a Chinese page, ``/api/`` with the project's one error shape.

The unlocked tablet is kept open in the server process (``TabletApp``): one ``Tablet`` for the pages,
serialised by its store's lock, and one for the background sync (``client.syncjob``). A residents' search
is posted, and its results' address names a token, so an ID number or phone typed there never reaches the
browser's history or address bar, which the PIN does not encrypt and a remote wipe does not erase; the
query is kept in the app's memory for ``SEARCH_SECONDS``, and forgotten when the app locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync import headers
from sync.disk import is_disk_full, is_read_only
from sync.errors import BadRequest, Forbidden, StorageFull, SyncError, Unauthorized, Unavailable
from sync.hlc import physical_ms
from sync.lookup import warm
from sync.schema import mask_id_number, mask_phone
from sync.shortterm import ShortTerm
from sync.store import is_encrypted
from sync.types import TIER_NAME, china_time
from sync.units import TIER_NAMES

from . import dblock
from .syncjob import SyncJob
from .tablet import PinError, Tablet, WrongPin

log = logging.getLogger("cunsync.ui")
HERE = Path(__file__).parent
#: How many wrong PINs in a row before the lock page makes the worker wait, and how long
PIN_TRIES, PIN_WAIT = 5, 30.0
#: Longest list a page shows; a search narrows it
LIST_LIMIT = 200
#: Searches (of residents, needs, services) kept in memory behind their tokens, at most, and for at most so many seconds
SEARCHES_KEPT, SEARCH_SECONDS = 100, 30 * 60
T = TypeVar("T")


# The app's own refusals are the engine's error classes with codes of their own (no subclasses: the
# node's OpenAPI document lists every SyncError subclass's code, and these are not the node's).

def locked() -> Unauthorized:
    "The tablet's database is locked: enter the PIN first"
    return Unauthorized("the tablet is locked; enter the PIN", code="locked")


def is_locked(err: BaseException) -> bool:
    return isinstance(err, Unauthorized) and err.code == "locked"


#: What an error means, for the worker
ERROR_TEXT = {
    "bad_host": "请用本机地址打开本应用（例如 http://127.0.0.1:8765）。",
    "cross_origin": "这个操作不是从本应用的页面发出的，已被拒绝。请回到本应用重新操作。",
    "csrf": "页面已过期。请返回，刷新页面后再操作。",
    "not_found": "找不到这个页面或这条记录，它可能已被删除或合并。",
    "resident_removed": "该居民已迁出/注销，这条记录只能查看，不能修改。没有保存任何内容；如需更正，请联系镇街。",
    "locked": "请先输入 PIN 解锁。",
    "method_not_allowed": "不支持这个操作。",
    "invalid_value": "填写的内容有误，请返回修改。",
    "internal": "出错了。已保存的数据都在本机，请返回重试。",
    # opening the tablet's database (unlocking) writes: the first open after an update brings it up to date
    "tablet_storage_full": "平板存储空间已满，打不开本机数据（软件更新后第一次打开时要整理数据，需要一些空间）。"
                           "已录入的数据都安全保存在本机，不会丢失。请删除不用的照片、视频或应用，清理出空间后再解锁。",
    "tablet_read_only": "平板存储现在无法写入，打不开本机数据。已录入的数据都安全保存在本机，不会丢失。"
                        "请重启平板后再解锁；如果一直这样，请联系镇街技术人员。",
}


def _storage_refused(exc: BaseException) -> SyncError | None:
    """The app's refusal when the tablet's own storage, full or read-only, stopped opening its database (the
    failed write was rolled back: nothing changed); None for any other error"""
    if is_disk_full(exc):
        return StorageFull(
            f"this tablet's storage is full ({exc}): its database could not be opened (the first open after "
            "an update brings it up to date, which needs some room). Nothing saved on it is lost. Free space "
            "on the tablet (delete photos, videos or apps it does not need), then unlock it again",
            code="tablet_storage_full")
    if is_read_only(exc):
        return Unavailable(
            f"this tablet's storage cannot be written ({exc}): its database could not be opened. Nothing saved "
            "on it is lost. Restart the tablet and unlock it again; if that does not help, its storage needs "
            "checking", code="tablet_read_only")
    return None


class TabletApp:
    """The app's state: the database path, the bound port, the CSRF token, and the unlocked tablet.

    ``pin`` unlocks at once (``CUNSYNC_PIN``); a database set up without a PIN opens without one; a
    database that does not exist yet is set up on the set-up page (``server`` is the address it
    suggests). A tablet whose storage, full or read-only, refuses that first unlock starts locked, its
    unlock page saying why (``notice``). ``client`` (tests) is the httpx client the sync uses.
    """

    def __init__(self, db: str | Path, *, port: int, pin: str | None = None, host: str = "127.0.0.1",
                 retries: int = 2, backoff: float = 0.5, client: Any = None, server: str = "") -> None:
        self.db = str(db)
        self.server_hint = server  # the node's address the set-up page suggests
        self.host = host
        self.port = port
        self.csrf = secrets.token_urlsafe(24)
        self.retries, self.backoff, self._client = retries, backoff, client
        self.tablet: Tablet | None = None
        self.job: SyncJob | None = None
        self._background: Tablet | None = None
        self.notice = ""
        self.village = ""
        self._guard = threading.Lock()
        self._failures, self._wait_until = 0, 0.0
        #: searches by token (``client.pages``), while unlocked
        self.searches: ShortTerm[str, str] = ShortTerm(SEARCHES_KEPT, SEARCH_SECONDS)
        #: why unlocking at start failed, for the command line: the storage's refusal (``_storage_refused``)
        self.start_error = ""
        if pin is not None or (self.set_up and not is_encrypted(self.db)):
            try:
                self.unlock(pin)
            except (StorageFull, Unavailable) as e:  # the app starts locked; its unlock page says why, and retries
                self.notice, self.start_error = ERROR_TEXT[e.code], e.message

    @property
    def hosts(self) -> set[str]:
        names = {self.host, "localhost"} if self.host == "127.0.0.1" else {self.host}
        out = {f"{n}:{self.port}" for n in names}
        if self.port == 80:
            out |= names
        return out

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def set_up(self) -> bool:
        return os.path.exists(self.db) and os.path.getsize(self.db) > 0

    @property
    def unlocked(self) -> bool:
        return self.tablet is not None

    @property
    def encrypted(self) -> bool:
        return is_encrypted(self.db)

    def unlock(self, pin: str | None) -> None:
        """Open the tablet with the PIN: one connection for the pages, one for the background sync.
        Raises ``WrongPin`` (nothing changed), ``PinError``, or ``_storage_refused``'s error when the tablet's
        storage is full or read-only (an update's first open writes); never creates a database."""
        with self._guard:
            if self.tablet is not None:
                return
            if not self.set_up:
                raise NotSetUp(f"{self.db} does not exist; set the tablet up with `cunsync tablet init`")
            now = time.monotonic()
            if now < self._wait_until:
                raise TooManyPins(int(self._wait_until - now) + 1)
            try:
                tab = self._open(pin)
            except WrongPin:
                self._failures += 1
                if self._failures >= PIN_TRIES:
                    self._failures, self._wait_until = 0, time.monotonic() + PIN_WAIT
                raise
            self._failures = 0
            try:
                if not tab.enrolled:
                    raise NotSetUp(f"{self.db} is not set up; run `cunsync tablet init`")
                background = self._open(pin, client=self._client)
            except BaseException:
                tab.close()
                raise
            self.tablet, self._background = tab, background
            background.correcting = self._correcting
            self.job = SyncJob(background, on_done=self._synced, retries=self.retries, backoff=self.backoff)
            self.village = _village_name(tab)
            self.notice = ""
        threading.Thread(target=self._warm, name="cunsync-ui-pinyin", daemon=True).start()

    def _open(self, pin: str | None, **kw: Any) -> Tablet:
        "The tablet's database, opened; a full or read-only storage is ``_storage_refused``'s refusal"
        try:
            return Tablet(self.db, pin=pin or None, **kw)
        except Exception as e:  # sqlite3's, SQLCipher's (an encrypted tablet's) or the OS's
            refused = _storage_refused(e)
            if refused is None:
                raise
            raise refused from e

    def _warm(self) -> None:
        "The residents' pinyin, worked out once after unlocking, so the first search is quick too"
        try:
            names = self.read(lambda t: [str(p.data.get("name", "")) for p in t.list("person")])
            warm(names)
        except Exception:  # locked again meanwhile, or closed: the searches work it out themselves
            pass

    def enrol(self, server: str, code: str, pin: str) -> None:
        """Set up this tablet with the township's one-time code, encrypted with the worker's new PIN,
        then unlock it. Needs the node once; a failed attempt leaves no half-made database behind."""
        with self._guard:
            if self.set_up:
                raise AlreadySetUp(f"{self.db} is set up already")
            try:
                Tablet.enrol(self.db, server, code, pin=pin, client=self._client).close()
            except BaseException:
                for suffix in ("", "-wal", "-shm", dblock.SUFFIX):
                    if os.path.exists(self.db + suffix):
                        os.unlink(self.db + suffix)
                raise
        self.unlock(pin)

    def reattach(self, code: str) -> None:
        """Re-attach the tablet, with all its data, to a node that no longer knows it (``Tablet.reattach``),
        with the township's new code: through the sync's tablet, which holds the sync's client. Refused
        while a sync runs."""
        with self._guard:
            background, job = self._background, self.job
            if background is None or job is None:
                raise locked()
            if job.running:
                raise SyncRunning("a sync is running; re-attach when it ends")
            with background.store.lock:
                background.reattach(code)

    def lock(self) -> None:
        "Close the tablet; the PIN is needed again. Refused while a sync runs."
        with self._guard:
            if self.job is not None and self.job.running:
                raise SyncRunning("a sync is running; lock when it ends")
            self._close()

    def _close(self) -> None:
        tab, background = self.tablet, self._background
        self.tablet = self._background = self.job = None
        self.searches.clear()
        if tab is not None:
            with tab.store.lock:
                tab.close()
        if background is not None:
            try:
                background.close()
            except Exception:  # a wiped tablet is closed already
                pass

    def close(self) -> None:
        if self.job is not None:
            self.job.wait(60)
        with self._guard:
            self._close()

    @contextlib.contextmanager
    def _correcting(self, offset: int) -> Iterator[None]:
        """Around the background sync's clock correction (in its thread): the pages' clock takes the new
        offset first, and no page writes until the re-stamp is done, so no page's change is stamped ahead
        of the node after it and refused at the next sync"""
        tab = self.tablet
        if tab is None:
            yield
            return
        with tab.store.lock:
            tab.clock.offset_ms = offset
            yield
            if self._background is not None:
                tab.clock.last = self._background.clock.last

    def _synced(self, ok: bool, code: str) -> None:
        "After a sync (in its thread): the pages' clock follows the node's, a revoked tablet locks"
        tab, background = self.tablet, self._background
        if code == "device_revoked":  # locked for good: the node will not take this tablet's changes
            with self._guard:
                self.tablet = self._background = None
                self.searches.clear()
                if tab is not None:
                    with tab.store.lock:
                        tab.close()
                if background is not None:
                    try:
                        background.close()
                    except Exception:  # wiped, and closed by the wipe
                        pass
                self.notice = "本平板已被镇街停用。请联系镇街社会工作服务中心。"
            return
        if ok and tab is not None and background is not None:
            with tab.store.lock:
                if tab.clock.offset_ms != background.clock.offset_ms:
                    # corrected: the background re-stamped this tablet's unsent ops under the node's time
                    # and set its clock back; the pages' clock, still ahead, goes back with it
                    tab.clock.offset_ms = background.clock.offset_ms
                    tab.clock.last = background.clock.last
                else:
                    tab.clock.last = max(tab.clock.last, background.clock.last)
            self.village = _village_name(tab)

    def read(self, fn: Callable[[Tablet], T]) -> T:
        "Run ``fn`` on the pages' tablet, holding its store's lock (pages share one connection)"
        tab = self.tablet
        if tab is None:
            raise locked()
        with tab.store.lock:
            if self.tablet is not tab:
                raise locked()
            return fn(tab)

    async def run(self, fn: Callable[[Tablet], T]) -> T:
        return await run_in_threadpool(self.read, fn)


class NotSetUp(PinError):
    "The tablet's database does not exist or was never enrolled"


class AlreadySetUp(PinError):
    "The tablet is set up already; it is not enrolled twice"


class TooManyPins(PinError):
    "Too many wrong PINs in a row; wait"

    def __init__(self, seconds: int) -> None:
        super().__init__(f"too many wrong PINs; wait {seconds} s")
        self.seconds = seconds


class SyncRunning(Exception):
    "A sync is running"


def _village_name(tab: Tablet) -> str:
    for rec in tab.store.records("unit", unit=tab.unit):
        if rec.data.get("code") == tab.unit and rec.data.get("name"):
            return str(rec.data["name"])
    return ""


# -- guards ---------------------------------------------------------------------------------------

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
                                 b"base-uri 'none'; object-src 'none'"),
    *headers.SECURITY_HEADERS,
]


class Guard:
    """Refuse a request whose ``Host`` is not the bound address, and a state-changing one whose
    ``Origin`` is not the app's own; add headers that keep pages out of frames and caches."""

    def __init__(self, app: ASGIApp, tapp: TabletApp) -> None:
        self.app = app
        self.tapp = tapp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.headers.get("host", "").lower()
        err: SyncError | None = None
        if host not in self.tapp.hosts:
            err = BadRequest(f"this app answers only at {self.tapp.origin}; the request named {host!r}",
                             code="bad_host", details={"host": host})
        elif request.method not in SAFE_METHODS and request.headers.get("origin") != f"http://{host}":
            err = Forbidden("state-changing requests must come from this app's own pages (Origin)",
                            code="cross_origin", details={"origin": request.headers.get("origin")})

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        if err is None:
            await self.app(scope, receive, send_secured)
            return
        response = error_page(request, err)
        response.headers["connection"] = "close"
        await response(scope, receive, send_secured)


def check_csrf(tapp: TabletApp, sent: object) -> None:
    if not isinstance(sent, str) or not secrets.compare_digest(tapp.csrf.encode(), sent.encode()):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again", code="csrf")


templates = Jinja2Templates(directory=str(HERE / "templates"))


def _fmt(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "（空）"
    if value is True:
        return "已删除"
    if value is False:
        return "未删除"
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value).replace("T", " ", 1) if isinstance(value, str) and len(value) == 16 else str(value)


def _when(hlc: int) -> str:
    "An op's clock reading as China time (whatever the tablet's zone), as the township's pages show it"
    return china_time(physical_ms(hlc) / 1000).strftime("%m-%d %H:%M")


def _ts(seconds: Any) -> str:
    "Seconds since the epoch (the last sync) as China time"
    return china_time(int(seconds)).strftime("%Y-%m-%d %H:%M") if seconds else "从未同步"


templates.env.filters.update(fmt=_fmt, when=_when, ts=_ts, mask_id=mask_id_number, mask_phone=mask_phone,
                             tier=lambda t: TIER_NAMES.get(TIER_NAME.get(t, t), t))  # an op's rank or a tier's name


def error_page(request: Request, err: SyncError) -> Response:
    "JSON under /api/ (the project's one error shape), a Chinese page everywhere else"
    if request.url.path.startswith("/api/"):
        return JSONResponse(err.to_dict(), status_code=err.status)
    if is_locked(err) and request.method in SAFE_METHODS:
        return RedirectResponse("/unlock", status_code=303)
    text = ERROR_TEXT.get(err.code) or ERROR_TEXT["invalid_value" if err.status == 400 else "internal"]
    return templates.TemplateResponse(request, "error.html", {"message": text, "code": err.code,
                                                             "tapp": None, "csrf": ""},
                                      status_code=err.status)


async def _on_sync_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SyncError)
    return error_page(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    err = SyncError(str(exc.detail), code=code)
    err.status = exc.status_code
    return error_page(request, err)


async def _on_internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return error_page(request, SyncError("internal error; the app logged it"))


def local_path(value: object, default: str = "/") -> str:
    "A redirect target from a form: a path on this app only"
    if isinstance(value, str) and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def create_app(tapp: TabletApp) -> Starlette:
    "The app's routes over ``tapp``"
    from .pages import page_routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(tapp.close)  # a running sync ends first

    app = Starlette(
        routes=[*page_routes(tapp), Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")],
        middleware=[Middleware(Guard, tapp=tapp)],
        exception_handlers={SyncError: _on_sync_error, HTTPException: _on_http_error,
                            Exception: _on_internal_error},
        lifespan=lifespan,
    )
    app.state.tapp = tapp
    return app


def serve_ui(tapp: TabletApp, *, open_browser: bool = False, shutdown: asyncio.Event | None = None) -> None:
    "Serve the app with hypercorn on 127.0.0.1 until interrupted (or ``shutdown`` is set)"
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    check_port(tapp.host, tapp.port)
    config = Config()
    config.bind = [f"{tapp.host}:{tapp.port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 2
    app = create_app(tapp)

    async def main() -> None:
        if open_browser:
            asyncio.get_running_loop().call_later(0.5, _open_browser, tapp.origin + "/")
        # without a trigger of its own, hypercorn stops cleanly on SIGINT and SIGTERM
        trigger = shutdown.wait if shutdown is not None else None
        await serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def check_port(host: str, port: int) -> None:
    "Fail with a plain OSError before serving when the port is taken (hypercorn would fail noisily)"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def _open_browser(url: str) -> None:
    import webbrowser

    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

