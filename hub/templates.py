"""Templates: safe ``{name}`` rendering, a create's content (title, body, link), and the
admin operations on stored templates."""

from __future__ import annotations

import re
import string
from typing import Any

from db import templates as store
from hub.errors import HubError, InvalidInput, NotFound
from hub.models import NotificationCreate, TemplatePut, TemplateVariant, safe_link
from hub.services import Services

_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMATTER = string.Formatter()


def _parts(text: str) -> list[tuple[str, str | None]]:
    """``(literal, placeholder name or None)`` pairs; InvalidInput for anything not plain."""
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise InvalidInput(f"bad template: {exc}") from None
    parts = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (not _PLAIN_NAME.match(field) or spec or conversion):
            raise InvalidInput(
                f"bad template placeholder {{{field}}}: only plain {{name}} is allowed"
            )
        parts.append((literal, field))
    return parts


def placeholders(text: str) -> list[str]:
    """The placeholder names of ``text``; InvalidInput if any is not a plain ``{name}``."""
    return [field for _, field in _parts(text) if field is not None]


def render(text: str, data: dict[str, Any]) -> str:
    """Fill ``{name}`` placeholders of ``text`` from ``data``, inserting values as text.

    Only plain names are accepted (no attribute, index, conversion or format spec),
    so a template can never reach into Python objects. A missing name is InvalidInput.
    """
    out = []
    for literal, field in _parts(text):
        out.append(literal)
        if field is None:
            continue
        if field not in data:
            raise InvalidInput(
                f"template variable {field!r} is missing from data",
                errors=[{"loc": ["data", field], "msg": "missing template variable"}],
            )
        value = data[field]
        out.append(value if isinstance(value, str) else _as_text(value))
    return "".join(out)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    import orjson

    return orjson.dumps(value).decode()


async def list_all(svc: Services) -> list[dict[str, Any]]:
    """Every stored template, by key."""
    return await store.list_all(svc.pool)


async def put(svc: Services, key: str, body: TemplatePut) -> dict[str, Any]:
    """Create or replace template ``key``; its placeholders must be plain names."""
    if not re.match(r"^[a-z0-9_.-]{1,100}$", key):
        raise InvalidInput("a template key is 1-100 characters of a-z0-9_.-")
    variants = body.locales.values()
    groups = [g for g in (body.grouped, *(v.grouped for v in variants)) if g is not None]
    for text in (body.title, body.body, body.link or "",
                 *(t for v in variants for t in (v.title, v.body, v.link or "")),
                 *(t for g in groups for t in (g.title, g.body or ""))):
        placeholders(text)
    grouped = body.grouped
    return await store.put(svc.pool, key, body.type, body.title, body.body, body.link,
                           {tag: _variant(v) for tag, v in body.locales.items()},
                           grouped.model_dump(exclude_none=True) if grouped else None)


def _variant(variant: TemplateVariant) -> dict[str, Any]:
    """A locale variant as stored: ``grouped`` only when it has one."""
    doc = variant.model_dump(exclude={"grouped"})
    if variant.grouped is not None:
        doc["grouped"] = variant.grouped.model_dump(exclude_none=True)
    return doc


async def get(svc: Services, key: str) -> dict[str, Any]:
    """Template ``key``; NotFound if there is none."""
    row = await store.get(svc.pool, key)
    if row is None:
        raise NotFound(f"no template {key!r}")
    return row


def pick_locale(variants: dict[str, Any], locale: str | None) -> str | None:
    """The key of the variant of ``variants`` that serves ``locale`` (a BCP 47 tag), or
    None for the template's own text: the tag itself, else the tag with its last subtags
    dropped one by one (``pt-BR`` -> ``pt``); case-insensitive."""
    if not locale or not variants:
        return None
    by_tag = {tag.lower(): tag for tag in variants}
    parts = locale.lower().split("-")
    while parts:
        tag = by_tag.get("-".join(parts))
        if tag is not None:
            return tag
        parts.pop()
    return None


#: A notification's title, body and link.
Content = tuple[str, str, str | None]
#: A group's title and body patterns (``grouped``; body None: the newest create's body).
Patterns = tuple[str, str | None]


def named(requests: list[NotificationCreate]) -> list[str]:
    """The templates ``requests`` name, sorted: what ``contents`` needs stored."""
    return sorted({r.template for r in requests if r.template is not None})


def contents(
    requests: list[NotificationCreate], stored: dict[str, dict[str, Any]]
) -> list[Content | HubError]:
    """Title, body and link of each request (explicit fields win over its template),
    from the ``stored`` templates they name (``named``)."""
    out: list[Content | HubError] = []
    for request in requests:
        try:
            out.append(content(request, stored))
        except HubError as exc:
            out.append(exc)
    return out


def localize(
    requests: list[NotificationCreate], recipients: list[list[str]],
    rendered: list[Content | HubError], stored: dict[str, dict[str, Any]],
    locales: dict[str, str],
) -> tuple[list[Content | HubError], list[dict[str, Content]], list[dict[str, Patterns]]]:
    """Per request, the content of each of its ``recipients`` whose locale picks one of
    its template's locale variants (docs/api.md, "Localized templates"), and, for a
    request with a ``collapse_key``, their grouped patterns in that variant (``grouped``);
    the others get the request's own ``rendered`` content. The locales are the
    recipients' contacts' ``locales`` (the request's inline contact first; the create
    reads them with its ids, only when a template has variants). A variant that does
    not render refuses its request, as the template's own text would."""
    localized: list[dict[str, Content]] = [{} for _ in requests]
    patterns: list[dict[str, Patterns]] = [{} for _ in requests]
    wanted = [
        n for n, r in enumerate(requests)
        if r.template is not None and recipients[n]
        and not isinstance(rendered[n], HubError) and stored.get(r.template, {}).get("locales")
    ]
    if not wanted:
        return rendered, localized, patterns
    rendered = list(rendered)
    for n in wanted:
        request = requests[n]
        assert request.template is not None
        variants = stored[request.template]["locales"]
        inline = request.contact.locale if request.contact is not None else None
        by_tag: dict[str, Content] = {}
        grouped_by_tag: dict[str, Patterns] = {}
        try:
            for user in recipients[n]:
                locale = inline if inline and user == recipients[n][0] else locales.get(user)
                tag = pick_locale(variants, locale)
                if tag is None:
                    continue
                if tag not in by_tag:
                    by_tag[tag] = content(request, stored, variant=tag)
                    if request.collapse_key is not None:
                        grouped_by_tag[tag] = grouped(request, stored, by_tag[tag][0], tag)
                localized[n][user] = by_tag[tag]
                if request.collapse_key is not None:
                    patterns[n][user] = grouped_by_tag[tag]
        except HubError as exc:
            rendered[n], localized[n], patterns[n] = exc, {}, {}
    return rendered, localized, patterns


def content(
    request: NotificationCreate, stored: dict[str, dict[str, Any]], variant: str | None = None
) -> Content:
    """``request``'s title, body and link: its own fields, else its template's (in the
    template's ``variant`` locale if given), rendered from its data."""
    if request.template is None:
        assert request.title is not None
        return request.title, request.body or "", request.link
    tpl = stored.get(request.template)
    if tpl is None:
        raise InvalidInput(
            f"unknown template {request.template!r}",
            errors=[{"loc": ["template"], "msg": "unknown template"}],
        )
    if variant is not None:
        text = tpl["locales"][variant]
        tpl = {**tpl, "title": text["title"], "body": text["body"],
               "link": text.get("link") or tpl["link"]}
    title = request.title or render(tpl["title"], request.data)[:200]
    body = request.body if request.body is not None else render(tpl["body"], request.data)
    link = request.link
    if link is None and tpl["link"]:
        link = render(tpl["link"], request.data)
        if not safe_link(link):
            raise InvalidInput(
                "the template's link renders to something that is not an http(s) URL or "
                "a path on this site",
                errors=[{"loc": ["data"], "msg": "renders an unsafe link"}],
            )
    return title, body[:2000], link[:2000] if link else link


#: A group's title when its template has no grouped variant (or it has no template).
DEFAULT_GROUPED_TITLE = "{title} ({count})"
#: The markers a grouped pattern leaves for the database to fill
#: (``notification_group_text``, migrations 0013 and 0015): count, count - 1, newest actor.
_GROUP_MARKERS = {"count": "\x1eC", "others": "\x1eO", "actor": "\x1eA"}
#: After the pattern: what the actor marker becomes when no create gave an actor
#: (without it, ``Someone``).
_SOMEONE = "\x1eS"


def grouped(
    request: NotificationCreate, stored: dict[str, dict[str, Any]], title: str,
    locale: str | None = None,
) -> Patterns:
    """The grouped title and body patterns of ``request`` (whose own title is
    ``title``): its template's ``grouped`` text (that of its ``locale`` variant, when
    given) with the data's placeholders rendered, else ``DEFAULT_GROUPED_TITLE`` with
    ``{title}``; ``{count}``, ``{others}`` and ``{actor}`` are left as markers, and the
    text's ``someone`` (the actor when none is known) follows its own marker. An explicit
    ``title`` in the request uses the default, and so does a locale variant without
    ``grouped`` (never another language's text)."""
    tpl = stored.get(request.template) if request.template and not request.title else None
    text = (tpl or {}).get("grouped")
    if tpl is not None and locale is not None:
        text = tpl["locales"][locale].get("grouped")
    if text:  # the data's placeholders (a data key "title" is the data's)
        values = {k: v.replace("\x1e", "") for k, v in _text_values(request.data).items()}
    else:
        text, values = {"title": DEFAULT_GROUPED_TITLE}, {"title": title.replace("\x1e", "")}
    body, someone = text.get("body"), text.get("someone")
    return (_render_pattern(text["title"], values, someone),
            None if body is None else _render_pattern(body, values, someone))


def _text_values(data: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else _as_text(v) for k, v in data.items()}


def _render_pattern(text: str, values: dict[str, str], someone: str | None = None) -> str:
    out = []
    for literal, field in _parts(text):
        out.append(literal.replace("\x1e", ""))
        if field is None:
            continue
        if field in _GROUP_MARKERS:
            out.append(_GROUP_MARKERS[field])
        elif field in values:
            out.append(values[field])
        else:
            raise InvalidInput(
                f"template variable {field!r} is missing from data",
                errors=[{"loc": ["data", field], "msg": "missing template variable"}],
            )
    if someone is not None:
        out.append(_SOMEONE + someone.replace("\x1e", ""))
    return "".join(out)
