"""The user directory: where delivery channels reach a user (docs/delivery.md)."""

from __future__ import annotations

from typing import Any

from db import contacts as store
from db import deliveries
from db import notifications as notification_store
from hub.errors import InvalidInput, NotFound
from hub.models import Contact
from hub.services import Services

#: Why a time zone that Python knows and PostgreSQL does not is refused.
UNKNOWN_ZONE = ("is not in PostgreSQL's time zone data, which is older or newer than "
                "the hub's: choose a zone with the same clock that both know")


async def zones(svc: Services) -> frozenset[str]:
    """The time zone names PostgreSQL knows (read once per instance)."""
    if svc.time_zones is None:
        svc.time_zones = await store.time_zones(svc.pool)
    return svc.time_zones


def zone_error(zone: str | None, known: frozenset[str], loc: list[str]) -> InvalidInput | None:
    """The 422 for a time zone ``zone`` (at ``loc``) that PostgreSQL does not know; None
    if it does (or is None). Python's zoneinfo checked it already (``hub.models``)."""
    if zone is None or zone in known:
        return None
    return InvalidInput(f"unknown time zone {zone!r}",
                        errors=[{"loc": loc, "msg": UNKNOWN_ZONE}])


async def check_zone(svc: Services, zone: str | None, loc: list[str]) -> None:
    """Raise ``zone_error``'s InvalidInput, if any."""
    error = zone_error(zone, await zones(svc), loc) if zone is not None else None
    if error is not None:
        raise error


async def get(svc: Services, user_id: str) -> dict[str, Any]:
    """``user_id``'s contact; NotFound if none is stored."""
    found = await store.get(svc.pool, user_id)
    if found is None:
        raise NotFound("no contact is stored for this user")
    return found


async def put(svc: Services, user_id: str, contact: Contact) -> dict[str, Any]:
    """Store ``contact`` as ``user_id``'s whole contact (fields not given are cleared);
    InvalidInput if its time zone is one PostgreSQL does not know."""
    await check_zone(svc, contact.time_zone, ["time_zone"])
    return await store.put(svc.pool, user_id, contact.model_dump())


async def delete(svc: Services, user_id: str) -> None:
    """Forget ``user_id``'s contact; NotFound if none is stored."""
    if not await store.delete(svc.pool, user_id):
        raise NotFound("no contact is stored for this user")


async def deliveries_of(svc: Services, notification_id: int) -> list[dict[str, Any]]:
    """Each channel's delivery of one notification; NotFound if there is no such one."""
    async with svc.pool.acquire() as conn:
        if not await notification_store.by_ids(conn, [notification_id]):
            raise NotFound("no such notification")
        return await deliveries.by_notification(conn, notification_id)
