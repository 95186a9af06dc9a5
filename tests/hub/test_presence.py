"""The presence tracker of one instance: batching, the local debounce, its bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub import presence as presence_module
from hub.presence import Presence
from pubsub.presence import MemoryPresence, Seen
from tests.hub.conftest import listening_services
from tests.waiting import eventually


class RecordingStore(MemoryPresence):
    """The in-process store, noting each call that changes something."""

    def __init__(self) -> None:
        super().__init__(debounce=0.2)
        self.calls: list[tuple[str, list[str]]] = []

    async def arrive(self, user_ids: list[str]) -> list[str]:
        self.calls.append(("arrive", sorted(user_ids)))
        return await super().arrive(user_ids)

    async def leave(self, user_ids: list[str]) -> None:
        self.calls.append(("leave", sorted(user_ids)))
        await super().leave(user_ids)


async def test_a_reconnect_between_two_syncs_never_reaches_the_store(
    database_url: str, tmp_path: Path
) -> None:
    async with listening_services(database_url, tmp_path, lambda *m: None, []) as svc:
        store = svc.presence_store = RecordingStore()
        local: set[str] = set()
        tracker = Presence(svc, local.__contains__)
        await tracker.start()
        try:
            # Open, close and open again before the tracker runs: one arrive, in a batch.
            for user in ("bob", "cid"):
                local.add(user)
                tracker.changed(user)
            local.discard("bob")
            tracker.changed("bob")
            local.add("bob")
            tracker.changed("bob")
            await eventually(lambda: store.calls)
            assert store.calls == [("arrive", ["bob", "cid"])]
            # Close and reopen here between syncs: nothing at all.
            local.discard("bob")
            tracker.changed("bob")
            local.add("bob")
            tracker.changed("bob")
            local.discard("cid")
            tracker.changed("cid")  # the control: its leave shows the sync ran
            await eventually(lambda: len(store.calls) == 2)
            assert store.calls[1] == ("leave", ["cid"])
            assert (await store.lookup(["bob"]))["bob"] == Seen(True, None)
        finally:
            await tracker.stop()
        assert store.calls[-1] == ("leave", ["bob"])  # stopping lets go of the rest


async def test_changes_waiting_to_be_announced_are_bounded(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(presence_module, "MAX_PENDING", 50)
    async with listening_services(database_url, tmp_path, lambda *m: None, []) as svc:
        tracker = Presence(svc, lambda user: False)  # not started: nothing drains it
        for i in range(80):
            tracker.visibility_changed(f"u{i}")
        tracker.visibility_changed("u3")  # a user already waiting still changes
        assert len(tracker._pending) == 50
        assert "u49" in tracker._pending and "u50" not in tracker._pending
