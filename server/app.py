"""The node's HTTP API: a Starlette app, served by hypercorn.

    POST /api/sync      one sync round trip (MessagePack by default, JSON on request, gzip both ways)
    GET  /api/health    liveness and what this node is; 503 storage_read_only when its database cannot be written
    GET  /api/whoami    the device a token belongs to (a tablet calls it once at set-up)
    POST /api/enrol     exchange a one-time enrolment code for a device token
    GET  /openapi.json  this API described in OpenAPI 3.1, generated from the msgspec types

Every error has one shape, ``{"error": {"code", "message", "details"}}``, with its HTTP status. Every
answer is kept out of browsers' caches and other sites' frames (``SecurityHeaders``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync.errors import BadRequest, SyncError
from sync.headers import SECURITY_HEADERS
from sync.units import UnitCodeError
from sync.wire import (
    PROTOCOL_VERSION,
    EnrolRequest,
    EnrolResponse,
    decode,
    decompress,
    encode,
    format_for,
    media_type,
)

from . import config, sessions
from .exchanges import Exchanges
from .node import Device, Node
from .openapi import openapi_route
from .orders import read_body
from .storage import storage_error

log = logging.getLogger("cunsync.server")

#: Largest request body accepted on the wire (``create_app(max_body=)``, ``CUNSYNC_MAX_BODY_MB``), and once
#: inflated.
MAX_BODY = 16 * 1024 * 1024
MAX_INFLATED = 64 * 1024 * 1024


def error_response(err: SyncError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.status)


async def _sync_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SyncError)
    resp = error_response(exc)
    if request.method in ("POST", "PUT", "PATCH"):
        # the body may be unread: close the connection rather than leave it half-read for the next request
        resp.headers["connection"] = "close"
    return resp


async def _unit_error(request: Request, exc: Exception) -> Response:
    "A malformed unit code anywhere is the caller's mistake: 400, with what a valid code looks like"
    return await _sync_error(request, BadRequest(str(exc), code="invalid_unit"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": exc.detail, "details": None}},
                        status_code=exc.status_code, headers=exc.headers)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """A full disk anywhere (SQLITE_FULL, ENOSPC) is a 507 storage_full, a read-only one (SQLITE_READONLY,
    EROFS, or an I/O error on a file system turned read-only) a 503 storage_read_only, not a 500; anything
    else is a 500"""
    err = storage_error(exc, request.app.state.node.store.path)
    if err is not None:
        log.error("%s on %s: %s", err.code.replace("_", " "), request.url.path, exc)  # "storage full"
        return await _sync_error(request, err)
    return await _internal_error(request, exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return JSONResponse({"error": {"code": "internal", "message": "internal error; the node logged it",
                                   "details": None}}, status_code=500)


def says_gzip(request: Request) -> bool:
    "Whether a request says its body is gzip"
    return request.headers.get("content-encoding", "").lower() == "gzip"


def inflated(request: Request, body: bytes) -> bytes:
    "A body as sent, gunzipped if it says it is gzip"
    return decompress(body, MAX_INFLATED) if says_gzip(request) else body


#: The workbench's pages have inline styles and confirm() buttons: their policy only forbids frames.
CONTENT_SECURITY_POLICY = b"frame-ancestors 'none'"


class SecurityHeaders:
    """Every answer of the node (pages, staff and sync API answers: all may hold residents' personal data
    or secrets) is kept out of browsers' caches and other sites' frames (``sync.headers``); a header a
    handler set itself gives way to these"""

    HEADERS = [(b"content-security-policy", CONTENT_SECURITY_POLICY), *SECURITY_HEADERS]
    NAMES = {name for name, _ in HEADERS}

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.NAMES]
                message["headers"] = [*kept, *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def create_app(node: Node, *, max_body: int = MAX_BODY, extra_routes: list[Any] | None = None) -> Starlette:
    "The node's app; a sync request's body over ``max_body`` bytes as sent is refused (413 too_large)"
    # sync exchanges run beside the event loop in two threads of their own (``server.exchanges``): one
    # decodes requests as they come, the other hands those waiting to the node together
    exchanges = Exchanges(node, MAX_INFLATED)

    async def sync(request: Request) -> Response:
        t0 = time.perf_counter()
        body = await read_body(request, limit=max_body)
        fmt = format_for(request.headers.get("content-type"))
        out_fmt = format_for(request.headers.get("accept")) if request.headers.get("accept") else fmt
        payload, gzipped = await exchanges.run(
            _token(request), body, says_gzip(request), fmt, out_fmt,
            "gzip" in request.headers.get("accept-encoding", ""))
        # the node's own time for the exchange, from its body's first byte to its answer (a tablet's report
        # then tells its waiting on the node from the rest of its round trip)
        headers = {"server-timing": f"sync;dur={(time.perf_counter() - t0) * 1000:.1f}"}
        if gzipped:
            headers["content-encoding"] = "gzip"
        return Response(payload, media_type=media_type(out_fmt), headers=headers)

    async def enrol(request: Request) -> Response:
        body = inflated(request, await read_body(request, limit=4096))
        req = decode(body, EnrolRequest, "json")
        client = request.client.host if request.client else ""
        reattach = Device(req.device, req.user, req.unit, req.tier) if req.device else None
        dev, token = await run_in_threadpool(lambda: node.enrol(req.code, client=client, reattach=reattach))
        resp = EnrolResponse(device=dev.device, token=token, user=dev.user, unit=dev.unit, tier=dev.tier,
                             node_unit=node.unit)
        return Response(encode(resp, "json"), media_type="application/json")

    async def health(request: Request) -> Response:
        # a file system turned read-only under the node: 503 storage_read_only, as a sync would get
        await run_in_threadpool(node.check_file_system)
        return JSONResponse({
            "status": "ok", "unit": node.unit, "tier": node.tier, "protocol": PROTOCOL_VERSION,
            "epoch": node.epoch, "seq": await run_in_threadpool(node.store.max_seq),
        })

    async def whoami(request: Request) -> Response:
        dev = await run_in_threadpool(node.authenticate, _token(request))
        return JSONResponse({"device": dev.device, "user": dev.user, "unit": dev.unit, "tier": dev.tier,
                             "node_unit": node.unit, "protocol": PROTOCOL_VERSION, "revoked": dev.revoked})

    routes = [
        Route("/api/sync", sync, methods=["POST"]),
        Route("/api/health", health),
        Route("/api/whoami", whoami),
        Route("/api/enrol", enrol, methods=["POST"]),
        openapi_route(),
        *(extra_routes or []),
    ]
    from .staff import staff_routes

    sessions.ensure_table(node.store)
    routes.extend(staff_routes(node, node.accounts))
    from .rollup_web import rollup_routes

    routes.extend(rollup_routes(node))
    from .escalations import escalation_routes
    from .reference import reference_routes

    routes.extend([*reference_routes(node), *escalation_routes(node)])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, exchanges.close)

    app = Starlette(
        lifespan=lifespan,
        routes=routes,
        middleware=[Middleware(SecurityHeaders),
                    Middleware(SessionMiddleware, secret_key=config.SECRET or node.session_secret,
                               session_cookie="cunsync_session", same_site="strict",
                               max_age=None,  # the node ends the session (server.sessions)
                               https_only=config.HTTPS_ONLY)],
        exception_handlers={SyncError: _sync_error, UnitCodeError: _unit_error, HTTPException: _http_error,
                            sqlite3.Error: _storage_error, OSError: _storage_error, Exception: _internal_error},
    )
    app.state.node = node
    return app


async def serve(app: Starlette, bind: str, shutdown: asyncio.Event | None = None,
                ready: Callable[[], Awaitable[None] | None] | None = None, *,
                certfile: str | None = None, keyfile: str | None = None) -> None:
    """Serve ``app`` with hypercorn until ``shutdown`` is set (or forever); over HTTPS (TLS) when
    ``certfile`` and ``keyfile`` (PEM) are given"""
    from hypercorn.asyncio import serve as hserve
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind]
    if certfile and keyfile:
        config.certfile = certfile
        config.keyfile = keyfile
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 30
    config.graceful_timeout = 2
    trigger = shutdown.wait if shutdown is not None else None
    await hserve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]



def check_bind(bind: str) -> None:
    """Raise ``ValueError``, one line naming ``bind`` and what to do, when a node cannot listen there: not
    HOST:PORT, a port outside 1 to 65535, a host that is not known, an address in use or not this
    machine's. Checked before serving: hypercorn would fail with a traceback from inside its event loop.
    A ``unix:`` socket file or a systemd ``fd://`` socket is left to hypercorn."""
    fix = "give --bind HOST:PORT (env CUNSYNC_BIND), e.g. 127.0.0.1:8000, or 0.0.0.0:8000 for every address"
    if bind.startswith(("unix:", "fd://")):
        return
    host, colon, port = bind.rpartition(":")
    host = host.replace("[", "").replace("]", "")  # an IPv6 address, [::1]:8000, as hypercorn reads it
    if not colon or not (port.isascii() and port.isdecimal()):
        raise ValueError(f"{bind!r} is not HOST:PORT; {fix}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{bind}: port {int(port)} is not a port (1 to 65535); {fix}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn binds
        try:
            s.bind((host, int(port)))
        except socket.gaierror:
            raise ValueError(f"{bind}: no host {host!r} is known; {fix}") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"{bind} is in use: another cunsync serve? Stop it, or pick another port with "
                                 "--bind HOST:PORT (env CUNSYNC_BIND)") from None
            raise ValueError(f"cannot listen on {bind}: {e.strerror}; {fix}") from None
