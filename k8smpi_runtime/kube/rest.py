"""A small JSON client for the Kubernetes REST API: get, paginated list, watch, write.

Standard library only (http.client + ssl): the generated ``kubernetes`` client costs about a
second and 20 MiB to construct, which every kubexec call and every hostfile would pay.
Failures become :mod:`k8smpi_runtime.errors` exceptions; nothing here retries (callers decide).
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.errors import TransportError, api_error
from k8smpi_runtime.kube import dialing, paging

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator, Mapping

    from k8smpi_runtime.kube.config import ClientConfig

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
USER_AGENT = "k8smpi-runtime"


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS dialled by :mod:`.dialing` (proxy, socket options) with an optional TLS server name
    that differs from the host (kubeconfig field)."""

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        context: ssl.SSLContext,
        timeout: float,
        sni: str,
        proxy: str | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ctx = context
        self._sni = sni
        self._proxy = proxy

    def connect(self) -> None:
        self.sock = dialing.open_tls(
            self.host,
            self.port,
            context=self._ctx,
            server_hostname=self._sni,
            timeout=self.timeout,
            proxy=self._proxy,
        )


class Api:
    """One keep-alive connection to the API server; not thread-safe (one per thread)."""

    def __init__(self, config: ClientConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        url = urllib.parse.urlsplit(config.server)
        if url.scheme != "https" or not url.hostname:
            raise TransportError(f"API server URL must be https://host[:port]: {config.server}")
        self._host = url.hostname
        self._port = url.port or 443
        self._base = url.path.rstrip("/")
        self._ssl = config.ssl_context()
        self._conn: _HTTPSConnection | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def _new_connection(self, timeout: float) -> _HTTPSConnection:
        return _HTTPSConnection(
            self._host,
            self._port,
            context=self._ssl,
            timeout=timeout,
            sni=self.config.tls_server_name or self._host,
            proxy=self.config.proxy,
        )

    def url(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> str:
        query = urllib.parse.urlencode(
            {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in (params or {}).items()}
        )
        return f"{self._base}{path}" + (f"?{query}" if query else "")

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": USER_AGENT}
        h.update(self.config.auth_headers())
        h.update(extra or {})
        return h

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        """One request; the decoded JSON answer, or an ApiError/TransportError."""
        data = json.dumps(body).encode() if body is not None else None
        headers = self.headers({"Content-Type": content_type} if data is not None else None)
        url = self.url(path, params)
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._new_connection(self.timeout)
            try:
                self._conn.request(method, url, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A keep-alive connection the server closed meanwhile: one fresh try.
                self.close()
                if attempt == 2:
                    raise dialing.transport_error(self.config.server, e) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise dialing.transport_error(self.config.server, e) from e
        logger.debug("%s %s -> %s", method, url, resp.status)
        decoded = _decode(raw)
        if resp.status >= 400:
            raise api_error(resp.status, decoded, raw.decode(errors="replace"), _retry_after(resp))
        return decoded or {}

    # -- verbs -------------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> JSON:
        return self.request("GET", path, params=params)

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[JSON], str]:
        """All items of a collection, page by page; returns them with the list's resourceVersion."""
        return paging.list_all(self.get, path, params, limit)

    def watch(
        self,
        path: str,
        params: Mapping[str, str | int | bool] | None = None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> Iterator[JSON]:
        """Watch events (``{"type": ..., "object": ...}``) from ``resource_version`` on.

        Ends when the server closes the stream (``timeout_seconds``); an ``ERROR`` event
        (410 Gone and others) is raised as the matching ApiError.
        """
        query: dict[str, str | int | bool] = dict(params or {})
        query.update(
            watch=True,
            resourceVersion=resource_version,
            allowWatchBookmarks=True,
            timeoutSeconds=timeout_seconds,
        )
        url = self.url(path, query)
        conn = self._new_connection(timeout_seconds + 30)
        try:
            conn.request("GET", url, headers=self.headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                raw = resp.read()
                raise api_error(resp.status, _decode(raw), raw.decode(errors="replace"))
            logger.debug("watch %s", url)
            for line in resp:
                if not line.strip():
                    continue
                event: JSON = json.loads(line)
                if event.get("type") == "ERROR":
                    obj = event.get("object") or {}
                    raise api_error(int(obj.get("code", 500)), obj)
                yield event
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise dialing.transport_error(self.config.server, e) from e
        finally:
            conn.close()

    def stream(
        self, path: str, params: Mapping[str, str | int | bool] | None = None
    ) -> Iterator[bytes]:
        """A GET read as it arrives (a pod's log with ``follow=true``): chunks of bytes.

        A connection of its own with no read timeout: a quiet log is not an error. It ends when
        the server ends the answer; a failure status is raised as the matching ApiError.
        """
        url = self.url(path, params)
        conn = self._new_connection(self.timeout)
        try:
            conn.request("GET", url, headers=self.headers({"Accept": "*/*"}))
            resp = conn.getresponse()
            if resp.status >= 400:
                raw = resp.read()
                raise api_error(resp.status, _decode(raw), raw.decode(errors="replace"))
            logger.debug("stream %s", url)
            if conn.sock is not None:
                conn.sock.settimeout(None)
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    return
                yield chunk
        except (OSError, http.client.HTTPException) as e:
            raise dialing.transport_error(self.config.server, e) from e
        finally:
            conn.close()


def _decode(raw: bytes) -> JSON | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _retry_after(resp: http.client.HTTPResponse) -> float | None:
    value = resp.getheader("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None
