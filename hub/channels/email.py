"""The email channel: one SMTP conversation per delivery (docs/delivery.md, "Email").

``HUB_SMTP_URL`` says where and how: ``smtp://[user:pass@]host[:port]`` (port 25, no
TLS), ``smtp://…?starttls=true`` (port 587, STARTTLS required), ``smtps://…`` (port
465, TLS from the start); user and password are percent-decoded and, when given, sent
with AUTH. Server certificates are always verified.

Outcomes, as ``hub.channels`` defines them: the recipient refused with a 5xx reply, or
the message refused with a 5xx reply to DATA, is ``Permanent`` (the reply is the
reason recorded); a delivery without a usable address is ``Permanent`` too. Anything
else (4xx replies, a refused sender or login, a connection refused or reset, a
timeout) is ``Temporary``: it may work later, or after the relay's settings are fixed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from hub.channels import Delivery, Permanent, Temporary
from hub.channels.email_templates import render_email
from hub.services import Services
from hub.settings import Settings
from hub.unsubscribe import UnsubscribeLinks

#: The whole of one send (connect, TLS, login, the message) is bounded by this many
#: times HUB_SMTP_TIMEOUT_SECONDS, which bounds each step.
TOTAL_STEPS = 3


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to connect, from ``HUB_SMTP_URL`` (validated by the settings)."""

    host: str
    port: int
    use_tls: bool
    start_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        use_tls = parts.scheme == "smtps"
        start_tls = parse_qs(parts.query).get("starttls", ["false"])[-1] == "true"
        port = parts.port or (465 if use_tls else 587 if start_tls else 25)
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            use_tls=use_tls,
            start_tls=start_tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


def configured(settings: Settings) -> bool:
    """Whether email is on: ``HUB_SMTP_URL`` is set (the settings checked the rest)."""
    return settings.smtp_url is not None


def make(svc: Services) -> EmailChannel:
    """The email channel of this hub."""
    return EmailChannel(svc.settings)


def address(contact: dict[str, Any]) -> str:
    """The contact's email address; Permanent when it has none usable."""
    value = contact.get("email")
    if not isinstance(value, str) or not value:
        raise Permanent("no email address in the user's contact")
    _, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if address != value.strip() or not local or not domain or any(
        c.isspace() or ord(c) < 32 for c in address
    ):
        raise Permanent("the contact's email is not an address")
    return address


class EmailChannel:
    """Sends deliveries as multipart text + HTML email over SMTP."""

    name = "email"

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        if settings.smtp_url is None or settings.email_from is None \
                or settings.public_url is None:
            raise ValueError("email needs HUB_SMTP_URL, HUB_EMAIL_FROM and HUB_PUBLIC_URL")
        self.target = SmtpTarget.from_url(settings.smtp_url)
        self._from = settings.email_from
        self._sender = parseaddr(settings.email_from)[1]
        self._public_url = settings.public_url
        self._domain = urlsplit(settings.public_url).hostname or "notifyhub"
        self._timeout = settings.smtp_timeout_seconds
        # None: the system's trust store (SSL_CERT_FILE may name another); tests pass one.
        self._tls_context = tls_context
        self._links = UnsubscribeLinks(settings)
        # This host's name for EHLO, looked up once: aiosmtplib would otherwise run
        # socket.getfqdn in a thread for every connection.
        self._local_hostname: str | None = None

    def message(self, delivery: Delivery) -> EmailMessage:
        """The email of ``delivery`` (Permanent if its contact has no usable address)."""
        to = address(delivery.contact)
        notification = delivery.notification
        user_id, type_ = str(notification["user_id"]), str(notification["type"])
        unsubscribe = self._links.url(user_id, type_)
        rendered = render_email(
            notification, link=self.link(notification.get("link")),
            unsubscribe_url=unsubscribe, preferences_url=self.preferences_url,
        )
        # The same Message-ID on every attempt: a retry is recognisably the same email.
        msg = self.envelope(to, rendered.subject, f"delivery-{delivery.id}", unsubscribe)
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        return msg

    @property
    def links(self) -> UnsubscribeLinks:
        """This hub's unsubscribe links."""
        return self._links

    @property
    def preferences_url(self) -> str:
        """The preferences page the footer links to."""
        return self._public_url + "/#prefs"

    def link(self, link: Any) -> str | None:
        """An absolute http(s) link for the button: relative paths are joined to
        HUB_PUBLIC_URL, anything else (another scheme, ``//host``) has no button."""
        if not isinstance(link, str) or not link:
            return None
        if link.startswith("/") and not link.startswith("//"):
            return self._public_url + link
        parts = urlsplit(link)
        return link if parts.scheme in ("http", "https") and parts.hostname else None

    def envelope(self, to: str, subject: str, message_id: str, unsubscribe: str
                 ) -> EmailMessage:
        """A message with this hub's headers (From, To, Subject, Date, ``Message-ID``
        ``<message_id@host>``, one-click ``List-Unsubscribe``), without a body yet."""
        msg = EmailMessage()
        msg["From"] = self._from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{message_id}@{self._domain}>"
        msg["List-Unsubscribe"] = f"<{unsubscribe}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        return msg

    async def send(self, delivery: Delivery) -> None:
        """Send ``delivery``'s email; see the module docstring for the outcomes."""
        await self.deliver(self.message(delivery))

    async def deliver(self, msg: EmailMessage) -> None:
        """Send ``msg`` to its ``To``; the outcomes of the module docstring."""
        to = msg["To"]
        target = self.target
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        try:
            async with asyncio.timeout(self._timeout * TOTAL_STEPS):
                await aiosmtplib.send(
                    msg, sender=self._sender, recipients=[str(to)],
                    hostname=target.host, port=target.port,
                    username=target.username, password=target.password,
                    use_tls=target.use_tls, start_tls=target.start_tls,
                    tls_context=self._tls_context, timeout=self._timeout,
                    local_hostname=self._local_hostname,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            if refused is not None and 500 <= refused.code < 600:
                raise Permanent(f"recipient refused: {refused.code} {refused.message}") from None
            raise Temporary(f"recipient refused for now: {exc}") from None
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            what = "recipient" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "message"
            if 500 <= exc.code < 600:
                raise Permanent(f"{what} refused: {exc.code} {exc.message}") from None
            raise Temporary(f"{what} refused for now: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise Temporary(f"SMTP server answered {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Temporary(f"SMTP server unreachable: {exc}") from None
        except TimeoutError:
            raise Temporary(
                f"SMTP server did not finish within {self._timeout * TOTAL_STEPS:g} s"
            ) from None

    async def close(self) -> None:
        """Nothing to release: every send opens and closes its own connection."""
