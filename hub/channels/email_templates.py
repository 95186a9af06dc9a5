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
    inner = (f'{intro_html}\n<h1 style="margin:0 0 12px;font-size:20px;line-height:1.3">'
             f'{e(title)}</h1>\n{body_html}\n{button_html}')
    html = _page(subject, inner, reason, "Unsubscribe from these emails", unsubscribe_url,
                 preferences_url)
    return Rendered(subject, text, html)


def _page(subject: str, inner: str, reason: str, unsubscribe_label: str,
          unsubscribe_url: str, preferences_url: str) -> str:
    """The HTML document around ``inner`` (already escaped markup), with the footer."""
    e = escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(subject)}</title></head>
<body style="margin:0;padding:24px 12px;background:#f4f5f7;color:#111827;\
font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
{inner}
</div>
<p style="max-width:560px;margin:16px auto 0;font-size:12px;line-height:1.5;color:#6b7280">\
{e(reason)} <a href="{e(unsubscribe_url)}" style="color:#6b7280">{e(unsubscribe_label)}</a> \
· <a href="{e(preferences_url)}" style="color:#6b7280">Notification preferences</a></p>
</body></html>
"""


# ---- digests -------------------------------------------------------------------------

#: Why the recipient gets a digest (its footer).
DIGEST_REASON = ("You get this email because you asked for a digest of your unread "
                 "notifications instead of one email each.")


def type_label(type_: str) -> str:
    """A type as a heading: ``grade_posted`` → ``Grade posted``."""
    words = " ".join(type_.replace("_", " ").split())
    return (words[:1].upper() + words[1:]) if words else "Other"


def render_digest(
    total: int, counts: list[tuple[str, int]], items: list[dict[str, Any]], *,
    links: dict[int, str | None], unsubscribe_url: str, preferences_url: str,
) -> Rendered:
    """A digest's email: ``total`` unread notifications, ``counts`` per type (headed by
    type, in that order), each type listing its ``items`` (newest first) by title,
    linked to ``links[id]`` (an absolute http(s) URL, or None for no link), then "and N
    more" for those not listed; types beyond ``counts`` are summed up in one line."""
    noun = "notification" if total == 1 else "notifications"
    subject = f"Your digest: {total} unread {noun}"
    intro = (f"You have {total} unread {noun} from this period. Those you read in the "
             "app meanwhile are left out.")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_type.setdefault(str(item["type"]), []).append(item)
    e = escape
    text_parts = [intro]
    html_parts = [f'<h1 style="margin:0 0 8px;font-size:20px;line-height:1.3">{e(subject)}</h1>',
                  f'<p style="margin:0 0 16px;color:#6b7280;font-size:13px">{e(intro)}</p>']
    shown = 0
    for type_, count in counts:
        label = f"{type_label(type_)} ({count})"
        listed = by_type.get(type_, [])
        shown += count
        lines = [label]
        rows = []
        for item in listed:
            title = _one_line(str(item.get("title") or "")) or "(no title)"
            url = links.get(int(item["id"]))
            lines.append(f"- {title}" + (f" <{url}>" if url else ""))
            rows.append(f'<li style="margin:2px 0"><a href="{e(url)}" style="color:#2563eb">'
                        f'{e(title)}</a></li>' if url else
                        f'<li style="margin:2px 0">{e(title)}</li>')
        more = count - len(listed)
        if more > 0:
            lines.append(f"- and {more} more")
            rows.append(f'<li style="margin:2px 0;color:#6b7280">and {more} more</li>')
        text_parts.append("\n".join(lines))
        html_parts.append(
            f'<h2 style="margin:16px 0 4px;font-size:15px">{e(label)}</h2>'
            f'<ul style="margin:0;padding-left:20px;font-size:14px;line-height:1.5">'
            f'{"".join(rows)}</ul>')
    if total > shown:
        rest = f"and {total - shown} more of other types"
        text_parts.append(rest)
        html_parts.append(f'<p style="margin:16px 0 0;color:#6b7280">{e(rest)}</p>')
    text_parts.append("--")
    text_parts.append(f"{DIGEST_REASON}\nUnsubscribe from all notification emails: "
                      f"{unsubscribe_url}\nNotification preferences: {preferences_url}")
    text = "\n\n".join(text_parts) + "\n"
    html = _page(subject, "\n".join(html_parts), DIGEST_REASON,
                 "Unsubscribe from all notification emails", unsubscribe_url,
                 preferences_url)
    return Rendered(subject, text, html)
