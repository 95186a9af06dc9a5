"""The PresenceStore contract against both stores, and RedisPresence across instances."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pubsub.errors import BrokerUnavailable
from pubsub.presence import MemoryPresence, PresenceStore, Seen
from pubsub.redis_presence import RedisPresence
from tests.servers import RedisServer
from tests.waiting import eventually

#: The debounce of these tests' stores, in seconds: long enough that a call right after
#: a leave lands inside it, short enough to wait out.
DEBOUNCE = 0.3

MakeStore = Callable[..., PresenceStore]


@pytest.fixture
async def stores() -> AsyncIterator[list[PresenceStore]]:
    """Stores started by the test, all stopped at the end."""
    started: list[PresenceStore] = []
    yield started
    for store in started:
        await store.stop()


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, stores: list[PresenceStore]) -> MakeStore:
    """``await make_store(**options)``: a started store; every Redis one shares a prefix
    (instances of one hub cluster), each with its own instance id."""
    kind = request.param
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")

    async def make(**options: Any) -> PresenceStore:
        options.setdefault("debounce", DEBOUNCE)
        store: PresenceStore
        if kind == "memory":
            options.pop("ttl", None)
            store = MemoryPresence(**options)
        else:
            store = RedisPresence(url, prefix, uuid.uuid4().hex, **options)
        await store.start()
        stores.append(store)
        return store

    return make


async def settled(*stores: PresenceStore, until: set[str]) -> list[tuple[str, float | None]]:
    """Everything ``stores`` settle (all polling at once) until each of ``until`` was."""
    claims: list[tuple[str, float | None]] = []

    async def poll(store: PresenceStore) -> None:
        while not until <= {user for user, _ in claims}:
            claims.extend(await store.settle())
            await asyncio.sleep(0.01)

    await asyncio.wait_for(asyncio.gather(*(poll(store) for store in stores)), 10)
    return claims


# ---- the contract, on both stores ---------------------------------------------------


async def test_a_user_comes_online_once_and_is_looked_up_online(make_store: MakeStore) -> None:
    store = await make_store()
    assert sorted(await store.arrive(["ann", "bob"])) == ["ann", "bob"]
    assert await store.arrive(["ann"]) == []  # already online: the heartbeat
    found = await store.lookup(["ann", "bob", "cid"])
    assert found == {"ann": Seen(True, None), "bob": Seen(True, None), "cid": Seen(False, None)}


async def test_a_user_who_left_stays_online_through_the_debounce_then_settles_once(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.arrive(["ann"])
    await store.leave(["ann"])
    assert await store.lookup(["ann"]) == {"ann": Seen(True, None)}  # within the debounce
    [(user, last_seen)] = await settled(store, until={"ann"})
    assert user == "ann" and last_seen is not None
    assert await store.settle() == []  # claimed once
    assert await store.lookup(["ann"]) == {"ann": Seen(False, last_seen)}
    assert await store.arrive(["ann"]) == ["ann"]  # online again, at once
    assert await store.lookup(["ann"]) == {"ann": Seen(True, None)}


async def test_coming_back_within_the_debounce_is_no_change(make_store: MakeStore) -> None:
    store = await make_store()
    await store.arrive(["ann", "bob"])
    await store.leave(["ann", "bob"])
    assert await store.arrive(["ann"]) == []  # a page reload: nothing to announce
    claims = await settled(store, until={"bob"})  # bob's debounce ran out: so did ann's
    assert [user for user, _ in claims] == ["bob"]
    assert (await store.lookup(["ann"]))["ann"].online


async def test_a_user_never_seen_is_offline_without_a_last_seen(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.lookup(["nobody"]) == {"nobody": Seen(False, None)}
    await store.leave(["nobody"])  # never arrived: nothing changes
    await store.arrive(["ctl"])
    await store.leave(["ctl"])
    assert [user for user, _ in await settled(store, until={"ctl"})] == ["ctl"]
    assert await store.lookup(["nobody"]) == {"nobody": Seen(False, None)}


async def test_ids_that_look_like_keys_are_ordinary_users(make_store: MakeStore) -> None:
    store = await make_store()
    odd = ["online", "leaving", "user:x", "seen:x", "*", "a b", "名前", "team/ann"]
    assert sorted(await store.arrive(odd)) == sorted(odd)
    await store.leave(["online"])
    assert all(seen.online for seen in (await store.lookup(odd)).values())
    claims = await settled(store, until={"online"})
    assert [user for user, _ in claims] == ["online"]
    found = await store.lookup(odd)
    assert not found["online"].online
    assert all(found[user].online for user in odd if user != "online")


# ---- Redis: several instances on one prefix ------------------------------------------


async def redis_store(url: str, prefix: str, stores: list[PresenceStore], **options: Any
                      ) -> RedisPresence:
    options.setdefault("debounce", DEBOUNCE)
    store = RedisPresence(url, prefix, uuid.uuid4().hex, **options)
    await store.start()
    stores.append(store)
    return store


async def test_a_user_on_two_instances_stays_online_until_both_let_go(
    redis_url: str, redis_prefix: str, stores: list[PresenceStore]
) -> None:
    a = await redis_store(redis_url, redis_prefix, stores)
    b = await redis_store(redis_url, redis_prefix, stores)
    assert await a.arrive(["ann"]) == ["ann"]
    assert await b.arrive(["ann"]) == []  # online already, on a
    await a.leave(["ann"])
    await a.arrive(["ctl"])
    await a.leave(["ctl"])
    claims = await settled(a, b, until={"ctl"})
    assert [user for user, _ in claims] == ["ctl"]
    assert (await a.lookup(["ann"]))["ann"].online
    await b.leave(["ann"])
    assert [user for user, _ in await settled(a, b, until={"ann"})] == ["ann"]


async def test_the_users_of_a_dead_instance_are_settled_once_after_the_ttl(
    redis_url: str, redis_prefix: str, stores: list[PresenceStore]
) -> None:
    dead = await redis_store(redis_url, redis_prefix, stores, ttl=0.5)
    survivors = [await redis_store(redis_url, redis_prefix, stores, ttl=0.5) for _ in range(3)]
    users = [f"u{i}" for i in range(50)]
    await dead.arrive(users)
    await survivors[0].arrive(["kept"])
    # The dead instance never refreshes again; three survivors race to settle its users.
    refresh = asyncio.create_task(_keep_refreshing(survivors[0], ["kept"]))
    try:
        claims = await settled(*survivors, until=set(users))
    finally:
        refresh.cancel()
    assert sorted(user for user, _ in claims) == sorted(users)  # each once, "kept" not
    assert all(last_seen is not None for _, last_seen in claims)
    found = await survivors[1].lookup([*users, "kept"])
    assert not any(found[user].online for user in users)
    assert found["kept"].online


async def _keep_refreshing(store: PresenceStore, users: list[str]) -> None:
    while True:
        await store.arrive(users)
        await asyncio.sleep(0.1)


async def test_an_instance_that_stalled_past_the_ttl_brings_its_users_back_online(
    redis_url: str, redis_prefix: str, stores: list[PresenceStore]
) -> None:
    stalled = await redis_store(redis_url, redis_prefix, stores, ttl=0.3)
    other = await redis_store(redis_url, redis_prefix, stores, ttl=0.3)
    await stalled.arrive(["ann"])
    assert [u for u, _ in await settled(other, until={"ann"})] == ["ann"]
    assert await stalled.arrive(["ann"]) == ["ann"]  # its next heartbeat: online again
    assert (await other.lookup(["ann"]))["ann"].online


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_a_heartbeat_of_ten_thousand_users_goes_through(
    kind: str, request: pytest.FixtureRequest, redis_prefix: str, stores: list[PresenceStore]
) -> None:
    # On a single Redis one pipelined call; on a cluster 20 script calls to one node,
    # more than its client's connections at once.
    url: str = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    store = await redis_store(url, redis_prefix, stores)
    users = [f"user-{i}" for i in range(10_000)]
    # Lookups (REST) run beside the heartbeat and share its connections.
    arrived, *looked = await asyncio.gather(
        store.arrive(users), *(store.lookup([f"other-{i}"]) for i in range(8)))
    assert len(arrived) == len(users)
    assert all(found == {f"other-{i}": Seen(False, None)} for i, found in enumerate(looked))
    assert await store.arrive(users) == []
    found = await store.lookup(users)
    assert len(found) == len(users) and all(seen.online for seen in found.values())
    await store.leave(users)
    assert len(await settled(store, until=set(users))) == len(users)


async def test_redis_down_raises_broker_unavailable_and_changes_nothing(
    own_redis: RedisServer, stores: list[PresenceStore]
) -> None:
    store = await redis_store(own_redis.url, "p:", stores, timeout=0.5)
    await store.arrive(["ann"])
    own_redis.kill()
    for call in (store.arrive(["bob"]), store.leave(["ann"]), store.settle(),
                 store.lookup(["ann"])):
        with pytest.raises(BrokerUnavailable):
            await call
    own_redis.start()  # its data back from the append-only file
    found = await eventually(lambda: _lookup_or_none(store, ["ann", "bob"]))
    assert found == {"ann": Seen(True, None), "bob": Seen(False, None)}


async def _lookup_or_none(store: PresenceStore, users: list[str]) -> dict[str, Seen] | None:
    try:
        return await store.lookup(users)
    except BrokerUnavailable:
        return None
