"""RPC endpoint URLs: which ones RTRM's clients can use, and how one is printed.

Providers hand out URLs with a secret inside: a user and password
(``https://user:pass@host``), an API key as a path segment (``/v2/<key>``) or as a query
value (``?apikey=<key>``). RTRM connects to a URL exactly as configured, and never prints
or logs it so.

Invariants:

- :func:`rpc_url_problem` is the one rule for a usable RPC URL, applied by the
  configuration (:mod:`chains.spec`) and by both clients (:mod:`chains.rpc`,
  :mod:`chains.aiorpc`): ``http://`` or ``https://`` with a host and a valid port. Both
  clients speak JSON-RPC over HTTP(S) only, so a ``ws(s)://`` URL is refused with its fix
  (the node's http(s) endpoint).
- :func:`hide_credentials` is how a URL is shown: the password (the user too when it
  has none: a token), every query value and each path segment that looks like an API key
  become ``***``; the scheme, host, port, a user with a password and the other path
  segments stay, so endpoints can be told apart. It is
  idempotent and never raises (an unparsable URL is shown as ``<unparsable URL>``).
- :func:`redact` takes a URL's secrets out of any text that may quote it (an error
  message, a library's exception, a node's error body): the URL itself becomes its
  shown form, and each secret of :data:`MIN_SECRET_CHARS` or more characters ``***``.
  Every :class:`~chains.exceptions.RPCError` applies it to its message for its ``url``.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = [
    "MIN_SECRET_CHARS",
    "RPC_SCHEMES",
    "hide_credentials",
    "redact",
    "rpc_url_problem",
]

RPC_SCHEMES = ("http", "https")
MIN_SECRET_CHARS = 6  # shorter ones are only hidden where the whole URL is quoted
_WEBSOCKET = {"ws": "http", "wss": "https"}
_HIDDEN = "***"
_UNPARSABLE = "<unparsable URL>"
_KEY_LIKE = re.compile(r"[A-Za-z0-9_-]{20,}")  # API keys: Alchemy, Infura, QuickNode, Ankr…


def rpc_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an RPC endpoint, and the fix; ``None`` if usable.

    The message quotes the URL with its credentials hidden; the caller prefixes where the
    URL was set (``chains.42161.rpc_urls[1]: …``).
    """
    if not url.strip():
        return "is empty; write the node's URL, e.g. http://127.0.0.1:8545"
    shown = hide_credentials(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number below 65536
    except ValueError as exc:
        return (
            f"{shown!r} is not a URL ({exc}); write http(s)://host[:port][/path], "
            "e.g. http://127.0.0.1:8545"
        )
    if parts.scheme in _WEBSOCKET:
        http = _WEBSOCKET[parts.scheme]
        guess = hide_credentials(urlunsplit(parts._replace(scheme=http)))
        return (
            f"{shown!r} is a WebSocket URL, but RTRM speaks JSON-RPC over HTTP(S) only; use "
            f"the node's {http}:// endpoint instead, often the same address ({guess!r}; "
            "check the provider's docs: some use another path or port)"
        )
    if "://" not in url and parts.scheme not in RPC_SCHEMES:  # "host:port", or a bare word
        return f"{shown!r} has no scheme; write it as {'http://' + shown!r} (or https://)"
    if parts.scheme not in RPC_SCHEMES or not parts.hostname:
        return (
            f"{shown!r} is not an RPC URL; use http:// or https:// with a host, "
            "e.g. http://127.0.0.1:8545"
        )
    return None


def hide_credentials(url: str) -> str:
    """``url`` fit to print: its password (or a user without one: a token), query values,
    and path segments that look like API keys (20 or more letters, digits, ``-`` and
    ``_``, with a digit or a capital) replaced by ``***``; the host and port stay, to tell
    endpoints apart."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _UNPARSABLE
    user, at, host = parts.netloc.rpartition("@")
    if at:  # "user:password@" keeps the user; a lone "token@" or "token:@" is the secret
        name, _, password = user.partition(":")
        host = f"{name}:{_HIDDEN}@{host}" if password else f"{_HIDDEN}@{host}"
    path = "/".join(_HIDDEN if _looks_like_key(piece) else piece for piece in parts.path.split("/"))
    query = "&".join(
        f"{piece.partition('=')[0]}={_HIDDEN}" if "=" in piece else _HIDDEN
        for piece in parts.query.split("&")
        if piece
    )
    if (host, path, query) == (parts.netloc, parts.path, parts.query):
        return url  # nothing hidden: as written (urlunsplit would normalise it)
    return urlunsplit(parts._replace(netloc=host, path=path, query=query))


def redact(text: str, *urls: str) -> str:
    """``text`` with every secret of ``urls`` hidden: each URL quoted whole becomes its
    :func:`hide_credentials` form, and each of its secrets (as written, and
    percent-decoded) of at least :data:`MIN_SECRET_CHARS` characters becomes ``***``."""
    for url in urls:
        shown = hide_credentials(url)
        if shown == url:
            continue
        try:
            found = _secrets(urlsplit(url))
        except ValueError:
            found = set()
        secrets = sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)
        pieces = text.split(url)  # between the quotes of the whole URL, which become `shown`
        for secret in secrets:  # longest first: a longer one may hold another
            pieces = [piece.replace(secret, _HIDDEN) for piece in pieces]
        text = shown.join(pieces)
    return text


def _secrets(parts: SplitResult) -> set[str]:
    """The pieces of a URL that :func:`hide_credentials` hides, raw and percent-decoded."""
    found: list[str] = []
    user, at, _ = parts.netloc.rpartition("@")
    if at:
        name, _, password = user.partition(":")
        found.append(password or name)
    found += [piece for piece in parts.path.split("/") if _looks_like_key(piece)]
    found += [p.partition("=")[2] if "=" in p else p for p in parts.query.split("&")]
    return {form for secret in found for form in (secret, unquote(secret)) if form}


def _looks_like_key(segment: str) -> bool:
    return _KEY_LIKE.fullmatch(segment) is not None and any(
        c.isdigit() or c.isupper() for c in segment
    )
