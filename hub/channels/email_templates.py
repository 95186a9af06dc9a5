"""The email of a notification: subject, plain text and HTML, from per-type templates.

Each type has an ``EmailTemplate`` (the nine seed types below; any other type gets
``DEFAULT``). Its texts are ``{name}`` templates (``hub.templates.render``) over the
notification's ``title`` and ``body`` and the values of its ``data``; a template naming
a value the notification lacks falls back to ``DEFAULT``. Every value is HTML-escaped
in the HTML part; the layout around them is fixed here (docs/delivery.md, "Email").
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from hub.errors import InvalidInput
from hub.templates import render

#: The longest subject line sent; longer ones are cut with an ellipsis.
MAX_SUBJECT = 200


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    """The texts of one type's email; ``{name}`` placeholders as in ``hub.templates``."""

    subject: str = "{title}"
    #: A short line above the title ("" for none).
    intro: str = ""
    #: The label of the button to the notification's link (shown when it has one).
    button: str = "Open"
    #: Why the recipient gets this email (footer, before the unsubscribe link).
    reason: str = "You get this email because email notifications are on for this kind "\
                  "of update."


DEFAULT = EmailTemplate()

TEMPLATES: dict[str, EmailTemplate] = {
    "assignment_created": EmailTemplate(
        intro="A new assignment was posted.", button="View the assignment",
        reason="You get this email when an assignment is posted in your courses."),
    "assignment_due_soon": EmailTemplate(
        intro="Reminder: an assignment is due soon.", button="View the assignment",
        reason="You get this email before an assignment of yours is due."),
    "grade_posted": EmailTemplate(
        intro="You have a new grade.", button="See your grade",
        reason="You get this email when a grade of yours is posted."),
    "friend_request": EmailTemplate(
        intro="Someone wants to connect with you.", button="Answer the request",
        reason="You get this email when someone sends you a friend request."),
    "group_invitation": EmailTemplate(
        intro="You were invited to a group.", button="See the invitation",
        reason="You get this email when someone invites you to a group."),
    "achievement_unlocked": EmailTemplate(
        intro="Congratulations!", button="See your achievements",
        reason="You get this email when you unlock an achievement."),
    "study_goal_milestone": EmailTemplate(
        intro="You reached a milestone.", button="See your goals",
        reason="You get this email when you reach a milestone of a study goal."),
    "new_message": EmailTemplate(
        intro="You have a new message.", button="Read and reply",
        reason="You get this email when someone sends you a message."),
    "system_announcement": EmailTemplate(
        intro="An announcement", button="Read more",
        reason="You get this email for announcements to everyone."),
}


@dataclass(frozen=True, slots=True)
class Rendered:
    """One email's subject and its two bodies."""

    subject: str
    text: str
    html: str


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1].rstrip() + "…"


def _texts(template: EmailTemplate, values: dict[str, Any]) -> tuple[str, str, str, str]:
    return (render(template.subject, values), render(template.intro, values),
            render(template.button, values), render(template.reason, values))


def render_email(
    notification: dict[str, Any], *, link: str | None, unsubscribe_url: str,
    preferences_url: str,
) -> Rendered:
    """The email of ``notification`` (as the REST API returns it).

    ``link`` is the absolute http(s) link of its button, or None for no button.
    """
    title = str(notification.get("title") or "")
    body = str(notification.get("body") or "")
    data = notification.get("data")
    values = {**(data if isinstance(data, dict) else {}), "title": title, "body": body}
    template = TEMPLATES.get(str(notification.get("type")), DEFAULT)
    try:
        subject, intro, button, reason = _texts(template, values)
    except InvalidInput:
        subject, intro, button, reason = _texts(DEFAULT, values)
    subject = _one_line(subject) or _one_line(title) or "Notification"

    text = "\n\n".join(part for part in (
        intro, title, body,
        f"{button}: {link}" if link else "",
        "--",
        f"{reason}\nUnsubscribe: {unsubscribe_url}\nNotification preferences: "
        f"{preferences_url}",
    ) if part) + "\n"

    e = escape  # quote=True: safe inside attribute values too
    button_html = (
        f'<p style="margin:24px 0 8px"><a href="{e(link)}" style="display:inline-block;'
        f'padding:10px 18px;border-radius:6px;background:#2563eb;color:#ffffff;'
        f'text-decoration:none;font-weight:600">{e(button)}</a></p>'
        if link else ""
    )
    intro_html = (f'<p style="margin:0 0 8px;color:#6b7280;font-size:13px">{e(intro)}</p>'
                  if intro else "")
    body_html = (f'<p style="margin:0;font-size:15px;line-height:1.5;white-space:pre-line">'
                 f'{e(body)}</p>' if body else "")
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(subject)}</title></head>
<body style="margin:0;padding:24px 12px;background:#f4f5f7;color:#111827;\
font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
{intro_html}
<h1 style="margin:0 0 12px;font-size:20px;line-height:1.3">{e(title)}</h1>
{body_html}
{button_html}
</div>
<p style="max-width:560px;margin:16px auto 0;font-size:12px;line-height:1.5;color:#6b7280">\
{e(reason)} <a href="{e(unsubscribe_url)}" style="color:#6b7280">Unsubscribe from these \
emails</a> · <a href="{e(preferences_url)}" style="color:#6b7280">Notification \
preferences</a></p>
</body></html>
"""
    return Rendered(subject, text, html)
