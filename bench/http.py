"""A minimal HTTP/1.1 keep-alive client for the load generators (httpx was the bottleneck).

One ``Connection`` holds one TCP connection with at most one request in flight: it
writes a pre-encoded request and reads the status line, the headers up to the blank
line and a ``Content-Length`` or chunked body. Every connect and read is under a
timeout; a connection the server closed is reopened, and a request that found an idle
kept-alive connection closed before any answer byte is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import orjson

from bench.servers import API_KEY


class HTTPError(Exception):
    """A malformed answer, a closed connection or a timeout."""


def parse_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://host:port`` base URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port URLs: {url!r}")
    return parts.hostname, parts.port or 80


def encode(host: str, port: int, method: str, path: str, body: bytes,
           api_key: str = API_KEY) -> bytes:
    """A complete request: Host, X-API-Key, Content-Type: application/json, Content-Length."""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body


class Connection:
    """One keep-alive connection to ``url``; ``request`` must not be called concurrently."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.host, self.port = parse_url(url)
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def post_bytes(self, path: str, body: object) -> bytes:
        """The encoded ``POST path`` of ``body`` as JSON, for ``request``."""
        return encode(self.host, self.port, "POST", path, orjson.dumps(body))

    async def post(self, path: str, body: object) -> tuple[int, bytes]:
        """POSTs ``body`` as JSON with the API key; ``(status, response body)``."""
        return await self.request(self.post_bytes(path, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Sends the encoded request ``raw`` and returns ``(status, body)``."""
        reused = self.writer is not None
        if self.writer is not None and (self.writer.is_closing() or self._eof()):
            self.close()
            reused = False
        for attempt in (0, 1):
            if self.writer is None:
                await self.connect()
            try:
                return await asyncio.wait_for(self._exchange(raw), self.timeout)
            except _Unanswered as e:
                self.close()
                # A kept-alive connection the server dropped while idle: once more, fresh.
                if attempt or not reused:
                    raise HTTPError(str(e)) from None
                reused = False
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, HTTPError, TimeoutError) as e:
                self.close()
                raise HTTPError(f"{type(e).__name__}: {e}") from None
        raise AssertionError("unreachable")

    def _eof(self) -> bool:
        return self.reader is not None and self.reader.at_eof()

    async def connect(self) -> None:
        """Opens the connection now (``request`` also does when there is none)."""
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, TimeoutError) as e:
            raise HTTPError(f"connect {self.host}:{self.port}: {e}") from None

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        try:
            self.writer.write(raw)
            await self.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            if isinstance(e, asyncio.IncompleteReadError) and e.partial:
                raise
            raise _Unanswered(f"connection closed before an answer: {e!r}") from None
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise HTTPError(f"bad status line {lines[0]!r}")
        status = int(rest[:3])
        length, chunked, close = -1, False, version == "HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                close = close or "close" in value.lower()
        if chunked:
            body = await self._chunked(reader)
        elif length >= 0:
            body = await reader.readexactly(length)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            body = await reader.read()
            close = True
        if close:
            self.close()
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append((await reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        """Closes the socket (the next ``request`` reconnects)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class _Unanswered(Exception):
    """The connection closed before the first byte of the answer."""
