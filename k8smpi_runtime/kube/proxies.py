"""Which HTTP proxy (if any) carries the connection to an API server, decided as kubectl does.

- The kubeconfig cluster's ``proxy-url`` wins, and applies to every server address, loopback
  included (client-go sets it as the transport's only proxy).
- Otherwise the environment, as Go's ``http.ProxyFromEnvironment`` reads it for an ``https``
  URL: ``HTTPS_PROXY`` (or ``https_proxy``), unless ``NO_PROXY`` (or ``no_proxy``) names the
  host. ``HTTP_PROXY`` is not used: the API server is always ``https``. ``localhost`` and
  loopback addresses are never proxied from the environment. ``NO_PROXY`` entries, comma
  separated: ``*`` (nothing is proxied), an IP address, a CIDR block, a domain (``example.com``
  matches it and its subdomains, ``.example.com`` only the subdomains, ``*.example.com`` the
  same), each optionally with ``:port``.

This applies in a pod too (client-go's in-cluster config leaves the environment's proxy in
place): set ``NO_PROXY`` to the Service network when a pod has ``HTTPS_PROXY`` for other reasons.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Mapping


def for_server(
    host: str, port: int, *, proxy_url: str | None, env: Mapping[str, str]
) -> str | None:
    """The proxy URL to reach ``host:port`` through, or None for a direct connection."""
    if proxy_url:
        return proxy_url
    proxy = env.get("HTTPS_PROXY") or env.get("https_proxy")
    if not proxy:
        return None
    if _loopback(host) or bypassed(host, port, env.get("NO_PROXY") or env.get("no_proxy") or ""):
        return None
    return proxy


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (its text) names ``host:port``."""
    host = host.lower().strip("[]").rstrip(".")
    ip = _ip(host)
    entries = (raw.strip().lower() for raw in no_proxy.split(","))
    return any(_matches(entry, host, ip, port) for entry in entries if entry)


def _matches(
    entry: str, host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, port: int
) -> bool:
    if entry == "*":
        return True
    if "/" in entry:
        return ip is not None and _in_network(ip, entry)
    name, entry_port = _split_port(entry)
    if entry_port is not None and entry_port != port:
        return False
    entry_ip = _ip(name)
    if entry_ip is not None or ip is not None:
        return ip is not None and ip == entry_ip
    if name.startswith("*."):
        name = name[1:]
    if name.startswith("."):
        return host.endswith(name)
    return host == name or host.endswith("." + name)


def _in_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    import ipaddress  # noqa: PLC0415 - see _ip

    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return ip.version == network.version and ip in network


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return name, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Imported here: only a call with a proxy in its environment gets this far.
    import ipaddress  # noqa: PLC0415

    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    host = host.lower().strip("[]")
    if host == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback
