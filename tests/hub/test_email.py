"""The email channel against real SMTP servers (aiosmtpd on loopback, tests/smtp.py)."""

from __future__ import annotations

import asyncio
import socket
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from hub.channels import Delivery, Permanent, Temporary
from hub.channels.email import EmailChannel, SmtpTarget, configured
from hub.settings import Settings, SettingsError, load_settings
from hub.unsubscribe import UnsubscribeLinks
from tests.conftest import SECRET
from tests.smtp import Recorder, authenticator, self_signed, silent_server, smtp_server

PUBLIC = "https://hub.example.com"
FROM = "School Hub <hub@example.com>"
T = 10.0


def settings(tmp_path: Path, smtp_url: str, **extra: Any) -> Settings:
    return Settings(jwt_secret=SECRET, data_dir=tmp_path / "data", smtp_url=smtp_url,
                    email_from=FROM, public_url=PUBLIC, **extra)


def delivery(**notification: Any) -> Delivery:
    stored = {
        "id": 41, "user_id": "ann+tag@example.com", "type": "grade_posted",
        "title": "Grade posted", "body": "Your grade for Essay 2 is A-",
        "link": "/grades/5", "data": {"grade_id": 5}, "priority": "normal",
        "created_at": "2025-01-01T00:00:00Z", **notification,
    }
    return Delivery(id=7, channel="email", attempt=1, notification=stored,
                    contact={"email": "ann@school.example"})


class Tags(HTMLParser):
    """The tag and attribute names of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)


async def send(channel: EmailChannel, item: Delivery) -> None:
    await asyncio.wait_for(channel.send(item), T)


async def test_a_delivery_arrives_as_multipart_text_and_html_with_every_header(tmp_path):
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        await send(channel, delivery())
    [got] = recorder.messages
    assert got.mail_from == "hub@example.com"
    assert got.rcpt_tos == ["ann@school.example"]
    msg = got.message
    assert msg["From"] == FROM
    assert msg["To"] == "ann@school.example"
    assert msg["Subject"] == "Grade posted"
    assert msg["Message-ID"] == "<delivery-7@hub.example.com>"
    assert msg["Date"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = msg["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{PUBLIC}/api/unsubscribe?token=") and unsubscribe[-1] == ">"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Grade posted" in part and "Your grade for Essay 2 is A-" in part
        assert f"{PUBLIC}/#prefs" in part  # the footer's preferences link
    assert f"See your grade: {PUBLIC}/grades/5" in text
    assert f'href="{PUBLIC}/grades/5"' in html and "See your grade" in html
    token = unsubscribe[1:-1].split("token=", 1)[1]
    assert UnsubscribeLinks(settings(tmp_path, "smtp://x")).verify(unquote(token)) == (
        "ann+tag@example.com", "grade_posted")


async def test_a_retried_delivery_keeps_its_message_id(tmp_path):
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        first = delivery()
        await send(channel, first)
        await send(channel, Delivery(id=first.id, channel="email", attempt=2,
                                     notification=first.notification, contact=first.contact))
    ids = {got.message["Message-ID"] for got in recorder.messages}
    assert len(recorder.messages) == 2 and ids == {"<delivery-7@hub.example.com>"}


async def test_every_value_is_html_escaped_in_the_html_part(tmp_path):
    recorder = Recorder()
    hostile = '<script>alert("x")</script>'
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        await send(channel, delivery(
            title=hostile, body='<img src=x onerror=alert(1)> & "quotes"',
            link='https://app.example.com/x?a=1&b="><script>',
        ))
    msg = recorder.messages[0].message
    html = msg.get_body(("html",)).get_content()
    tags = Tags()
    tags.feed(html)
    assert tags.names <= {"html", "head", "meta", "title", "body", "div", "h1", "p", "a"}
    assert not any(name.startswith("on") for name in tags.attributes)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;" in html
    assert 'href="https://app.example.com/x?a=1&amp;b=&quot;&gt;&lt;script&gt;"' in html
    # The text part and the subject carry the title as it is: they are not HTML.
    assert msg["Subject"] == hostile
    assert hostile in msg.get_body(("plain",)).get_content()


async def test_a_link_with_another_scheme_gets_no_button(tmp_path):
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        await send(channel, delivery(link="javascript:alert(1)"))
        await send(channel, delivery(link="//evil.example/x"))
    for got in recorder.messages:
        html = got.message.get_body(("html",)).get_content()
        assert "javascript:" not in html and "evil.example" not in html
        assert "See your grade" not in html


@pytest.mark.parametrize("type_", [
    "assignment_created", "assignment_due_soon", "grade_posted", "friend_request",
    "group_invitation", "achievement_unlocked", "study_goal_milestone", "new_message",
    "system_announcement", "some_custom_type",
])
async def test_every_seed_type_and_any_other_type_gets_an_email_titled_by_the_notification(
    tmp_path, type_
):
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        await send(channel, delivery(type=type_, title=f"About {type_}", link=None))
    msg = recorder.messages[0].message
    assert msg["Subject"] == f"About {type_}"
    html = msg.get_body(("html",)).get_content()
    assert f"About {type_}" in html and "Unsubscribe from these emails" in html
    assert "href=" in html and "Your grade for Essay 2" in html


async def test_auth_over_starttls_logs_in_with_the_percent_decoded_user_and_password(tmp_path):
    server_tls, client_tls = self_signed()
    recorder = Recorder()
    options = dict(tls_context=server_tls, require_starttls=True, auth_required=True,
                   auth_require_tls=True,
                   authenticator=authenticator("hub@example.com", "p@ss:w/rd"))
    async with smtp_server(recorder, **options) as port:
        url = f"smtp://hub%40example.com:p%40ss%3Aw%2Frd@127.0.0.1:{port}?starttls=true"
        channel = EmailChannel(settings(tmp_path, url), tls_context=client_tls)
        await send(channel, delivery())
        wrong = url.replace("p%40ss", "nope")
        with pytest.raises(Temporary):
            await send(EmailChannel(settings(tmp_path, wrong), tls_context=client_tls),
                       delivery())
    [got] = recorder.messages
    assert got.login == "hub@example.com"


async def test_a_server_requiring_starttls_refuses_a_plain_smtp_url(tmp_path):
    server_tls, _ = self_signed()
    recorder = Recorder()
    async with smtp_server(recorder, tls_context=server_tls, require_starttls=True) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        with pytest.raises(Temporary):
            await send(channel, delivery())
    assert recorder.messages == []


async def test_a_recipient_refused_with_550_is_permanent(tmp_path):
    recorder = Recorder(rcpt_reply="550 5.1.1 mailbox unavailable")
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        with pytest.raises(Permanent, match="550"):
            await send(channel, delivery())


async def test_a_message_refused_with_554_is_permanent(tmp_path):
    recorder = Recorder(data_reply="554 5.7.1 message refused")
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        with pytest.raises(Permanent, match="554"):
            await send(channel, delivery())


async def test_a_recipient_answered_451_is_temporary(tmp_path):
    recorder = Recorder(rcpt_reply="451 4.3.0 try again later")
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        with pytest.raises(Temporary, match="451") as caught:
            await send(channel, delivery())
    assert not isinstance(caught.value, Permanent)


async def test_a_closed_port_is_temporary(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
    with pytest.raises(Temporary):
        await send(channel, delivery())


async def test_a_server_that_never_answers_is_temporary_after_the_timeout(tmp_path):
    async with silent_server() as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}",
                                        smtp_timeout_seconds=0.5))
        with pytest.raises(Temporary):
            await send(channel, delivery())


@pytest.mark.parametrize("contact", [{}, {"email": ""}, {"email": "not an address"},
                                     {"email": "a@b.example\r\nBcc: x@y.example"}])
async def test_a_contact_without_a_usable_address_is_permanent(tmp_path, contact):
    recorder = Recorder()
    async with smtp_server(recorder) as port:
        channel = EmailChannel(settings(tmp_path, f"smtp://127.0.0.1:{port}"))
        item = delivery()
        with pytest.raises(Permanent):
            await send(channel, Delivery(id=1, channel="email", attempt=1,
                                         notification=item.notification, contact=contact))
    assert recorder.messages == []


def test_the_smtp_url_says_tls_starttls_port_and_credentials():
    assert SmtpTarget.from_url("smtp://relay.internal") == SmtpTarget(
        "relay.internal", 25, False, False, None, None)
    assert SmtpTarget.from_url("smtp://u%2Bx:p%25w@smtp.gmail.com?starttls=true") == SmtpTarget(
        "smtp.gmail.com", 587, False, True, "u+x", "p%w")
    assert SmtpTarget.from_url("smtps://k:s@email-smtp.eu-west-1.amazonaws.com") == SmtpTarget(
        "email-smtp.eu-west-1.amazonaws.com", 465, True, False, "k", "s")


@pytest.mark.parametrize(("overrides", "named"), [
    ({"smtp_url": "http://x"}, "HUB_SMTP_URL"),
    ({"smtp_url": "smtps://x?starttls=true"}, "HUB_SMTP_URL"),
    ({"smtp_url": "smtp://x?tls=1"}, "HUB_SMTP_URL"),
    ({"smtp_url": "smtp://x", "public_url": None}, "HUB_PUBLIC_URL"),
    ({"smtp_url": "smtp://x", "email_from": None}, "HUB_EMAIL_FROM"),
    ({"email_from": "nobody"}, "HUB_EMAIL_FROM"),
    ({"public_url": "ftp://x"}, "HUB_PUBLIC_URL"),
    ({"smtp_url": "smtp://x", "jwt_secret": None,
      "jwt_public_key": None, "unsubscribe_secret": "short"}, "HUB_UNSUBSCRIBE_SECRET"),
])
def test_bad_email_settings_stop_start_up_with_one_line_naming_the_variable(
    tmp_path, overrides, named
):
    base = {"jwt_secret": SECRET, "email_from": FROM, "public_url": PUBLIC}
    with pytest.raises(SettingsError, match=named):
        load_settings(**{**base, **overrides})


def test_without_an_smtp_url_email_is_off():
    assert not configured(Settings(jwt_secret=SECRET))
    assert configured(Settings(jwt_secret=SECRET, smtp_url="smtp://x", email_from=FROM,
                               public_url=PUBLIC))


def test_with_jwt_public_key_only_email_needs_its_own_unsubscribe_secret(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    email = {"smtp_url": "smtp://x", "email_from": FROM, "public_url": PUBLIC}
    with pytest.raises(SettingsError, match="HUB_SMTP_URL: needs HUB_UNSUBSCRIBE_SECRET"):
        load_settings(jwt_public_key=pem, **email)
    own = load_settings(jwt_public_key=pem, unsubscribe_secret="u" * 32, **email)
    token = UnsubscribeLinks(own).token("ann", "grade_posted")
    assert UnsubscribeLinks(own).verify(token) == ("ann", "grade_posted")
