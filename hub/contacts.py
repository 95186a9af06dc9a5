"""The user directory: where delivery channels reach a user (docs/delivery.md)."""

from __future__ import annotations

from typing import Any

from db import contacts as store
from db import deliveries
from db import notifications as notification_store
from hub.errors import NotFound
from hub.models import Contact
from hub.services import Services


async def get(svc: Services, user_id: str) -> dict[str, Any]:
    """``user_id``'s contact; NotFound if none is stored."""
    found = await store.get(svc.pool, user_id)
    if found is None:
        raise NotFound("no contact is stored for this user")
    return found


async def put(svc: Services, user_id: str, contact: Contact) -> dict[str, Any]:
    """Store ``contact`` as ``user_id``'s whole contact (fields not given are cleared)."""
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
