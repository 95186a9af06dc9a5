"""Retention: prunes old read notifications, old events and old finished deliveries,
one instance at a time."""

from __future__ import annotations

import asyncpg

from db import actions, deliveries, events, notifications

LOCK_ID = 0x636C6E70  # "clnp"
#: The statement timeout of pruning, instead of the pool's (seconds): a first prune of a
#: large backlog may take minutes, and it runs in the background on one connection.
PRUNE_TIMEOUT = 600


async def prune(
    pool: asyncpg.Pool, *, retention_days: int, history_days: int, history_min_events: int
) -> dict[str, int] | None:
    """Prune once, unless another instance is pruning (then return None).

    The lock is transaction-scoped: it ends with the transaction whatever happens, so
    no pooled connection can keep it (the pool does not reset sessions, see db.pool).
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_ID):
            return None
        await conn.execute(f"SET LOCAL statement_timeout = '{PRUNE_TIMEOUT}s'")
        return {
            "notifications": await notifications.prune(
                conn, retention_days, history_days, timeout=PRUNE_TIMEOUT
            ),
            "events": await events.prune(
                conn, history_days, history_min_events, timeout=PRUNE_TIMEOUT
            ),
            # Sent, failed and skipped deliveries, as long as read notifications.
            "deliveries": await deliveries.prune(conn, retention_days, timeout=PRUNE_TIMEOUT),
            # Action choices no relay could append (no Redis all along), as long as
            # events: the stream's readers would not expect them later than that.
            "action_choices": await actions.prune(conn, history_days, timeout=PRUNE_TIMEOUT),
        }
