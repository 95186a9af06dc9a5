"""Redis Cluster: sharded pub/sub between hub instances, and the names keys take there.

``redis+cluster://host:port`` (``rediss+cluster://`` for TLS) names a cluster by one seed
node; the others are discovered. Logical channel ``c`` is the shard channel ``{prefix}c``
(``SSUBSCRIBE``/``SPUBLISH``, Redis >= 7): its slot is that of the whole name, so user
channels spread over the shards and a publish touches only the shard that owns it.
Keys shared by the instances and backends take the prefix in braces (``{hub:}ingest``,
``shared_prefix``): one hash tag puts them in one slot, so a MULTI or a script that
touches several of them runs on one node.

``ClusterBroker`` holds one subscriber connection per master (a *link*), each carrying
the wanted channels of the slots that master serves, plus a probe channel of this
instance hashed to one of those slots. A failure on any of them (connection lost,
``MOVED`` in reply to ``SSUBSCRIBE``, an ``SUNSUBSCRIBE`` the server sent because a slot
moved away, a probe not echoed, a confirmation not received) ends the whole link: the
broker re-reads the slot map, opens a new link on the masters it names, re-subscribes
every wanted channel on its current owner, then awaits ``on_reconnect`` (the hub's gap
fill from PostgreSQL covers what pub/sub dropped meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError, SlotNotCoveredError

from pubsub.broker import MessageHandler, ReconnectHandler
from pubsub.errors import BrokerUnavailable
from pubsub.redis import SCRIPT_CHUNK
from pubsub.session import REDIS_FAILURES, Sent, Session, SessionBroker, wire

logger = logging.getLogger(__name__)

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Publishes a batch of messages whose channels all live on the node it runs on (the
#: channels are not declared as keys: they span slots, which the flag allows).
#: Returns the positions (in ARGV, 1-based) of the channels it could not publish to:
#: those its node no longer serves (``pcall`` goes on past them).
_SPUBLISH_ALL = """#!lua flags=allow-cross-slot-keys
local failed = {}
for i = 1, #ARGV, 2 do
  local reply = redis.pcall('SPUBLISH', ARGV[i], ARGV[i + 1])
  if type(reply) == 'table' and reply.err then failed[#failed + 1] = i end
end
return failed
"""


def is_cluster(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url is not None and urlsplit(url).scheme in SCHEMES


def shared_prefix(url: str, prefix: str) -> str:
    """The prefix of keys (and of the ``publish`` channel): ``prefix`` itself on a single
    Redis, ``{prefix}`` on a cluster, so that they all hash to one slot."""
    return "{" + prefix + "}" if is_cluster(url) else prefix


def node_url(url: str, host: str | None = None, port: str | int | None = None) -> str:
    """``url`` as a plain ``redis://`` (or ``rediss://``) URL, for the node ``host:port``
    when given; credentials and query options are kept."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme, parts.scheme)
    netloc = parts.netloc
    if host is not None:
        auth = netloc.rpartition("@")[0]
        netloc = (auth + "@" if auth else "") + f"{host}:{port}"
    return urlunsplit(parts._replace(scheme=scheme, netloc=netloc))


def cluster_client(url: str, timeout: float, max_connections: int = 16) -> RedisCluster:
    """A client for commands on the cluster ``url``; ``timeout`` bounds connecting and each
    command. It follows ``MOVED``/``ASK`` and re-reads the slot map when a node fails."""
    return RedisCluster.from_url(
        node_url(url), socket_timeout=timeout, socket_connect_timeout=timeout,
        socket_keepalive=True, max_connections=max_connections,
    )


class Router:
    """Finds the master that serves a key, for readers that need one plain connection
    (a blocking read, CLIENT UNBLOCK, MULTI). It remembers every node it has seen, so it
    works on when the seed node is gone."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self._cluster = cluster_client(url, timeout, max_connections=2)

    async def url_for(self, key: str) -> str:
        """A plain URL of the master serving ``key``, from a freshly read slot map."""
        await self._cluster.nodes_manager.initialize()
        node = master_of(self._cluster, key)
        return node_url(self.url, node.host, node.port)

    async def aclose(self) -> None:
        with contextlib.suppress(*REDIS_FAILURES):
            await self._cluster.aclose()


def master_of(cluster: RedisCluster, key: str) -> ClusterNode:
    """The master serving ``key`` by ``cluster``'s slot map; SlotNotCoveredError if none."""
    node = cluster.get_node_from_key(key)
    if node is None:
        raise SlotNotCoveredError(f"no master serves {key!r}")
    return node


_tags: dict[int, str] = {}


def tag_for_slot(slot: int) -> str:
    """A short string whose hash slot is ``slot`` (found once, then remembered)."""
    if slot not in _tags:
        n = 0
        while key_slot(str(n).encode()) != slot:
            n += 1
        _tags[slot] = str(n)
    return _tags[slot]


@dataclass(eq=False)
class _Shard:
    """The link's subscriber connection to one master."""

    name: str  # host:port
    client: Redis
    session: Session
    probe: bytes  # this instance's probe channel, in a slot this master serves
    # SUNSUBSCRIBEs sent and not yet confirmed: any other SUNSUBSCRIBE is the server's.
    unsubscribing: Counter[bytes] = field(default_factory=Counter)


class ClusterBroker(SessionBroker):
    """Broker over sharded pub/sub on a Redis Cluster (see the module docstring).

    The contract is ``RedisBroker``'s: ``subscribe`` returns once the owner of the
    channel's slot confirmed it (or at once while the cluster is unreachable: the next
    link subscribes it), every lost link is followed by ``on_reconnect``, ``timeout``
    bounds connecting, each command and each confirmation, and ``probe_interval *
    probe_misses`` bounds trust in a silent connection.
    """

    _log, _name = logger, "redis cluster broker"

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        probe_interval: float = 1.0,
        probe_misses: int = 3,
        timeout: float = 2.0,
        max_connections: int = 16,
    ) -> None:
        super().__init__(
            prefix, probe_interval=probe_interval, probe_misses=probe_misses, timeout=timeout
        )
        self._url, self._max_connections = url, max_connections
        self._instance = uuid.uuid4().hex
        self._link: dict[str, _Shard] | None = None
        self._cluster: RedisCluster | None = None
        self._scripted = True  # False once the cluster refused EVAL (an ACL, say)

    async def start(self, on_message: MessageHandler, on_reconnect: ReconnectHandler) -> None:
        """Subscribe and begin delivering; raises ``BrokerUnavailable`` if the cluster is
        unreachable."""
        if self._cluster is not None:
            raise RuntimeError("ClusterBroker already started")
        self._on_message, self._on_reconnect = on_message, on_reconnect
        self._cluster = cluster_client(self._url, self._timeout, self._max_connections)
        try:
            await self._cluster.initialize()
            await self._open_link()
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, REDIS_FAILURES):
                raise BrokerUnavailable(f"cannot subscribe on the Redis cluster: {exc}") from exc
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-cluster-broker")

    async def stop(self) -> None:
        """Stop reconnecting and close every connection; prompt even when nodes are down."""
        await self._halt()
        if self._link is not None:
            await self._close_link(self._link)
        self._wanted.clear()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await cluster.aclose()

    async def publish(self, channel: str, message: bytes, seq: int | None = None) -> None:
        """SPUBLISH on the shard of ``channel``; raises ``BrokerUnavailable`` on failure."""
        if self._cluster is None:
            raise BrokerUnavailable("ClusterBroker is not started")
        try:
            await self._cluster.spublish(self._prefix + channel, wire(seq, message))
        except REDIS_FAILURES as exc:
            raise BrokerUnavailable(f"publish to {channel!r} failed: {exc}") from exc

    async def publish_many(self, messages: list[tuple[str, int | None, bytes]]) -> None:
        """Publish every message, in order per channel: one script per node and 1000
        messages, the nodes in parallel. A node whose script fails (its slots moved, it
        failed over) gets its messages again as pipelined SPUBLISHes, which follow
        ``MOVED``; some may then arrive twice (subscribers drop repeats by seq). Raises
        ``BrokerUnavailable`` when that fails too."""
        if self._cluster is None:
            raise BrokerUnavailable("ClusterBroker is not started")
        cluster = self._cluster
        groups: defaultdict[str, list[bytes | str]] = defaultdict(list)
        try:
            for channel, seq, message in messages:
                name = self._prefix + channel
                groups[master_of(cluster, name).name].extend(
                    (name, wire(seq, message)))
            await asyncio.gather(*(self._publish_on(node, args) for node, args in groups.items()))
        except REDIS_FAILURES as exc:
            raise BrokerUnavailable(f"publishing {len(messages)} message(s) failed: {exc}") from exc

    async def _publish_on(self, node_name: str, args: list[bytes | str]) -> None:
        assert self._cluster is not None
        cluster = self._cluster
        node = cluster.get_node(node_name=node_name)
        if self._scripted and node is not None:
            args = await self._publish_scripted(node, node_name, args)
            if not args:
                return
        pipe = cluster.pipeline(transaction=False)
        for i in range(0, len(args), 2):
            pipe.spublish(args[i], args[i + 1])
        await pipe.execute()

    async def _publish_scripted(
        self, node: ClusterNode, node_name: str, args: list[bytes | str]
    ) -> list[bytes | str]:
        """Publish ``args`` on ``node`` by script; what is left to send per channel.

        Left: the channels the node no longer serves (the slot map was stale), and
        everything from a chunk whose call failed. Only a call that failed after the
        server ran it (a connection lost meanwhile) can make a message arrive twice.
        """
        assert self._cluster is not None
        left: list[bytes | str] = []
        for i in range(0, len(args), 2 * SCRIPT_CHUNK):
            chunk = args[i:i + 2 * SCRIPT_CHUNK]
            try:
                failed = await self._cluster.execute_command(
                    "EVAL", _SPUBLISH_ALL, 0, *chunk, target_nodes=node)
            except NoPermissionError as exc:  # scripting refused (ACL): for good
                if self._scripted:  # nodes fail side by side: log once
                    logger.warning("publishing with a Lua script is not allowed (%s); "
                                   "using pipelined SPUBLISH from now on", exc)
                    self._scripted = False
                return left + args[i:]
            except ResponseError as exc:  # READONLY, TRYAGAIN, BUSY, ...
                if "unknown command" in str(exc).lower() and self._scripted:
                    logger.warning("this cluster cannot run Lua scripts (%s); using "
                                   "pipelined SPUBLISH from now on", exc)
                    self._scripted = False
                else:
                    logger.debug("publishing on %s: %s; per channel this time",
                                 node_name, exc)
                return left + args[i:]
            except (RedisConnectionError, OSError) as exc:
                logger.info("publishing on %s failed (%s); publishing per channel",
                            node_name, exc)
                return left + args[i:]
            for at in failed or ():
                left += chunk[int(at) - 1:int(at) + 1]
        if left:
            logger.debug("publishing on %s: %d channel(s) served elsewhere now; per "
                         "channel, following MOVED", node_name, len(left) // 2)
        return left

    async def subscribe(self, channel: str) -> None:
        """Return once the subscription is active, or at once while the cluster is
        unreachable: the next link subscribes it, and ``on_reconnect`` follows."""
        self._wanted.add(channel)
        await self._apply("SSUBSCRIBE", channel)

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` at once; return once confirmed (or the link is gone)."""
        self._wanted.discard(channel)
        await self._apply("SUNSUBSCRIBE", channel)

    @property
    def healthy(self) -> bool:
        """A link is open, and every master's probe came back recently."""
        link = self._link
        return link is not None and all(
            shard.session.healthy(self._probe_limit) for shard in link.values()
        )

    async def _send(self, command: str, channel: str) -> Sent | None:
        async with self._send_lock:
            link = self._link
            if link is None or any(shard.session.closing for shard in link.values()):
                return None  # the next link subscribes from self._wanted
            name = (self._prefix + channel).encode()
            shard = self._owner(link, name)
            if shard is None:
                return None
            session = shard.session
            waiter = session.expect()
            try:
                if command == "SUNSUBSCRIBE":
                    shard.unsubscribing[name] += 1
                    await asyncio.wait_for(session.pubsub.sunsubscribe(name), self._timeout)
                else:
                    await asyncio.wait_for(session.pubsub.ssubscribe(name), self._timeout)
            except REDIS_FAILURES as exc:
                session.kill(f"{command} failed: {exc}")
            return session, waiter

    def _owner(self, link: dict[str, _Shard], name: bytes) -> _Shard | None:
        """The shard whose master serves ``name``'s slot; None (and the link is ended)
        when the slot map names a master the link does not hold."""
        assert self._cluster is not None
        node: ClusterNode | None = None
        try:
            node = master_of(self._cluster, name.decode())
        except REDIS_FAILURES as exc:
            reason = f"no owner for {name!r}: {exc}"
        else:
            reason = f"{node.name} serves {name!r} but is not in the link"
        shard = link.get(node.name) if node is not None else None
        if shard is None:
            for other in link.values():
                other.session.kill(reason)
        return shard

    async def _open_link(self) -> None:
        assert self._cluster is not None
        masters = self._cluster.get_primaries()
        link: dict[str, _Shard] = {}
        waiters: list[asyncio.Future[bool]] = []
        try:
            async with self._send_lock:
                slots = self._cluster.nodes_manager.slots_cache
                serving = {nodes[0].name for nodes in slots.values()}
                for node in masters:
                    if node.name in serving:  # a master with no slots gets no channel
                        link[node.name] = self._shard(node)
                by_slot: defaultdict[tuple[str, int], list[bytes]] = defaultdict(list)
                for channel in self._wanted:
                    name = (self._prefix + channel).encode()
                    owner = master_of(self._cluster, name.decode())
                    by_slot[owner.name, key_slot(name)].append(name)
                for shard in link.values():
                    waiters.append(shard.session.expect())
                    await asyncio.wait_for(shard.session.pubsub.ssubscribe(shard.probe),
                                           self._timeout)
                for (node_name, _), names in by_slot.items():
                    shard = link[node_name]
                    waiters.extend(shard.session.expect() for _ in names)
                    # One SSUBSCRIBE per slot: a node refuses channels of several slots.
                    await asyncio.wait_for(shard.session.pubsub.ssubscribe(*names),
                                           self._timeout)
                for shard in link.values():
                    dispatch = functools.partial(self._dispatch, shard)
                    shard.session.tasks.add(asyncio.create_task(
                        shard.session.read(dispatch), name=f"redis-reader {shard.name}"))
                self._link = link
            if not all(await asyncio.wait_for(asyncio.gather(*waiters), self._timeout)):
                reasons = [s.session.reason for s in link.values() if s.session.reason]
                raise RedisConnectionError(
                    "; ".join(reasons) or "connection lost while subscribing")
        except BaseException:
            await self._close_link(link)
            raise
        now = time.monotonic()
        for shard in link.values():
            shard.session.probe_seen, shard.session.live = now, True
            probe = functools.partial(self._cluster.spublish, shard.probe, b"probe")
            shard.session.tasks.add(asyncio.create_task(
                self._probe(shard.session, probe, f" on {shard.name}"),
                name=f"redis-probe {shard.name}"))

    def _shard(self, node: ClusterNode) -> _Shard:
        assert self._cluster is not None
        slots = self._cluster.nodes_manager.slots_cache
        # Its highest slot: a reshard moves a master's lowest slots first.
        slot = max(s for s, nodes in slots.items() if nodes[0].name == node.name)
        probe = f"{self._prefix}probe:{{{tag_for_slot(slot)}}}:{self._instance}".encode()
        # No hidden retries: a lost connection must end the link (RedisBroker.start).
        client = Redis.from_url(
            node_url(self._url, node.host, node.port), socket_timeout=None,
            socket_connect_timeout=self._timeout, socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        return _Shard(node.name, client, Session(client.pubsub()), probe)

    async def _close_link(self, link: dict[str, _Shard]) -> None:
        if self._link is link:
            self._link = None
        for shard in link.values():
            shard.session.closing, shard.session.live = True, False
            for task in shard.session.tasks:
                task.cancel()
        for shard in link.values():
            await asyncio.gather(*shard.session.tasks, return_exceptions=True)
            shard.session.settle(confirmed=False)
            with contextlib.suppress(*REDIS_FAILURES):
                await shard.session.pubsub.aclose()
            with contextlib.suppress(*REDIS_FAILURES):
                await shard.client.aclose()

    def _dispatch(self, shard: _Shard, message: dict[str, Any]) -> None:
        kind, name = message["type"], message["channel"]
        if kind == "ssubscribe":
            shard.session.settle(confirmed=True)
        elif kind == "sunsubscribe":
            if shard.unsubscribing[name] > 0:
                shard.unsubscribing[name] -= 1
                if not shard.unsubscribing[name]:
                    del shard.unsubscribing[name]  # no entry per channel ever left
                shard.session.settle(confirmed=True)
            else:  # the server's: the channel's slot moved to another master
                shard.session.kill(f"{shard.name} dropped {name!r} (its slot moved)")
        elif kind == "smessage" and name == shard.probe:
            shard.session.echoed()
        elif kind == "smessage":
            self._deliver(name, message["data"])

    async def _lost(self) -> None:
        if (link := self._link) is not None:
            tasks = {task for shard in link.values() for task in shard.session.tasks}
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reasons = [s.session.reason for s in link.values() if s.session.reason]
            reasons += [repr(t.exception()) for t in done if not t.cancelled()]
            logger.warning("redis cluster broker lost its link (%s); reconnecting",
                           "; ".join(reasons))
            await self._close_link(link)

    async def _reopen(self) -> None:
        assert self._cluster is not None
        # The slot map as the cluster sees it now: a promoted replica, a slot moved.
        await self._cluster.nodes_manager.initialize()
        await self._open_link()
        logger.info("redis cluster broker re-subscribed %d channels on %d masters",
                    len(self._wanted), len(self._link or ()))
