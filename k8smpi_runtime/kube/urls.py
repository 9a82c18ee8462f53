"""The few URL operations kubexec's requests need, as :mod:`urllib.parse` does them.

Why not urllib.parse: on Python 3.11 it imports :mod:`ipaddress`, about 4 ms of every
kubexec call's start. These functions give byte-for-byte urllib's results for what kubexec
sends (tests/unit/test_kube_urls.py compares them); :mod:`k8smpi_runtime.kube.rest` (the
tools that list and watch) keeps using urllib.
"""

from __future__ import annotations

from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Iterable

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str, safe: str = "/") -> str:
    """``urllib.parse.quote(text, safe)``: UTF-8, unreserved and ``safe`` characters kept."""
    return _quote(text, frozenset(safe.encode()), plus=False)


def segment(part: str) -> str:
    """One URL path segment: every ``/``, ``?``, ``#`` and ``%`` stays inside it."""
    return quote(part, safe="")


def urlencode(pairs: Iterable[tuple[str, object]]) -> str:
    """``urllib.parse.urlencode(pairs)`` (no ``doseq``): ``quote_plus`` on str() of each."""
    return "&".join(
        f"{_quote(str(k), frozenset(), plus=True)}={_quote(str(v), frozenset(), plus=True)}"
        for k, v in pairs
    )


_TABLES: dict[tuple[frozenset[int], bool], list[str]] = {}


def _quote(text: str, safe: frozenset[int], *, plus: bool) -> str:
    # A byte -> text table per (safe, plus): the wrapper kubexec sends is 5 kB, every call.
    table = _TABLES.get((safe, plus))
    if table is None:
        table = _TABLES[safe, plus] = [
            chr(b) if b in _UNRESERVED or b in safe else "+" if plus and b == 0x20 else f"%{b:02X}"
            for b in range(256)
        ]
    return "".join(map(table.__getitem__, text.encode()))


class Server(Record):
    """An API server URL's parts, as ``urlsplit`` names them."""

    scheme: str
    netloc: str
    hostname: str | None
    port: int | None
    path: str


def split_server(url: str) -> Server:
    """``urlsplit(url)``'s scheme, netloc, hostname, port and path, for a server URL
    (``https://host[:port][/path]``; IPv6 in brackets). ValueError as urlsplit raises it."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        return Server(scheme="", netloc="", hostname=None, port=None, path=url)
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found >= 0:
            end = min(end, found)
    netloc, tail = rest[:end], rest[end:]
    path = tail.split("?", 1)[0].split("#", 1)[0]
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise ValueError("Invalid IPv6 URL")
        port_text = after[1:] if after.startswith(":") else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    port = None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii():
            raise ValueError(f"Port could not be cast to integer value as {port_text!r}")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError("Port out of range 0-65535")
    return Server(
        scheme=scheme.lower(),
        netloc=netloc,
        hostname=host.lower() or None,
        port=port,
        path=path,
    )
