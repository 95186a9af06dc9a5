"""Presence in Redis, shared by every hub instance on one ``HUB_REDIS_PREFIX``.

Keys (``P`` is the prefix; times are milliseconds on the Redis server's clock):

- ``P presence:user:<user>``: sorted set of instance id -> until when that instance
  vouches for the user (now + TTL at its last heartbeat); the key expires with its
  newest entry, so a dead instance's keys go away on their own.
- ``P presence:online``: sorted set of user -> the newest ``until`` of any instance
  (``ZADD GT``). An entry in the past means every instance of that user stopped
  refreshing: the user's instances died, and ``settle`` claims the user.
- ``P presence:leaving``: sorted set of user -> when their debounce ends; the user's
  last connection everywhere closed then, and an ``arrive`` before it cancels it.
- ``P presence:seen:<user>``: when the user was last seen, kept ``seen_ttl``.

Every transition is one Lua script, atomic in Redis, so two instances can never both
announce a user (a claim is a ``ZREM`` inside the script that returns the user). Each
call handles a batch of users, and the batches of one call are pipelined: a heartbeat
of 10,000 users is one round trip. ``settle`` finds the keys of the users it claims
inside the script, so every key must be on one node: on a Redis Cluster ``P`` is the
prefix in braces (``{hub:}presence:online``, ``pubsub.cluster.shared_prefix``), which
puts all of presence in one slot, and the batches go out side by side instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from pubsub.cluster import cluster_client, is_cluster, shared_prefix
from pubsub.errors import BrokerUnavailable
from pubsub.presence import SETTLE_BATCH, Seen
from pubsub.redis import command_client
from pubsub.session import REDIS_FAILURES

#: Users per script call; the calls of one operation go out in one pipeline.
CHUNK = 500
#: Connections of the store's client; on a cluster, script calls go this many at once.
CONNECTIONS = 4

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: online, leaving, then one user key per user; ARGV: instance, ttl, users...
#: Also the heartbeat: a user whose entry had lapsed (this instance stalled past the
#: TTL and was settled as offline meanwhile) comes online again.
ARRIVE = _NOW + """
local instance, expiry = ARGV[1], now + tonumber(ARGV[2])
local came = {}
for i = 3, #ARGV do
  local key, user = KEYS[i], ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local before = redis.call('ZCARD', key)
  redis.call('ZADD', key, expiry, instance)
  local newest = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  redis.call('PEXPIREAT', key, newest[2])
  redis.call('ZADD', KEYS[1], 'GT', expiry, user)
  if before == 0 and redis.call('ZREM', KEYS[2], user) == 0 then
    came[#came + 1] = user
  end
end
return came
"""

#: KEYS: online, leaving, then (user key, seen key) per user;
#: ARGV: instance, debounce, seen_ttl, users... A user whose entry here had lapsed was
#: settled already (or never arrived): nothing changes.
LEAVE = _NOW + """
local instance, due, seen_ttl = ARGV[1], now + tonumber(ARGV[2]), ARGV[3]
for i = 4, #ARGV do
  local key, seen, user = KEYS[2 * i - 5], KEYS[2 * i - 4], ARGV[i]
  local held = redis.call('ZREM', key, instance)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if held == 1 and redis.call('ZCARD', key) == 0 then
    redis.call('ZREM', KEYS[1], user)
    redis.call('SET', seen, now, 'PX', seen_ttl)
    redis.call('ZADD', KEYS[2], due, user)
  end
end
return 0
"""

#: KEYS: online, leaving; ARGV: user key prefix, seen key prefix, ttl, seen_ttl, limit.
#: Returns user, last seen (or ''), user, last seen, ...
SETTLE = _NOW + """
local users, seen, ttl, seen_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local limit = tonumber(ARGV[5])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, user in ipairs(due) do
  redis.call('ZREM', KEYS[2], user)
  if redis.call('ZCOUNT', users .. user, '(' .. now, '+inf') == 0 then
    out[#out + 1] = user
    out[#out + 1] = redis.call('GET', seen .. user) or ''
  end
end
if #due < limit then
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES',
                          'LIMIT', 0, limit - #due)
  for j = 1, #dead, 2 do
    local user, key = dead[j], users .. dead[j]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local newest = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    if #newest == 0 then
      redis.call('ZREM', KEYS[1], user)
      local last = tonumber(dead[j + 1]) - ttl  -- its last heartbeat
      redis.call('SET', seen .. user, last, 'PX', seen_ttl)
      out[#out + 1] = user
      out[#out + 1] = tostring(last)
    else
      redis.call('ZADD', KEYS[1], newest[2], user)
    end
  end
end
return out
"""

#: KEYS: leaving, then (user key, seen key) per user; ARGV: users.
#: Returns 1 or 0, last seen (or ''), per user.
LOOKUP = _NOW + """
local out = {}
for i = 1, #ARGV do
  local online = redis.call('ZCOUNT', KEYS[2 * i], '(' .. now, '+inf') > 0
    or redis.call('ZSCORE', KEYS[1], ARGV[i])
  if online then
    out[#out + 1] = 1
    out[#out + 1] = ''
  else
    out[#out + 1] = 0
    out[#out + 1] = redis.call('GET', KEYS[2 * i + 1]) or ''
  end
end
return out
"""


def _ms(value: Any) -> float | None:
    """Seconds from a script's milliseconds ('' or nothing: None)."""
    if value in (None, b"", ""):
        return None
    return int(float(value)) / 1000


class RedisPresence:
    """``PresenceStore`` on Redis (see the module docstring); ``instance`` must be
    unique to the process."""

    def __init__(
        self, url: str, prefix: str, instance: str, *, ttl: float = 30.0,
        debounce: float = 5.0, seen_ttl: float = 30 * 86400.0, timeout: float = 2.0,
    ) -> None:
        self._url, self._timeout, self.instance = url, timeout, instance
        prefix = shared_prefix(url, prefix)
        self._users, self._seen = f"{prefix}presence:user:", f"{prefix}presence:seen:"
        self._online, self._leaving = f"{prefix}presence:online", f"{prefix}presence:leaving"
        self._ttl_ms, self._debounce_ms = round(ttl * 1000), round(debounce * 1000)
        self._seen_ttl_ms = round(seen_ttl * 1000)
        self._client: Redis | RedisCluster | None = None
        self._scripts: dict[str, AsyncScript] = {}
        #: On a cluster, every script call holds one of the client's connections while
        #: it runs (its pool raises, never waits, once all are taken): heartbeats, syncs
        #: and lookups share them through this.
        self._connections = asyncio.Semaphore(CONNECTIONS)

    async def start(self) -> None:
        self._client = (cluster_client(self._url, self._timeout, max_connections=CONNECTIONS)
                        if is_cluster(self._url)
                        else command_client(self._url, self._timeout,
                                            max_connections=CONNECTIONS))
        for name, text in (("arrive", ARRIVE), ("leave", LEAVE), ("settle", SETTLE),
                           ("lookup", LOOKUP)):
            # EVALSHA, loading the script again after a Redis restart flushed it.
            self._scripts[name] = self._client.register_script(text)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await client.aclose()

    async def arrive(self, user_ids: list[str]) -> list[str]:
        replies = await self._run("arrive", [
            ([self._online, self._leaving, *(self._users + u for u in chunk)],
             [self.instance, self._ttl_ms, *chunk])
            for chunk in _chunks(user_ids)
        ])
        return [_text(user) for reply in replies for user in reply]

    async def leave(self, user_ids: list[str]) -> None:
        await self._run("leave", [
            ([self._online, self._leaving,
              *(key for u in chunk for key in (self._users + u, self._seen + u))],
             [self.instance, self._debounce_ms, self._seen_ttl_ms, *chunk])
            for chunk in _chunks(user_ids)
        ])

    async def settle(self) -> list[tuple[str, float | None]]:
        [reply] = await self._run("settle", [(
            [self._online, self._leaving],
            [self._users, self._seen, self._ttl_ms, self._seen_ttl_ms, SETTLE_BATCH],
        )])
        return [(_text(reply[i]), _ms(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def lookup(self, user_ids: list[str]) -> dict[str, Seen]:
        chunks = list(_chunks(user_ids))
        replies = await self._run("lookup", [
            ([self._leaving, *(key for u in chunk for key in (self._users + u, self._seen + u))],
             list(chunk))
            for chunk in chunks
        ])
        found = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            for n, user in enumerate(chunk):
                found[user] = Seen(bool(reply[2 * n]), _ms(reply[2 * n + 1]))
        return found

    async def _run(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Each ``(keys, args)`` call of script ``name``, pipelined; their replies."""
        if not calls:
            return []
        if self._client is None:
            raise BrokerUnavailable("the presence store is not started")
        script = self._scripts[name]
        try:
            if isinstance(self._client, RedisCluster):
                # A cluster pipeline does not load a script the node lacks (NOSCRIPT);
                # the calls go to one node anyway, so send them side by side, as many
                # at once as the client has connections.
                return list(await asyncio.gather(*(
                    self._limited(script, keys, args) for keys, args in calls)))
            if len(calls) == 1:
                keys, args = calls[0]
                return [await script(keys=keys, args=args)]
            async with self._client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                return list(await pipe.execute())
        except REDIS_FAILURES as exc:
            raise BrokerUnavailable(f"presence {name} failed: {exc}") from exc


    async def _limited(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        async with self._connections:
            return await script(keys=keys, args=args)


def _chunks(user_ids: list[str]) -> list[list[str]]:
    return [user_ids[i:i + CHUNK] for i in range(0, len(user_ids), CHUNK)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
