"""Finding the links of rendered content and putting tracked short links in their place (pure).

``track_content`` takes a message's content (channel -> rendered parts, as
templates/renderer.py makes them) and returns new content plus the links to store:

- text parts (SMS and WeChat ``body``, the email text part): every http(s) URL;
- email ``html``: the ``href`` of ``<a>`` and ``<area>`` tags (not ``<link>`` stylesheets, which
  a mail client loads without a click), plus an open pixel;
- WeChat ``url``: the template message's jump.

Only links to hosts the templates themselves name (``written_hosts``) or configured domains
(``TrackedHosts``) are tracked: a URL that came in through a variable (a transfer remark, a
merchant's name) stays as it is, else ``/t/<token>`` on the bank's domain would redirect
wherever that data pointed. The input is never changed.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TOKEN_LENGTH = 8
TOKEN_PATTERN = re.compile(f"[0-9A-Za-z]{{{TOKEN_LENGTH}}}")
LINK, OPEN = "link", "open"

# A URL in text runs over printable ASCII: it stops at whitespace and at the first non-ASCII
# character, so Chinese text or punctuation (，。）」) written right after a link is not taken
# into it (SMS copy rarely leaves a space). Internationalized paths arrive percent-encoded.
# Printable ASCII except < > " ` : the wrappers of <https://...> and "https://...".
_TEXT_URL = re.compile(r"https?://[!#-;=?-_a-~]+", re.IGNORECASE)
_TRAILING = ".,;:!?'*"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
# whitespace before href: data-href="..." is not the link
_HREF = re.compile(
    r"""(<(?:a|area)\s(?:[^>]*?\s)?href\s*=\s*)(["'])(.*?)(\2)""", re.IGNORECASE | re.DOTALL
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_HTTP = re.compile(r"https?://\S", re.IGNORECASE)
# A host written out in a template's source: what follows it ends it, so "https://{{ host }}"
# names none. A host followed by a variable ("https://m.bank.cn{{ path }}") is written: a
# variable extending it ("https://bank{{ x }}.cn") renders another host, which the exact
# comparison of TrackedHosts refuses.
_WRITTEN_HOST = re.compile(
    r"https?://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::[0-9]+)?(?![a-z0-9:-]|\.[a-z0-9{])",
    re.IGNORECASE,
)


def new_token() -> str:
    """8 base62 characters from os.urandom (62^8 ≈ 2.2e14 values, about 47.6 bits).

    Not collision-free at a bank's volume: after 10^8 stored links a new token collides with
    probability ~5e-7, so the writer (app/tracking/service.py) inserts with ON CONFLICT DO
    NOTHING and gives the few losers a new token. Rejection sampling (bytes < 248 = 4 × 62)
    keeps every character uniform: guessing a live token stays as hard as the length says."""
    out: list[str] = []
    while len(out) < TOKEN_LENGTH:
        for byte in os.urandom(TOKEN_LENGTH + 4):
            if byte < 248 and len(out) < TOKEN_LENGTH:
                out.append(ALPHABET[byte % 62])
    return "".join(out)


def written_hosts(sources: Iterable[Any]) -> frozenset[str]:
    """The hosts of the http(s) URLs written in template sources (strings, or dicts and lists
    of them, as template options are): those whose links are tracked."""
    hosts: set[str] = set()
    for source in sources:
        if isinstance(source, str):
            if "://" in source:
                hosts.update(h.lower() for h in _WRITTEN_HOST.findall(source))
        elif isinstance(source, Mapping):
            hosts |= written_hosts(source.values())
        elif isinstance(source, list | tuple):
            hosts |= written_hosts(source)
    return frozenset(hosts)


@dataclass(frozen=True, slots=True)
class TrackedHosts:
    """Whose links are tracked: the hosts written in the templates (exactly), and configured
    domains (with their subdomains)."""

    written: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
        except ValueError:  # a bracketed host that is no IPv6 address
            return False
        if "@" in parts.netloc or "\\" in url:  # browsers read these hosts otherwise
            return False
        if host in self.written:
            return True
        return any(host == d or host.endswith(f".{d}") for d in self.domains)


def as_tracked(text: str, *, base_url: str, hosts: TrackedHosts | None = None) -> str:
    """``text`` as it will read once its links are tracked (the tokens stand in as "x"s):
    what a length budget (an SMS's segments) must measure, since composing comes first.
    ``hosts``: as for ``track_content``."""
    return _text(text, _Rewriter(base_url, lambda: "x" * TOKEN_LENGTH, hosts))


def is_token(text: str) -> bool:
    """Whether ``text`` could be a token (checked before any query)."""
    return TOKEN_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Link:
    """A link to store: ``kind`` LINK (``url`` the original) or OPEN (the pixel, no url)."""

    token: str
    kind: str
    url: str | None


class _Rewriter:
    """The tracked links of one message: one token per distinct URL."""

    def __init__(
        self, base_url: str, token: Callable[[], str], hosts: TrackedHosts | None = None
    ) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.hosts = hosts
        self.by_url: dict[str, str] = {}
        self.links: list[Link] = []

    def tracked(self, url: str) -> str:
        if url.startswith((f"{self.base}/t/", f"{self.base}/o/")):
            return url  # already ours (content tracked twice must not chain redirects)
        if self.hosts is not None and not self.hosts.allows(url):
            return url  # not a link the templates wrote: it came with the data
        token = self.by_url.get(url)
        if token is None:
            token = self.by_url[url] = self.token()
            self.links.append(Link(token, LINK, url))
        return f"{self.base}/t/{token}"

    def pixel(self) -> str:
        token = self.token()
        self.links.append(Link(token, OPEN, None))
        return f'<img src="{self.base}/o/{token}" width="1" height="1" alt="" style="display:none">'


def _trim(url: str) -> str:
    """Drop punctuation that ends the sentence rather than the URL; a closing bracket only
    when it has no opening partner in the URL (``https://x/wiki/A_(B)`` keeps its ``)``)."""
    while url:
        last = url[-1]
        if last in _TRAILING or (last in _CLOSERS and url.count(_CLOSERS[last]) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


def _text(text: str, rewriter: _Rewriter) -> str:
    if "://" not in text:  # almost every text: no regex at all
        return text

    def replace(match: re.Match[str]) -> str:
        url = _trim(match.group(0))
        if not _HTTP.match(url):  # "http://" and nothing after it
            return match.group(0)
        return rewriter.tracked(url) + match.group(0)[len(url) :]

    return _TEXT_URL.sub(replace, text)


def _html(markup: str, rewriter: _Rewriter) -> str:
    if "://" in markup:

        def replace(match: re.Match[str]) -> str:
            url = html.unescape(match.group(3)).strip()
            if not _HTTP.match(url):  # mailto:, tel:, #anchors, relative links stay
                return match.group(0)
            return f"{match.group(1)}{match.group(2)}{rewriter.tracked(url)}{match.group(4)}"

        markup = _HREF.sub(replace, markup)
    pixel = rewriter.pixel()
    ends = list(_BODY_END.finditer(markup))
    if not ends:
        return markup + pixel
    at = ends[-1].start()
    return markup[:at] + pixel + markup[at:]


def _part(channel: str, part: Mapping[str, Any], rewriter: _Rewriter) -> dict[str, Any]:
    out = dict(part)
    if isinstance(part.get("body"), str):
        out["body"] = _text(part["body"], rewriter)
    if channel == "email" and isinstance(part.get("html"), str):
        out["html"] = _html(part["html"], rewriter)
    url = part.get("url")
    if channel == "wechat" and isinstance(url, str) and _HTTP.match(url.strip()):
        out["url"] = rewriter.tracked(url.strip())
    return out


def track_content(
    content: Mapping[str, Mapping[str, Any]],
    *,
    base_url: str,
    token: Callable[[], str] = new_token,
    hosts: TrackedHosts | None = None,
) -> tuple[dict[str, dict[str, Any]], list[Link]]:
    """New content with tracked links, and the links to store (none: nothing to track).
    ``token`` makes each new token (tests pass a predictable one); ``hosts``: whose links
    are tracked (None: every link)."""
    rewriter = _Rewriter(base_url, token, hosts)
    tracked = {channel: _part(channel, part, rewriter) for channel, part in content.items()}
    return tracked, rewriter.links


def retoken(value: Any, *, base_url: str, old: str, new: str) -> Any:
    """``value`` (content) with the tracked URLs of token ``old`` pointing at ``new``: for the
    rare token that lost an insert race. Tokens are random, so the URL text is unique."""
    base = base_url.rstrip("/")
    pairs = [(f"{base}/{path}/{old}", f"{base}/{path}/{new}") for path in ("t", "o")]
    if isinstance(value, str):
        for before, after in pairs:
            value = value.replace(before, after)
        return value
    if isinstance(value, Mapping):
        return {k: retoken(v, base_url=base, old=old, new=new) for k, v in value.items()}
    if isinstance(value, list):
        return [retoken(v, base_url=base, old=old, new=new) for v in value]
    return value
