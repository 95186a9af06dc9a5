"""A TCP proxy that a test can stall: a database or Redis that accepts but never answers.

``StallableProxy(host, port)`` listens on an ephemeral loopback port and forwards every
connection to ``host:port`` (``StallableProxy(path)``: to the Unix socket ``path``, as
the tests' own PostgreSQL listens). ``stall()`` keeps every connection (and new ones)
open but stops moving bytes either way, as a hung server or a black-holed network does;
``resume()`` lets the held bytes through; ``cut()`` closes every open connection. It runs
its own event loop in a daemon thread, so it keeps working whatever the caller's loop
(or a hub in a child process) is doing. ``proxied(database_url)`` puts one in front of a
PostgreSQL and gives the TCP URL through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class StallableProxy:
    def __init__(self, host: str, port: int | None = None) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> StallableProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.resume()
        self.cut()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # its sockets, or they warn (an error) when collected

    def __enter__(self) -> StallableProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Stop moving bytes; connections stay open and new ones are accepted."""
        self._flowing.clear()

    def resume(self) -> None:
        """Move bytes again, the held ones first."""
        self._flowing.set()

    @contextlib.contextmanager
    def stalled_for_a_while(self) -> Iterator[None]:
        self.stall()
        try:
            yield
        finally:
            self.resume()

    def cut(self) -> None:
        """Close every open connection (both sides)."""

        def close_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._loop.call_soon_threadsafe(close_all)

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call(self, coro: object) -> asyncio.Server:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream
        try:
            if port is None:
                up_reader, up_writer = await asyncio.open_unix_connection(host)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:
            # ``stop`` cancels it: ending normally keeps asyncio's start_server callback
            # (Python 3.11) from logging the cancellation as an unhandled exception.
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                while not self._flowing.is_set():
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@contextlib.contextmanager
def proxied(database_url: str) -> Iterator[tuple[StallableProxy, str]]:
    """A stallable proxy in front of ``database_url``'s server, and the URL through it.

    The server may listen on TCP or (the tests' own PostgreSQL) on a Unix socket only,
    named by a ``host=/dir`` query parameter; the hub always reaches the proxy over TCP.
    """
    parts = urlsplit(database_url)
    query = dict(parse_qsl(parts.query))
    socket_dir = query.pop("host", None)
    port = int(query.pop("port", None) or parts.port or 5432)
    if socket_dir is not None:
        proxy = StallableProxy(f"{socket_dir}/.s.PGSQL.{port}")
    else:
        assert parts.hostname is not None
        proxy = StallableProxy(parts.hostname, port)
    userinfo = parts.netloc.rpartition("@")[0]
    with proxy:
        netloc = f"{userinfo + '@' if userinfo else ''}127.0.0.1:{proxy.port}"
        yield proxy, urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
