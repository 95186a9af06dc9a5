"""Digests: one email per user and period listing what they have not read
(docs/delivery.md, "Digests").

A user whose ``digest`` preference is ``hourly``, ``daily`` or ``weekly`` gets their
email deliveries written ``digest`` (``db.deliveries.decide``), each waiting for the end
of its period, with one *digest job* per user and period: a delivery on the channel
``email.digest`` that the delivery workers claim at the period's end, exactly once
across instances, and retry and record like any other (``hub.delivery``). Its channel
is ``DigestChannel``: it builds the digest from the period's notifications still
unread (``db.digests.build``), and sends it through the email channel; an empty digest
is ``Skip``-ped. Its own texts are in the language of the contact's ``locale``
(``render_digest``). The job's outcome is recorded on its emails too.
"""

from __future__ import annotations

from db import digests as store
from hub.channels import Delivery, Permanent, Skip
from hub.channels.email import EmailChannel, address
from hub.channels.email_templates import render_digest
from hub.services import Services

#: The channel name of digest jobs (and their ``notifyhub_deliveries_total`` label).
NAME = "email.digest"
#: The most notification titles one digest lists (the rest are counted: "and N more").
MAX_ITEMS = 50
#: The most types one digest heads (the rest are counted in one line).
MAX_TYPES = 20
#: Why a digest with nothing unread is not sent.
EMPTY = "nothing unread"


class DigestChannel:
    """Builds and sends digest jobs through the process's email channel."""

    name = NAME

    def __init__(self, svc: Services, email: EmailChannel) -> None:
        self.svc = svc
        self.email = email

    async def send(self, delivery: Delivery) -> None:
        """Build ``delivery``'s digest and email it; ``Skip`` when nothing is unread."""
        if delivery.digest_at is None or not delivery.user_id:
            raise Permanent("not a digest job")
        to = address(delivery.contact)
        contents = await store.build(
            self.svc.pool, delivery.user_id, delivery.digest_at, delivery.attempt,
            max_items=MAX_ITEMS, max_types=MAX_TYPES,
        )
        if not contents.total:
            raise Skip(EMPTY)
        unsubscribe = self.email.links.url(delivery.user_id, None)
        rendered = render_digest(
            contents.total, contents.counts, contents.items,
            links={int(i["id"]): self.email.link(i.get("link")) for i in contents.items},
            unsubscribe_url=unsubscribe, preferences_url=self.email.preferences_url,
            locale=delivery.contact.get("locale"),
        )
        msg = self.email.envelope(to, rendered.subject, f"digest-{delivery.id}", unsubscribe)
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        await self.email.deliver(msg)

    async def close(self) -> None:
        """Nothing of its own: the email channel is closed by the workers."""
