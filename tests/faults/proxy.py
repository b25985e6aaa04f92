"""A bad mobile link between a tablet and its node: a small asyncio HTTP/1.1 proxy on 127.0.0.1 that
injects faults into sync requests, chosen at random from a seed.

    cut_request    the node gets the head and half the body, then the connection drops: the node must
                   write nothing, the tablet sees a dropped connection and retries
    cut_response   the node answers in full (it has committed the batch), the tablet gets half the answer:
                   it retries a batch the node already holds
    delay          the request waits 50–300 ms before it goes on (a slow link)
    stall          the answer is held back past the tablet's timeout, then thrown away: the node committed,
                   the tablet timed out and retries
    duplicate      the node receives the request twice (a retransmission); the tablet gets the second answer
    replay         an earlier sync request of the same connection pool arrives again first, late (a stale
                   retransmission); its answer is thrown away

Each proxied request gets its own upstream connection, and the proxy adds ``Connection: close`` so the
node answers once and hangs up: an answer is then everything up to the end of the stream. Only
``POST /api/sync`` is faulted; set-up calls pass through. ``enabled = False`` passes everything.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Mapping

FAULTS = ("cut_request", "cut_response", "delay", "stall", "duplicate", "replay")


class FaultProxy:
    """``FaultProxy(node_port, seed=1, rates={"cut_request": 0.1, ...}, limits={"stall": 3})``: runs in
    its own thread and event loop once started (``with`` or ``start()``); ``url`` is where tablets go.

    ``rates`` are per-request probabilities (summing to at most 1); ``limits`` cap how many of a kind are
    injected in all, so a run stays bounded in time. ``injected`` counts what was done.
    """

    def __init__(self, upstream_port: int, *, seed: int, rates: Mapping[str, float],
                 limits: Mapping[str, int] | None = None, stall_s: float = 1.5) -> None:
        unknown = set(rates) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        assert sum(rates.values()) <= 1.0
        self.upstream = ("127.0.0.1", upstream_port)
        self.rates = dict(rates)
        self.limits = dict(limits or {})
        self.stall_s = stall_s
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.enabled = True
        self.port = 0
        self._last_sync: bytes | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()

    # -- one request ------------------------------------------------------------------------------

    def _choose(self) -> str | None:
        with self._lock:
            self.requests += 1
            if not self.enabled:
                return None
            r = self.rng.random()
            for name, p in self.rates.items():
                if r < p:
                    if self.injected[name] >= self.limits.get(name, 1 << 30):
                        return None
                    if name == "replay" and self._last_sync is None:
                        return None
                    self.injected[name] += 1
                    return name
                r -= p
            return None

    def _delay(self) -> float:
        with self._lock:
            return self.rng.uniform(0.05, 0.3)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            head, body = request
            is_sync = head.startswith(b"POST /api/sync ")
            fault = self._choose() if is_sync else None
            if fault == "cut_request":
                await self._send_only(head + body[: len(body) // 2])
                writer.transport.abort()
                return
            if fault == "duplicate":
                await self._exchange(head + body)
            elif fault == "replay":
                assert self._last_sync is not None
                await self._exchange(self._last_sync)
            elif fault == "delay":
                await asyncio.sleep(self._delay())
            answer = await self._exchange(head + body)
            if is_sync:
                self._last_sync = head + body
            if fault == "cut_response":
                writer.write(answer[: max(1, len(answer) // 2)])
                await writer.drain()
                writer.transport.abort()
                return
            if fault == "stall":
                await asyncio.sleep(self.stall_s)  # the tablet has given up by now
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    async def _exchange(self, request: bytes) -> bytes:
        "Send one request to the node on a new connection; the whole answer (the node hangs up after it)"
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            up_w.write(request)
            await up_w.drain()
            return await up_r.read()
        finally:
            up_w.close()

    async def _send_only(self, partial: bytes) -> None:
        "Send part of a request, then drop the connection"
        _, up_w = await asyncio.open_connection(*self.upstream)
        up_w.write(partial)
        await up_w.drain()
        await asyncio.sleep(0.02)
        up_w.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    "One HTTP/1.1 request with a Content-Length body; its head rewritten to ask the node to close after"
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].split(b"\r\n")
    length = 0
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() in (b"connection", b"keep-alive"):
            continue
        kept.append(line)
    kept.append(b"Connection: close")
    body = await reader.readexactly(length) if length else b""
    return b"\r\n".join(kept) + b"\r\n\r\n", body
