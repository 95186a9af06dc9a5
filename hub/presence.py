"""Presence (docs/live.md, "Presence"): who is online, and ``presence`` events to the
conversation partners of whoever comes online or goes offline.

``Presence`` is one instance's side of it. The node calls ``changed(user)`` when a
user's first connection here opens or their last one closes; that only marks the user
(no I/O, never blocks a connection). One task then, in batches:

- tells the store who arrived here and who left (``PresenceStore.arrive``/``leave``);
  a user whose connections here closed and reopened in between touches nothing;
- every third of ``HUB_PRESENCE_TTL_SECONDS``, refreshes every local user (the
  heartbeat) and settles: claims the users whose offline is due (the debounce ran out,
  or their instance died), on whichever instance gets there first;
- settles as well when the debounce of a user who left here runs out;
- announces the changes: one ``presence`` event per change, published on the channel
  of each of the user's conversation partners (``PARTNERS``), unless the user hides
  their presence (``hide_presence``).

Every step is one store call or one query per batch; a failed one is logged
(``hub.periodic.attempt``) and retried at the next heartbeat. Changes waiting to be
announced are bounded (``MAX_PENDING``); past that they are dropped (ephemeral).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db import messages as message_store
from hub import preferences
from hub.errors import Forbidden
from hub.events import encode, user_channel
from hub.periodic import attempt
from hub.services import Services
from pubsub.presence import SETTLE_BATCH, Seen

log = logging.getLogger("notifyhub")

#: Partners told of a change: the most recent this many ...
PARTNERS = 200
#: ... among the other parties of the user's newest this many sent and received messages.
RECENT_MESSAGES = 1000
#: Users whose change is announced per batch (one query of partners and preferences).
ANNOUNCE_BATCH = 500
#: Changes waiting to be announced, at most; later ones are dropped until there is room.
MAX_PENDING = 10_000
#: Settle calls per step at most (each claims up to ``SETTLE_BATCH`` users).
SETTLE_ROUNDS = 10
#: A change waits this long for others to join its batch (a reconnect storm).
COALESCE_SECONDS = 0.02
#: The last leave on stop waits at most this long for the store.
STOP_SECONDS = 2.0


def timestamp(seconds: float | None) -> datetime | None:
    """Epoch seconds as a UTC datetime (JSON: ``2026-05-01T18:00:00.123Z``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class Presence:
    """This instance's presence tracker (see the module docstring).

    ``is_local(user)`` says whether the user holds a connection here now.
    """

    def __init__(self, svc: Services, is_local: Callable[[str], bool]) -> None:
        self.svc, self.store = svc, svc.presence_store
        settings = svc.settings
        self.heartbeat = settings.presence_ttl_seconds / 3
        self.debounce = settings.presence_debounce_seconds
        self._is_local = is_local
        self._dirty: set[str] = set()
        #: Users the store holds as connected here (told by ``arrive``).
        self._here: set[str] = set()
        #: Changes to announce, by user, oldest first.
        self._pending: dict[str, _Change] = {}
        self._dropped = 0
        self._wake = asyncio.Event()
        self._settle_at = math.inf  # loop time when a debounce of a user who left here ends
        self._task: asyncio.Task[None] | None = None

    # ---- what the node and the preferences tell it -------------------------------------

    def changed(self, user_id: str) -> None:
        """``user_id``'s first connection here opened, or their last one closed."""
        self._dirty.add(user_id)
        self._wake.set()

    def visibility_changed(self, user_id: str) -> None:
        """``user_id`` switched ``hide_presence``: their partners learn what they may see."""
        self._queue(user_id, None, force=True)
        self._wake.set()

    # ---- the task ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        self._task = asyncio.create_task(self._run(), name="presence")

    async def stop(self) -> None:
        """Stop the task; the users still held here leave (their offline is announced
        by another instance after the debounce, unless they reconnect there)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if self._here:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_SECONDS):
                    await self.store.leave(sorted(self._here))
        self._here.clear()
        await self.store.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat
        while True:
            wait = min(next_beat, self._settle_at) - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            synced = await attempt("presence", self._sync)
            now = loop.time()
            beat = now >= next_beat
            if beat:
                next_beat = now + self.heartbeat
                await attempt("presence heartbeat", self._refresh)
            if beat or now >= self._settle_at:
                self._settle_at = math.inf
                await attempt("presence settle", self._settle)
            if synced is None and self._dirty:
                # The store is down: retry at the next heartbeat, not at every change.
                await asyncio.sleep(max(0.0, next_beat - loop.time()))
            for _ in range(MAX_PENDING // ANNOUNCE_BATCH):
                if not self._pending or await attempt("presence events", self._announce) is None:
                    break
            else:
                self._wake.set()  # more came meanwhile: go on after the pause

    async def _sync(self) -> bool:
        """Tell the store who arrived here and who left since the last sync."""
        dirty, self._dirty = self._dirty, set()
        arrived = [u for u in dirty if u not in self._here and self._is_local(u)]
        left = [u for u in dirty if u in self._here and not self._is_local(u)]
        try:
            if arrived:
                came = await self.store.arrive(arrived)
                self._here.update(arrived)
                for user in came:
                    self._queue(user, Seen(True, None))
        except BaseException:
            self._dirty |= dirty
            raise
        try:
            if left:
                await self.store.leave(left)
                self._here.difference_update(left)
                loop = asyncio.get_running_loop()
                self._settle_at = min(self._settle_at, loop.time() + self.debounce + 0.05)
        except BaseException:
            self._dirty.update(left)
            raise
        return True

    async def _refresh(self) -> None:
        """The heartbeat; a user the store had let lapse comes online again."""
        for user in await self.store.arrive(sorted(self._here)):
            self._queue(user, Seen(True, None))

    async def _settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            gone = await self.store.settle()
            for user, last_seen in gone:
                self._queue(user, Seen(False, last_seen))
            if len(gone) < SETTLE_BATCH:
                return

    def _queue(self, user_id: str, seen: Seen | None, *, force: bool = False) -> None:
        previous = self._pending.pop(user_id, None)
        if previous is None and len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return
        forced = force or (previous is not None and previous.forced)
        # A change of hide_presence is announced as the state is when it goes out.
        self._pending[user_id] = _Change(None if forced else seen, forced)

    # ---- announcing ---------------------------------------------------------------------

    async def _announce(self) -> bool:
        """Announce one batch of pending changes to the users' partners; a batch whose
        queries fail stays pending for the next try."""
        if self._dropped:
            log.warning("presence: %d change(s) not announced (over %d waiting)",
                        self._dropped, MAX_PENDING)
            self._dropped = 0
        batch = list(itertools.islice(self._pending.items(), ANNOUNCE_BATCH))
        pool = self.svc.pool
        prefs = await preferences.load_many(pool, [user for user, _ in batch])
        hidden = {user for user, p in prefs.items() if p.hide_presence}
        told = {user: change.seen for user, change in batch
                if change.forced or user not in hidden}
        unknown = [u for u, seen in told.items() if seen is None and u not in hidden]
        if unknown:
            told.update(await self.store.lookup(unknown))
        partners = await message_store.partners(
            pool, list(told), recent=RECENT_MESSAGES, limit=PARTNERS
        )
        frames = []
        for user, seen in told.items():
            shown = Seen(False, None) if user in hidden or seen is None else seen
            frame = encode("presence", None, view(user, shown))
            frames += [(user_channel(partner), frame) for partner in partners.get(user, ())]
        for user, change in batch:
            if self._pending.get(user) is change:  # not changed again meanwhile
                del self._pending[user]
        await self.svc.relay(frames, "presence events")
        return True


@dataclass(eq=False)
class _Change:
    """A change waiting to be announced: the state (None: look it up when it goes out)
    and whether it goes out even while the user hides their presence."""

    seen: Seen | None
    forced: bool = False


def view(user_id: str, seen: Seen) -> dict[str, Any]:
    """The ``{"user_id","online","last_seen"}`` of an event or a lookup."""
    return {"user_id": user_id, "online": seen.online, "last_seen": timestamp(seen.last_seen)}


async def lookup(svc: Services, user_ids: list[str], viewer: str | None) -> list[dict[str, Any]]:
    """The presence of ``user_ids`` as ``viewer`` may see it (None: an admin or a service).

    A user may see themselves and their conversation partners (anyone they exchanged a
    direct message with), and sees those who hide their presence as offline with no
    last-seen time; Forbidden, before anything is read, if any id is someone else.
    Admins and services see everyone as they are.
    """
    hidden: set[str] = set()
    if viewer is not None:
        others = [u for u in user_ids if u != viewer]
        if others:
            allowed = await message_store.partners_among(svc.pool, viewer, others)
            refused = len(others) - len(allowed)
            if refused:
                raise Forbidden(
                    f"{refused} of the user ids are not your conversation partners: you may "
                    "see the presence of users you exchanged direct messages with"
                )
            prefs = await preferences.load_many(svc.pool, others)
            hidden = {u for u, p in prefs.items() if p.hide_presence}
    found = await svc.presence_store.lookup(user_ids)
    return [view(u, Seen(False, None) if u in hidden else found[u]) for u in user_ids]
