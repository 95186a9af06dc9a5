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
from hub.templates import pick_locale, render

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
          unsubscribe_url: str, preferences_url: str, *, lang: str = "en",
          preferences_label: str = "Notification preferences") -> str:
    """The HTML document around ``inner`` (already escaped markup), with the footer."""
    e = escape
    return f"""<!DOCTYPE html>
<html lang="{e(lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(subject)}</title></head>
<body style="margin:0;padding:24px 12px;background:#f4f5f7;color:#111827;\
font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
{inner}
</div>
<p style="max-width:560px;margin:16px auto 0;font-size:12px;line-height:1.5;color:#6b7280">\
{e(reason)} <a href="{e(unsubscribe_url)}" style="color:#6b7280">{e(unsubscribe_label)}</a> \
· <a href="{e(preferences_url)}" style="color:#6b7280">{e(preferences_label)}</a></p>
</body></html>
"""


# ---- digests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestTexts:
    """The fixed texts of a digest email in one language; ``{n}`` is a count."""

    #: The HTML document's ``lang``.
    lang: str
    #: The subject (also the heading), for one unread notification and for several.
    subject_one: str
    subject_many: str
    #: The line under the heading, for one and for several.
    intro_one: str
    intro_many: str
    #: Ends a type's list that lists fewer titles than it counts.
    more: str
    #: The last line, counting the notifications of the types not headed.
    more_types: str
    #: Stands in for a notification without a title.
    no_title: str
    #: Why the recipient gets the digest (the footer).
    reason: str
    unsubscribe: str
    preferences: str
    #: Type headings by type (the nine seed types); any other type is headed by its
    #: name with ``_`` as spaces (``type_label``).
    types: dict[str, str]


#: The digest's texts by language (a BCP 47 tag, picked from the contact's ``locale``
#: as templates' variants are: ``de-AT`` gets ``de``); English for any other locale.
DIGEST_TEXTS: dict[str, DigestTexts] = {
    "en": DigestTexts(
        lang="en",
        subject_one="Your digest: 1 unread notification",
        subject_many="Your digest: {n} unread notifications",
        intro_one="You have 1 unread notification from this period. Those you read in "
                  "the app meanwhile are left out.",
        intro_many="You have {n} unread notifications from this period. Those you read "
                   "in the app meanwhile are left out.",
        more="and {n} more",
        more_types="and {n} more of other types",
        no_title="(no title)",
        reason="You get this email because you asked for a digest of your unread "
               "notifications instead of one email each.",
        unsubscribe="Unsubscribe from all notification emails",
        preferences="Notification preferences",
        types={},
    ),
    "de": DigestTexts(
        lang="de",
        subject_one="Deine Zusammenfassung: 1 ungelesene Benachrichtigung",
        subject_many="Deine Zusammenfassung: {n} ungelesene Benachrichtigungen",
        intro_one="Du hast 1 ungelesene Benachrichtigung aus diesem Zeitraum. Was du "
                  "inzwischen in der App gelesen hast, ist nicht dabei.",
        intro_many="Du hast {n} ungelesene Benachrichtigungen aus diesem Zeitraum. Was du "
                   "inzwischen in der App gelesen hast, ist nicht dabei.",
        more="und {n} weitere",
        more_types="und {n} weitere anderer Arten",
        no_title="(ohne Titel)",
        reason="Du bekommst diese E-Mail, weil du statt einer E-Mail je Benachrichtigung "
               "eine Zusammenfassung deiner ungelesenen Benachrichtigungen gewählt hast.",
        unsubscribe="Alle Benachrichtigungs-E-Mails abbestellen",
        preferences="Benachrichtigungseinstellungen",
        types={
            "assignment_created": "Neue Aufgaben",
            "assignment_due_soon": "Bald fällige Aufgaben",
            "grade_posted": "Noten",
            "friend_request": "Freundschaftsanfragen",
            "group_invitation": "Gruppeneinladungen",
            "achievement_unlocked": "Erfolge",
            "study_goal_milestone": "Lernziel-Etappen",
            "new_message": "Nachrichten",
            "system_announcement": "Ankündigungen",
        },
    ),
}


def digest_texts(locale: str | None) -> DigestTexts:
    """The digest's texts for a contact's ``locale`` (None: English)."""
    return DIGEST_TEXTS[pick_locale(DIGEST_TEXTS, locale) or "en"]


def type_label(type_: str) -> str:
    """A type as a heading: ``grade_posted`` → ``Grade posted``."""
    words = " ".join(type_.replace("_", " ").split())
    return (words[:1].upper() + words[1:]) if words else "Other"


def render_digest(
    total: int, counts: list[tuple[str, int]], items: list[dict[str, Any]], *,
    links: dict[int, str | None], unsubscribe_url: str, preferences_url: str,
    locale: str | None = None,
) -> Rendered:
    """A digest's email: ``total`` unread notifications, ``counts`` per type (headed by
    type, in that order), each type listing its ``items`` (newest first) by title,
    linked to ``links[id]`` (an absolute http(s) URL, or None for no link), then "and N
    more" for those not listed; types beyond ``counts`` are summed up in one line. Its
    own texts are in the language of ``locale`` (``digest_texts``); the titles are the
    notifications' own."""
    t = digest_texts(locale)
    subject = (t.subject_one if total == 1 else t.subject_many).format(n=total)
    intro = (t.intro_one if total == 1 else t.intro_many).format(n=total)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_type.setdefault(str(item["type"]), []).append(item)
    e = escape
    text_parts = [intro]
    html_parts = [f'<h1 style="margin:0 0 8px;font-size:20px;line-height:1.3">{e(subject)}</h1>',
                  f'<p style="margin:0 0 16px;color:#6b7280;font-size:13px">{e(intro)}</p>']
    shown = 0
    for type_, count in counts:
        label = f"{t.types.get(type_) or type_label(type_)} ({count})"
        listed = by_type.get(type_, [])
        shown += count
        lines = [label]
        rows = []
        for item in listed:
            title = _one_line(str(item.get("title") or "")) or t.no_title
            url = links.get(int(item["id"]))
            lines.append(f"- {title}" + (f" <{url}>" if url else ""))
            rows.append(f'<li style="margin:2px 0"><a href="{e(url)}" style="color:#2563eb">'
                        f'{e(title)}</a></li>' if url else
                        f'<li style="margin:2px 0">{e(title)}</li>')
        more = count - len(listed)
        if more > 0:
            line = t.more.format(n=more)
            lines.append(f"- {line}")
            rows.append(f'<li style="margin:2px 0;color:#6b7280">{e(line)}</li>')
        text_parts.append("\n".join(lines))
        html_parts.append(
            f'<h2 style="margin:16px 0 4px;font-size:15px">{e(label)}</h2>'
            f'<ul style="margin:0;padding-left:20px;font-size:14px;line-height:1.5">'
            f'{"".join(rows)}</ul>')
    if total > shown:
        rest = t.more_types.format(n=total - shown)
        text_parts.append(rest)
        html_parts.append(f'<p style="margin:16px 0 0;color:#6b7280">{e(rest)}</p>')
    text_parts.append("--")
    text_parts.append(f"{t.reason}\n{t.unsubscribe}: {unsubscribe_url}\n"
                      f"{t.preferences}: {preferences_url}")
    text = "\n\n".join(text_parts) + "\n"
    html = _page(subject, "\n".join(html_parts), t.reason, t.unsubscribe, unsubscribe_url,
                 preferences_url, lang=t.lang, preferences_label=t.preferences)
    return Rendered(subject, text, html)
