"""The app factory and its lifespan: the one place that picks concrete backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from api import announcements, messages, notifications, ops, pages, sse, templates, ws
from api.problems import HANDLERS, CatchAll
from api.ratelimit import RateLimitMiddleware
from db.embedded import EmbeddedPostgres
from db.migrate import migrate
from db.pool import connect, create_pool
from hub import cleanup
from hub.announcements import run_scheduler as run_announcement_scheduler
from hub.ingest import Ingest
from hub.node import Node
from hub.ratelimit import RateLimiter
from hub.services import Services
from hub.settings import Settings
from hub.tokens import Tokens
from pubsub.broker import Broker
from pubsub.memory import MemoryBroker

log = logging.getLogger("notifyhub")


def make_broker(settings: Settings) -> Broker:
    """Redis when ``HUB_REDIS_URL`` is set, else the in-process broker."""
    if settings.redis_url:
        from pubsub.redis import RedisBroker

        return RedisBroker(settings.redis_url, settings.redis_prefix)
    return MemoryBroker()


async def open_database(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The DSN to use, starting the embedded PostgreSQL when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = await asyncio.to_thread(embedded.start)
    return dsn, embedded


def create_app(settings: Settings) -> Starlette:
    """A notifyhub ASGI app for ``settings``; resources open in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn, embedded = await open_database(settings)
        tasks: list[asyncio.Task[Any]] = []
        pool = None
        node: Node | None = None
        ingest: Ingest | None = None
        broker = make_broker(settings)
        try:
            conn = await connect(dsn)
            try:
                applied = await migrate(conn)
            finally:
                await conn.close()
            if applied:
                log.info("applied migrations %s", ", ".join(applied))
            pool = await create_pool(dsn, settings.db_pool_min, settings.db_pool_max)
            services = Services(settings, pool, broker)
            node = Node(services)
            app.state.services = services
            app.state.node = node
            await broker.start(node.on_message, node.on_reconnect)
            await node.start()
            if settings.redis_url:
                ingest = Ingest(services)
                app.state.ingest = ingest  # api/server.py stops it at SIGTERM, beside the drain
                await ingest.start()  # returns at once, even while Redis is down
            tasks.append(asyncio.create_task(cleanup.run_forever(services), name="cleanup"))
            tasks.append(
                asyncio.create_task(run_announcement_scheduler(services), name="announcements")
            )
            yield
        finally:
            if ingest is not None:  # first: it still writes through the pool and broker
                await ingest.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if node is not None:
                await node.stop()
            await broker.stop()
            if pool is not None:
                await pool.close()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    routes: list[BaseRoute] = [
        *notifications.routes,
        *messages.routes,
        *announcements.routes,
        *templates.routes,
        *ops.routes,
        *ws.routes,
        *sse.routes,
        *pages.routes,
    ]
    if settings.demo_mode:
        routes.extend(ops.demo_routes)
    tokens = Tokens(settings)
    # Shared with ws.py and sse.py (app.state): live handshakes spend the address budget,
    # WebSocket write frames the user's write budget, exactly as REST requests do.
    ip_limiter = RateLimiter(settings.rate_limit_ip_per_second, settings.rate_limit_ip_burst)
    write_limiter = RateLimiter(
        settings.rate_limit_writes_per_second, settings.rate_limit_writes_burst
    )
    middleware = [
        Middleware(ops.HttpMetrics),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Last-Event-ID"],
        ),
        # Inside CORS (a browser can read the 429) and inside metrics (refusals counted).
        Middleware(
            RateLimitMiddleware,
            limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
            write_limiter=write_limiter,
            ip_limiter=ip_limiter,
            api_key_limiter=RateLimiter(
                settings.rate_limit_api_key_per_second, settings.rate_limit_api_key_burst
            ),
            api_keys=settings.api_keys,
            tokens=tokens,
        ),
        Middleware(CatchAll),
    ]
    if settings.demo_mode:
        middleware.insert(0, Middleware(ops.LoopbackHosts))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.state.ip_limiter = ip_limiter
    app.state.write_limiter = write_limiter
    return app
