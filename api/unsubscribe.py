"""``/api/unsubscribe``: the one-click unsubscribe link of every email (RFC 8058).

``POST /api/unsubscribe?token=…`` (what a mail client sends, with the body
``List-Unsubscribe=One-Click``) turns the token's type off for email (a digest's token:
all email) and answers 200.
``GET`` only shows a page with a button that sends that POST: mail scanners fetch the
links of an email, and a fetch must not unsubscribe anyone. The token is the only
credential; a bad or forged one is 422 problem+json (docs/delivery.md, "Email").
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api.pages import security_headers
from hub.errors import PayloadTooLarge
from hub.unsubscribe import PATH, UnsubscribeLinks, unsubscribe

#: A one-click body is 26 bytes; anything much larger is not one.
MAX_BODY = 1024


def _links(request: Request) -> UnsubscribeLinks:
    links: UnsubscribeLinks | None = getattr(request.app.state, "unsubscribe_links", None)
    if links is None:
        links = request.app.state.unsubscribe_links = UnsubscribeLinks(
            request.app.state.settings)
    return links


def _page(title: str, inner: str) -> HTMLResponse:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>\n<body><main>"
        f"<h1>{escape(title)}</h1>{inner}</main></body></html>\n"
    )
    return HTMLResponse(html, headers=security_headers(None))


async def confirm(request: Request) -> Response:
    """``GET``: a page asking to confirm; changes nothing."""
    token = request.query_params.get("token")
    _, type_ = _links(request).verify(token)
    # Relative to this page, so it also works behind a proxy that adds a path prefix.
    form_action = escape("unsubscribe?token=" + quote(token or "", safe=""))
    what = ("all notification emails, digests included" if type_ is None
            else f"emails about <strong>{escape(type_)}</strong>")
    return _page(
        "Unsubscribe",
        f"<p>Stop {what}? In-app notifications are not affected.</p>"
        f'<form method="post" action="{form_action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def one_click(request: Request) -> Response:
    """``POST``: turn the token's type off for email; 200 with a short page."""
    user_id, type_ = _links(request).verify(request.query_params.get("token"))
    size = 0
    async for chunk in request.stream():  # read (and bound) whatever body came
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"an unsubscribe body is at most {MAX_BODY} bytes")
    await unsubscribe(request.app.state.services, user_id, type_)
    what = ("notification emails" if type_ is None
            else f"emails about <strong>{escape(type_)}</strong>")
    return _page(
        "Unsubscribed",
        f"<p>You will no longer get {what}. "
        "You can turn them back on in your notification preferences.</p>",
    )


routes = [
    Route(PATH, confirm, methods=["GET"]),
    Route(PATH, one_click, methods=["POST"]),
]
