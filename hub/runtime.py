"""The runtime of one hub process: what ``serve``, ``publish`` and ``migrate`` open.

``Runtime`` opens, in order, the database (the embedded PostgreSQL when no
``HUB_DATABASE_URL`` is set), the migrations, the pool, the broker, the node, Redis
ingest, the delivery workers and the background tasks (cleanup, expiry sweeper,
announcement and notification schedulers, with Redis the action relay), and closes
what it opened in reverse, in one ``async with``::

    async with Runtime(settings) as rt:  # serve: everything, live
        ...rt.services, rt.node, rt.ingest...

``Runtime(settings, live=False)`` is for the commands that do one job and exit: entering
opens nothing, the command takes the steps it needs (``open_database``, ``migrate``,
``connect``) and reports each failure its own way, with ``stage`` naming the step that
was in progress; leaving closes whatever was opened.

``Runtime(settings, workers_only=True)`` is ``notifyhub worker``: the database, the
pool, a publish-only broker and the delivery workers, no live node, ingest or tasks.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from db.embedded import EmbeddedPostgres
from db.migrate import migrate
from db.pool import Pool, connect, create_pool, server_statement_timeout
from hub import actions, cleanup, delivery, expiry, scheduled
from hub.announcements import run_scheduler as run_announcement_scheduler
from hub.ingest import Ingest
from hub.node import Node
from hub.services import Services
from hub.settings import Settings
from pubsub.broker import Broker
from pubsub.cluster import is_cluster, shared_prefix
from pubsub.memory import MemoryBroker
from pubsub.presence import MemoryPresence, PresenceStore
from pubsub.streams import StreamWriter

log = logging.getLogger("notifyhub")

#: The pool of a one-shot command: it makes one write.
COMMAND_POOL = (1, 2)


def make_broker(settings: Settings) -> Broker:
    """Redis (a Redis Cluster for ``redis+cluster://``) when ``HUB_REDIS_URL`` is set,
    else the in-process broker."""
    if is_cluster(settings.redis_url):
        from pubsub.cluster import ClusterBroker

        assert settings.redis_url is not None
        return ClusterBroker(settings.redis_url, settings.redis_prefix)
    if settings.redis_url:
        from pubsub.redis import RedisBroker

        return RedisBroker(settings.redis_url, settings.redis_prefix)
    return MemoryBroker()


def make_presence(settings: Settings) -> PresenceStore:
    """Presence in Redis when ``HUB_REDIS_URL`` is set (shared by the instances), else
    in this process (docs/live.md, "Presence")."""
    seen_ttl = settings.presence_last_seen_days * 86400.0
    if settings.redis_url:
        import uuid

        from pubsub.redis_presence import RedisPresence

        return RedisPresence(
            settings.redis_url, settings.redis_prefix, uuid.uuid4().hex,
            ttl=settings.presence_ttl_seconds, debounce=settings.presence_debounce_seconds,
            seen_ttl=seen_ttl,
        )
    return MemoryPresence(debounce=settings.presence_debounce_seconds, seen_ttl=seen_ttl)


class Runtime:
    """The database, pool, broker, node, ingest and background tasks of one process.

    Shutdown order is part of the contract: ingest stops first (a batch in hand still
    writes through the pool and the broker), then the delivery workers (sends in flight
    finish, within a grace), the background tasks, the node, the broker, the pool, and
    last the embedded PostgreSQL.
    """

    def __init__(
        self, settings: Settings, *, live: bool = True, workers_only: bool = False
    ) -> None:
        self.settings = settings
        self.live = live or workers_only
        self.workers_only = workers_only
        #: The step in progress or last taken: ``database``, ``connect`` (migrations'
        #: own connection), ``migrate``, ``pool``, ``broker``, ``live``.
        self.stage = "database"
        self.dsn: str | None = None
        #: Redis ingest, when live and ``HUB_REDIS_URL`` is set.
        self.ingest: Ingest | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._pool: Pool | None = None
        self._broker: Broker | None = None
        self._services: Services | None = None
        self._node: Node | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: The writer of the ``{prefix}actions`` stream, when live with Redis.
        self._action_stream: StreamWriter | None = None
        #: The delivery workers, when live and ``HUB_DELIVERY_WORKERS`` > 0.
        self.workers: delivery.Workers | None = None

    @property
    def services(self) -> Services:
        """What domain operations need; after ``connect``."""
        if self._services is None:
            raise RuntimeError("the runtime is not connected")
        return self._services

    @property
    def node(self) -> Node:
        """The live node; after ``connect`` of a live runtime."""
        if self._node is None:
            raise RuntimeError("the runtime is not live")
        return self._node

    async def __aenter__(self) -> Runtime:
        if self.live:
            try:
                await self.open_database()
                applied = await self.migrate()
                if applied:
                    log.info("applied migrations %s", ", ".join(applied))
                await self.connect()
            except BaseException:
                await self.close()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open_database(self) -> str:
        """The DSN to use, starting the embedded PostgreSQL when none is configured."""
        self.stage = "database"
        if self.settings.database_url:
            self.dsn = self.settings.database_url
        else:
            embedded = EmbeddedPostgres(self.settings.data_dir)
            self.dsn = await asyncio.to_thread(embedded.start)
            self._embedded = embedded
        return self.dsn

    async def migrate(self) -> list[str]:
        """Apply pending migrations on a connection of their own; the names applied."""
        assert self.dsn is not None, "open_database first"
        self.stage = "connect"
        conn = await connect(
            self.dsn, self.settings.db_connect_timeout_seconds,
            transaction_pooler=self.settings.database_pooler == "transaction",
        )
        self.stage = "migrate"
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    async def connect(self) -> Services:
        """Open the pool and start the broker; when live, also the node, ingest and tasks.

        Without ``live`` the broker only publishes: nothing here subscribes.
        """
        assert self.dsn is not None, "open_database first"
        settings = self.settings
        self.stage = "pool"
        low, high = (settings.db_pool_min, settings.db_pool_max) if self.live else COMMAND_POOL
        if self.workers_only:
            low, high = 1, max(2, min(settings.db_pool_max, settings.delivery_workers + 1))
        self._pool = await create_pool(
            self.dsn, low, high,
            connect_timeout=settings.db_connect_timeout_seconds,
            acquire_timeout=settings.db_acquire_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            transaction_pooler=settings.database_pooler == "transaction",
        )
        if settings.database_pooler == "transaction" and self.live:
            await self._check_role_timeout(self._pool)
        self.stage = "broker"
        broker = self._broker = make_broker(settings)
        services = self._services = Services(settings, self._pool, broker)
        if self.live and not self.workers_only:
            services.presence_store = make_presence(settings)
        services.delivery_channels = delivery.configured(settings)
        if not self.live or self.workers_only:
            await broker.start(_ignore_message, _nothing)
            if self.workers_only:
                self._start_workers(services)
            return services
        node = self._node = Node(services, expiry_leeway=settings.jwt_leeway_seconds)
        await broker.start(node.on_message, node.on_reconnect)
        self.stage = "live"
        await node.start()
        if settings.redis_url:
            self.ingest = Ingest(services)
            await self.ingest.start()  # returns at once, even while Redis is down
        self._start_workers(services)
        self._tasks.append(asyncio.create_task(cleanup.run_forever(services), name="cleanup"))
        self._tasks.append(asyncio.create_task(expiry.run_forever(services), name="expiry"))
        self._tasks.append(
            asyncio.create_task(run_announcement_scheduler(services), name="announcements")
        )
        self._tasks.append(
            asyncio.create_task(scheduled.run_scheduler(services), name="scheduled")
        )
        if settings.redis_url:
            # Without Redis, choices stay queued (docs/ingest.md, "Action choices").
            stream = self._action_stream = StreamWriter(
                settings.redis_url,
                shared_prefix(settings.redis_url, settings.redis_prefix) + actions.STREAM,
                maxlen=settings.actions_stream_maxlen,
            )
            self._tasks.append(
                asyncio.create_task(actions.run_relay(services, stream), name="action-relay")
            )
        return services

    async def _check_role_timeout(self, pool: Pool) -> None:
        """Behind a transaction pooler the pool cannot send ``statement_timeout``: warn
        once when the database role does not set it either."""
        if await server_statement_timeout(pool) == "0":
            log.warning(
                "HUB_DATABASE_POOLER=transaction and the database role has no "
                "statement_timeout: only the hub's own bound stops a slow statement; "
                "set it with ALTER ROLE <role> SET statement_timeout = '%gs' "
                "(docs/configuration.md, 'Behind PgBouncer')",
                self.settings.db_statement_timeout_seconds,
            )

    def _start_workers(self, services: Services) -> None:
        delivery.log_channels(self.settings)
        if self.settings.delivery_workers == 0:
            log.info("delivery workers are off in this process (HUB_DELIVERY_WORKERS=0)")
            return
        self.workers = delivery.Workers.build(services)
        self.workers.start()

    async def drain(self, seconds: float) -> None:
        """At SIGTERM: close live connections spread over ``seconds`` (``Node.drain``)
        while ingest stops reading and settles its batch, so its grace overlaps the drain.

        Other instances take new ingest entries meanwhile. ``close`` stops the rest.
        """
        await asyncio.gather(
            *([self._node.drain(seconds)] if self._node is not None else []),
            *([self.ingest.stop()] if self.ingest is not None else []),
        )

    async def close(self) -> None:
        """Stop whatever was opened, in the order the class states."""
        if self.ingest is not None:  # first: it still writes through the pool and broker
            await self.ingest.stop()
        workers, self.workers = self.workers, None
        if workers is not None:
            await workers.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stream, self._action_stream = self._action_stream, None
        if stream is not None:
            await stream.close()
        if self._services is not None:  # the last batches' publishes, before the broker
            await asyncio.gather(*(w.settle() for w in self._services.writers.values()),
                                 return_exceptions=True)
        if self._node is not None:
            await self._node.stop()
        if self._broker is not None:
            await self._broker.stop()
        if self._pool is not None:
            await self._pool.close()
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _ignore_message(channel: str, seq: int | None, message: bytes) -> None:
    """A one-shot command only publishes; it subscribes to nothing."""


async def _nothing() -> None:
    return None
