"""The web push channel (RFC 8030, 8291, 8292): a notification to each of a user's browsers.

For each stored subscription of the recipient (``hub.push_subscriptions``), one POST to
its push service's endpoint with:

- the body: the notification as small JSON (id, type, title, body, link, priority),
  encrypted for that browser (RFC 8291 ``aes128gcm``, pywebpush);
- ``Authorization: vapid t=<JWT>, k=<public key>`` (RFC 8292, ``hub.vapid``);
- ``TTL`` (``HUB_PUSH_TTL_SECONDS``), ``Urgency`` from the priority, and ``Topic``
  ``n<id>``, so a newer push about the same notification replaces one still undelivered.

Outcome of a delivery (docs/delivery.md, "Web push"): a push service answering 404 or
410 means the subscription is gone, so it is deleted; 429, 5xx, timeouts and network
errors are temporary; if any subscription failed temporarily the delivery is retried
(browsers that got it already replace it: same ``Topic`` and notification tag);
otherwise it is sent if one was accepted, and failed for good when none was.

Cross-device dismissal (``DismissChannel``, channel ``push.dismiss``): when a
notification whose push was sent is read, every subscription gets
``{"type": "dismiss", "id"}`` with the same ``Topic`` (it replaces the push where the push
service still holds it) and the service worker closes the notification shown with that
tag. Same outcomes as a push. A push accepted for some browsers and retried for others
records that it reached a device (``db.deliveries.reached``), so it is dismissed even if
it ends ``failed``; one that reached none is not dismissed.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from pywebpush import WebPusher

from db import deliveries
from db import push as store
from db.pool import Pool
from hub.channels import Delivery, Permanent, Skip, Temporary
from hub.services import Services
from hub.settings import Settings
from hub.vapid import Vapid, resolve

log = logging.getLogger("notifyhub.push")

NAME = "push"
#: The channel of cross-device dismissals (``DismissChannel``): not a preference, never
#: decided at create, scheduled when a notification whose push was sent is read.
DISMISS = "push.dismiss"
#: The longest a push service keeps a dismissal for an offline browser (seconds).
DISMISS_TTL = 3600
#: The largest plaintext sent: RFC 8291 allows 3993 bytes in one 4096-byte record.
MAX_PLAINTEXT_BYTES = 3800
#: A push service's answer must come within this; then the attempt is temporary.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Connections to push services one process keeps open at most.
MAX_CONNECTIONS = 50
#: Why a dismissal is not sent: its push, tried, reached no browser.
NOT_SHOWN = "the push reached no device"
URGENCY = {"high": "high", "normal": "normal", "low": "low"}
GONE = (404, 410)


class RetryLater(Temporary):
    """A push service asked to wait (429/503 with ``Retry-After``): ``retry_after`` s."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def topic(notification_id: int) -> str:
    """The ``Topic`` (≤ 32 base64url characters) and notification tag of a notification."""
    return f"n{notification_id}"


def payload(notification: dict[str, Any]) -> bytes:
    """The JSON a service worker gets, shortened (body, then title, then no link) to fit
    ``MAX_PLAINTEXT_BYTES``."""
    doc = {
        "id": notification["id"],
        "type": notification.get("type"),
        "title": notification.get("title") or "",
        "body": notification.get("body") or "",
        "link": notification.get("link"),
        "priority": notification.get("priority") or "normal",
    }
    data = orjson.dumps(doc)
    for key in ("body", "title"):
        over = len(data) - MAX_PLAINTEXT_BYTES
        if over > 0 and doc[key]:
            # Cut the bytes too many plus room for the ellipsis (3 bytes), at a character
            # boundary (JSON escapes of control characters may take a little more).
            text = doc[key].encode()
            keep = text[: max(0, len(text) - over - 3)].decode(errors="ignore").rstrip()
            doc[key] = keep + "…" if keep else ""
            data = orjson.dumps(doc)
    if len(data) > MAX_PLAINTEXT_BYTES:
        doc["link"] = None
        data = orjson.dumps(doc)
    return data


def dismiss_payload(notification_id: int) -> bytes:
    """The JSON that tells a service worker to close the push shown for a notification."""
    return orjson.dumps({"type": "dismiss", "id": notification_id})


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True, slots=True)
class _Outcome:
    subscription_id: int
    status: int | None  # None: no answer (timeout, network)
    reason: str
    retry_after: float | None = None

    @property
    def sent(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status in GONE

    @property
    def temporary(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class PushChannel:
    """Sends deliveries as web pushes to every subscription of their recipient."""

    name = NAME

    def __init__(
        self, pool: Pool, vapid: Vapid, *, ttl: int, client: httpx.AsyncClient | None = None
    ) -> None:
        self.pool = pool
        self.vapid = vapid
        self.ttl = ttl
        self.client = client or httpx.AsyncClient(
            timeout=TIMEOUT,
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                max_keepalive_connections=MAX_CONNECTIONS // 2),
            follow_redirects=False,
        )

    async def send(self, delivery: Delivery) -> None:
        """Push ``delivery`` to each subscription of its recipient (module docstring)."""
        note = delivery.notification
        await self._push_all(note["user_id"], payload(note), {
            "TTL": str(self.ttl),
            "Urgency": URGENCY.get(note.get("priority") or "normal", "normal"),
            "Topic": topic(note["id"]),
        }, delivery)

    async def dismiss(self, delivery: Delivery) -> None:
        """Close the shown push of ``delivery``'s notification on every device of its
        recipient: ``{"type": "dismiss", "id"}`` with the same ``Topic``, ``Urgency:
        normal`` and a TTL of at most ``DISMISS_TTL`` (module ``DismissChannel``).

        The dismissal was scheduled (``db.deliveries.dismiss``) because the push may
        show on a device; it waits (is retried) while the push is still ``scheduled``
        (being sent, or waiting for its next attempt, which then skips it as read), and
        is ``Skip``-ped when the push, tried, reached no browser after all.
        """
        note = delivery.notification
        state = await deliveries.push_state(self.pool, note["id"])
        if state is not None and state[0] == "scheduled":
            raise Temporary("the push is still being sent")
        if state is not None and not state[1] and state[0] != "sent":
            raise Skip(NOT_SHOWN)
        await self._push_all(note["user_id"], dismiss_payload(note["id"]), {
            "TTL": str(min(self.ttl, DISMISS_TTL)),
            "Urgency": "normal",
            "Topic": topic(note["id"]),
        })

    async def _push_all(self, user_id: str, body: bytes, headers: dict[str, str],
                        delivery: Delivery | None = None) -> None:
        """Push ``body`` with ``headers`` to each subscription of ``user_id``; the
        outcome as the module docstring says. A push (``delivery``) accepted for some
        browsers and retried for others is recorded as having reached a device."""
        subs = await store.for_user(self.pool, user_id)
        if not subs:
            raise Permanent("no push subscription")
        headers = {**headers, "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream"}
        outcomes = await asyncio.gather(*(self._push(sub, body, headers) for sub in subs))
        gone = [o.subscription_id for o in outcomes if o.gone]
        sent = [o.subscription_id for o in outcomes if o.sent]
        if gone:
            await store.delete_ids(self.pool, gone)
            log.info("push: %d subscription(s) of %r gone (404/410), deleted",
                     len(gone), user_id)
        if sent:
            await store.touch(self.pool, sent)
        temporary = [o for o in outcomes if o.temporary]
        if temporary and sent and delivery is not None:
            # Whatever becomes of the retries, reading it must close it where it shows.
            await deliveries.reached(self.pool, delivery.id, delivery.attempt)
        if temporary:
            waits = [o.retry_after for o in temporary if o.retry_after is not None]
            reason = "; ".join(sorted({o.reason for o in temporary}))
            raise RetryLater(reason, max(waits) if waits else None)
        if sent:
            return
        if len(gone) == len(outcomes):
            raise Permanent("subscription gone")
        raise Permanent("; ".join(sorted({o.reason for o in outcomes if not o.gone})))

    async def _push(
        self, sub: dict[str, Any], body: bytes, headers: dict[str, str]
    ) -> _Outcome:
        endpoint: str = sub["endpoint"]
        try:
            pusher = WebPusher({"endpoint": endpoint,
                                "keys": {"p256dh": sub["p256dh"], "auth": sub["auth"]}})
            encrypted = pusher.encode(body, "aes128gcm")["body"]
        except Exception as exc:  # a stored key the library cannot use: never succeeds
            return _Outcome(sub["id"], 400, f"cannot encrypt for this subscription: {exc}")
        try:
            response = await self.client.post(
                endpoint,
                content=encrypted,
                headers={**headers, "Authorization": self.vapid.authorization(endpoint)},
            )
        except httpx.TimeoutException:
            return _Outcome(sub["id"], None, "push service timed out")
        except (httpx.HTTPError, OSError) as exc:
            return _Outcome(sub["id"], None,
                            f"push service unreachable ({type(exc).__name__})")
        status = response.status_code
        return _Outcome(sub["id"], status, f"push service answered {status}",
                        retry_after(response.headers.get("retry-after")))

    async def close(self) -> None:
        await self.client.aclose()


class DismissChannel:
    """``push.dismiss``: the cross-device dismissals of a push channel, sent with its
    client and subscriptions (docs/delivery.md, "Cross-device dismissal")."""

    name = DISMISS

    def __init__(self, push: PushChannel) -> None:
        self.push = push

    async def send(self, delivery: Delivery) -> None:
        await self.push.dismiss(delivery)

    async def close(self) -> None:
        """Nothing of its own: the push channel closes the client."""


def configured(settings: Settings) -> bool:
    """Whether web push is on: a VAPID key is set, or demo mode keeps its own."""
    return bool(settings.vapid_private_key) or settings.demo_mode


def make(svc: Services) -> PushChannel | None:
    """The push channel of this process, or None when web push is off."""
    vapid = resolve(svc.settings)
    if vapid is None:
        return None
    return PushChannel(svc.pool, vapid, ttl=svc.settings.push_ttl_seconds)
