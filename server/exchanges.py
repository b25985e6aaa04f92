"""Sync exchanges as the node's HTTP API runs them: in two threads of their own, beside the event loop.

One thread inflates and decodes each request body as it comes. The other holds the store: it takes every
decoded request waiting, up to ``MAX_GROUP`` of them and ``MAX_GROUP_OPS`` ops, and hands them to
``Node.sync_bodies`` together, which writes their pushes in one transaction and answers each in turn,
as soon as its pull is ready. A request alone is answered as before; a herd of tablets syncing at once
shares its commits. Neither thread ever blocks the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sync.errors import MalformedBody
from sync.store import no_cycles
from sync.wire import Format, SyncRequest, decode, decompress

from .node import Answer, Node

#: Requests written in one transaction at most, and their ops at most (a bigger request goes alone).
MAX_GROUP = 32
MAX_GROUP_OPS = 10_000


@dataclass
class Waiting:
    "A request decoded (or its decoding error, raised once its token is known good) and its answer to come"

    token: str | None
    request: SyncRequest | Exception
    ops: int
    fmt: Format
    gzip_ok: bool
    answer: Future[tuple[bytes, bool]]


class Exchanges:
    """The node's sync exchanges: ``await run(...)`` answers one, as ``Node.sync_body`` would"""

    def __init__(self, node: Node, max_inflated: int) -> None:
        self.node = node
        self.max_inflated = max_inflated
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cunsync-decode")
        self._waiting: deque[Waiting] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._store = threading.Thread(target=self._serve, name="cunsync-sync", daemon=True)
        self._store.start()

    async def run(self, token: str | None, body: bytes, gzipped: bool, fmt: Format, out_fmt: Format,
                  gzip_ok: bool) -> tuple[bytes, bool]:
        "Answer one request body: (the answer's body, whether it is gzipped). Raises what the node raises"
        loop = asyncio.get_running_loop()
        waiting = await loop.run_in_executor(self._decoder, _decoded, token, body, gzipped, self.max_inflated,
                                             fmt, out_fmt, gzip_ok)
        with self._ready:
            if self._closed:
                raise RuntimeError("the node is shutting down")
            self._waiting.append(waiting)
            self._ready.notify()
        return await asyncio.wrap_future(waiting.answer)

    def close(self) -> None:
        "Answer what is waiting, then stop both threads"
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._store.join(timeout=30)
        self._decoder.shutdown(wait=False)

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._closed:
                    self._ready.wait()
                if not self._waiting:
                    return
                group = [self._waiting.popleft()]
                ops = group[0].ops
                while (self._waiting and len(group) < MAX_GROUP
                       and ops + self._waiting[0].ops <= MAX_GROUP_OPS):
                    ops += self._waiting[0].ops
                    group.append(self._waiting.popleft())
            # a request whose caller has gone (its answer cancelled) is dropped unwritten; the others can
            # no longer be cancelled, so their answers are set without fail
            group = [w for w in group if w.answer.set_running_or_notify_cancel()]
            try:
                self._answer(group)
            except BaseException as e:  # never leave a caller waiting, nor this thread dead
                for w in group:
                    if not w.answer.done():
                        w.answer.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))

    def _answer(self, group: list[Waiting]) -> None:
        exchanges = []
        asked = []
        for w in group:
            try:
                dev = self.node.authenticate(w.token)  # first: an unknown caller learns nothing else
                if isinstance(w.request, Exception):
                    raise w.request
            except Exception as e:
                w.answer.set_exception(e)
                continue
            exchanges.append((dev, w.request, w.fmt, w.gzip_ok))
            asked.append(w)
        def answered(i: int, out: Answer) -> None:  # each as soon as it is ready
            if isinstance(out, Exception):
                asked[i].answer.set_exception(out)
            else:
                asked[i].answer.set_result(out)

        self.node.sync_bodies(exchanges, answered)


def _decoded(token: str | None, body: bytes, gzipped: bool, max_inflated: int, fmt: Format, out_fmt: Format,
             gzip_ok: bool) -> Waiting:
    request: SyncRequest | Exception
    ops = 0
    # decoding a batch makes an object or two per op, none in a cycle: with the collector on, decoding
    # 10,000 ops took twice as long (it walked the node's kept ops again and again)
    with no_cycles():
        try:
            raw = decompress(body, max_inflated) if gzipped else body
            if not raw:
                raise MalformedBody("empty body; send a SyncRequest")
            request = decode(raw, SyncRequest, fmt)
            ops = len(request.ops.ops)
        except Exception as e:
            request = e
    return Waiting(token, request, ops, out_fmt, gzip_ok, Future())
