"""Secrets kept out of what the hub prints: its log lines and its start-up banner.

One rule (docs/configuration.md, "Secrets in logs and URLs"): a query parameter is
secret when its name, read as the hub reads it (percent-decoded, ``+`` as a space) and
lower-cased, contains one of ``SECRET_WORDS``; its whole value is replaced. So every
spelling of ``token`` the hub accepts (``%74oken=``, ``token=%65yJ…``, the parameter
repeated) is hidden, as are ``password=``, ``sslpassword=``, ``api_key=`` and the like
in a database or Redis URL. In a URL, the password of the user info is replaced too.

``redact_record`` is the logging filter ``notifyhub`` installs on its handlers, so it
covers uvicorn's access log and its WebSocket lines (``"WebSocket /ws?…" [accepted]``
or ``403``), which include the raw query string, as well as the hub's own records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote_plus, urlsplit, urlunsplit

#: A query parameter whose decoded, lower-cased name contains one of these is secret.
SECRET_WORDS = ("token", "pass", "pwd", "secret", "key", "auth", "credential", "sig")
#: What replaces a secret in a log line.
REDACTED = "[redacted]"
#: What replaces a secret in a URL the banner shows.
MASK = "***"

# A parameter starts the text or follows ``?`` or ``&`` (the only separator Starlette
# splits on); its value runs to the next ``&``, blank or quote (uvicorn quotes the
# request line). Names exclude ``?`` so a long line is scanned in linear time.
_PARAM = re.compile(r"(^|[?&])([^=&?\s\"]*)=([^&\s\"]*)")


def secret_name(name: str) -> bool:
    """Whether a query parameter named ``name`` (as written in the URL) holds a secret."""
    decoded = unquote_plus(name).lower()
    return any(word in decoded for word in SECRET_WORDS)


def redact_query(text: str, mask: str = REDACTED) -> str:
    """``text`` (a URL, a query string or a log line) with every secret parameter's value
    replaced by ``mask``."""
    if "=" not in text:
        return text
    return _PARAM.sub(
        lambda m: f"{m[1]}{m[2]}={mask}" if secret_name(m[2]) else m[0], text
    )


def mask_url(url: str) -> str:
    """``url`` with the password of its user info and every secret query parameter's
    value as ``***`` (the banner's database and broker lines)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostinfo}"
    query = redact_query(parts.query, MASK)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_record(record: logging.LogRecord) -> bool:
    """Logging filter: redact secret query parameters in ``record``'s message and
    arguments (never drops the record)."""
    if isinstance(record.msg, str):
        record.msg = redact_query(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: redact_query(v) if isinstance(v, str) else v for k, v in args.items()}
    return True
