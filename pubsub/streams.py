"""Appending to a Redis stream that backends read (``{prefix}actions``, docs/ingest.md).

``StreamWriter`` owns one small connection pool and translates every Redis failure
into ``BrokerUnavailable``; what the entries mean is the caller's business.
"""

from __future__ import annotations

import contextlib

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pubsub.cluster import cluster_client, is_cluster
from pubsub.errors import BrokerUnavailable
from pubsub.session import REDIS_FAILURES

#: A stream entry: field name -> value.
Fields = dict[str, str]


class StreamWriter:
    """Appends entries to the stream ``key``, capped near ``maxlen`` entries (``MAXLEN
    ~``: Redis trims whole nodes, so a few more may stay).

    ``timeout`` bounds connecting and each round trip. There are no hidden retries: a
    failed ``append`` raises, and the caller decides when to try again (an append that
    timed out may still have reached Redis, so a retry can add an entry twice).
    """

    def __init__(self, url: str, key: str, *, maxlen: int, timeout: float = 2.0) -> None:
        self.key, self.maxlen = key, maxlen
        self._redis: Redis | RedisCluster | None
        if is_cluster(url):  # routed to the master of the key's slot, following MOVED
            self._redis = cluster_client(url, timeout, max_connections=2)
            return
        pool = BlockingConnectionPool.from_url(
            url, max_connections=2, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout, socket_keepalive=True, retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis.from_pool(pool)

    async def append(self, entries: list[Fields]) -> list[str]:
        """Add ``entries`` in order, in one round trip; their stream ids. Raises
        ``BrokerUnavailable`` when Redis fails (some of them may have been added)."""
        if self._redis is None:
            raise BrokerUnavailable("the stream writer is closed")
        if not entries:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for fields in entries:
                    pipe.xadd(self.key, fields,  # type: ignore[arg-type]
                              maxlen=self.maxlen, approximate=True)
                ids = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise BrokerUnavailable(f"appending to {self.key} failed: {exc}") from exc
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def close(self) -> None:
        """Close the connections; ``append`` fails from now on."""
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await redis.aclose()
