"""The pods/exec streaming protocol over a websocket (``v5.channel.k8s.io``, ``v4`` fallback).

Each binary message is one channel byte and the payload: 0 stdin, 1 stdout, 2 stderr,
3 error/status (a ``metav1.Status`` once the command ends), 4 terminal resize. v5 adds a CLOSE
message ``[255, channel]`` so a client can half-close stdin, which v4 cannot (kubernetes#89899).
The exit status is parsed here from channel 3; a stream that ends without one is a failure,
never a success (kubernetes#73056), and so is every status that is not ``Success`` (a
``Failure`` carrying exit code 0, or one out of 1..255, is refused, not reported as 0).

Liveness (:class:`Keepalive`, :meth:`ExecStream.start_heartbeat`): a websocket ping reaches
only the API server, which answers it; what reaches the container runtime -- and resets its
stream idle timer (containerd's ``stream_idle_timeout``, the kubelet's
``streamingConnectionIdleTimeout``; both count data frames either way) -- is data. So the
heartbeat writes a caller-given *nudge* (stdin bytes the remote ignores, or a resize) every
interval, and pings when nothing arrived for an interval. When ``count_max`` pings in a row get
no answer, the connection is presumed dead and aborted: a peer that vanished without closing
ends the stream within :attr:`Keepalive.bound` seconds of the last byte received.
"""

from __future__ import annotations

import json
import threading
import time

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import K8smpiError, TransportError, api_error
from k8smpi_runtime.kube import dialing, urls, websocket
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

    from k8smpi_runtime.kube.config import ClientConfig

logger = lazylog.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
SUBPROTOCOLS = (V5, V4)
USER_AGENT = "k8smpi-runtime"


class ExecFailed(K8smpiError):
    """The exec ended with a status that carries no exit code (e.g. executable not found)."""


class ExecTarget(Record):
    namespace: str
    pod: str
    container: str | None = None


class Keepalive(Record):
    """ssh's ServerAliveInterval and ServerAliveCountMax, for an exec stream."""

    interval: float = 30.0
    """Seconds between two nudges (and pings when nothing arrived); 0 turns it all off."""
    count_max: int = 3
    """Unanswered pings in a row after which the connection is presumed dead."""

    @property
    def bound(self) -> float:
        """Seconds after the last byte received within which a dead connection is aborted."""
        return (self.count_max + 2) * self.interval


def exec_url(
    config: ClientConfig,
    target: ExecTarget,
    command: Sequence[str],
    *,
    stdin: bool,
    tty: bool,
) -> str:
    server, path = _exec_path(config, target, command, stdin=stdin, tty=tty)
    return f"wss://{server.netloc}{path}"


def _exec_path(
    config: ClientConfig, target: ExecTarget, command: Sequence[str], *, stdin: bool, tty: bool
) -> tuple[urls.Server, str]:
    """The API server's URL parts and the exec request's path with its query."""
    params: list[tuple[str, str]] = [("command", c) for c in command]
    params += [
        ("stdin", str(stdin).lower()),
        ("stdout", "true"),
        # With a tty the remote has one output stream; asking for stderr too is rejected.
        ("stderr", str(not tty).lower()),
        ("tty", str(tty).lower()),
    ]
    if target.container:
        params.append(("container", target.container))
    server = urls.split_server(config.server)
    path = (
        f"{server.path.rstrip('/')}/api/v1/namespaces/{urls.segment(target.namespace)}"
        f"/pods/{urls.segment(target.pod)}/exec"
    )
    return server, f"{path}?{urls.urlencode(params)}"


def exit_code(status: dict[str, Any]) -> int:
    """The remote exit code a channel-3 Status carries; ExecFailed when it carries none.

    Only ``Success`` is 0. A ``NonZeroExitCode`` cause must say 1..255: anything else (0, 256,
    text) would make a failure look like a success to the shell (256 is 0 as an exit status).
    """
    if status.get("status") == "Success":
        return 0
    causes = (status.get("details") or {}).get("causes") or []
    if status.get("reason") == "NonZeroExitCode":
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                text = str(cause.get("message", "")).strip()
                if text.isdigit() and 1 <= int(text) <= 255:
                    return int(text)
                break
    message = str(status.get("message") or status.get("reason") or "exec failed without status")
    raise ExecFailed(message[:256].replace("\n", " "))


class ExecStream:
    """One pods/exec session: connect, send stdin, iterate output frames, read the status.

    ``frames()`` yields ``(channel, payload)`` for stdout and stderr; after it ends,
    :attr:`status` holds the channel-3 Status, or None if the stream was cut before it came.
    """

    def __init__(
        self,
        config: ClientConfig,
        target: ExecTarget,
        command: Sequence[str],
        *,
        stdin: bool,
        tty: bool = False,
        connect_timeout: float = 30.0,
        subprotocols: Sequence[str] = SUBPROTOCOLS,
        sock: ssl.SSLSocket | None = None,
    ) -> None:
        """Open the exec stream; on ``sock`` (an idle keep-alive connection to the API server,
        which this takes over) when given, else on a new connection.

        A failure after the upgrade request went out without an HTTP answer coming back is a
        TransportError with ``retryable=False``: the command may be running.
        """
        self.target = target
        self.status: dict[str, Any] | None = None
        self.presumed_dead: Keepalive | None = None
        server, path = _exec_path(config, target, command, stdin=stdin, tty=tty)
        headers = [*config.auth_headers().items(), ("User-Agent", USER_AGENT)]
        endpoint = websocket.Endpoint(
            host=server.hostname or "", port=server.port or 443, path=path
        )
        try:
            if sock is None:
                self._ws = websocket.connect(
                    endpoint,
                    context=config.ssl_context(),
                    server_hostname=config.tls_server_name,
                    headers=headers,
                    subprotocols=subprotocols,
                    timeout=connect_timeout,
                    proxy=config.proxy,
                )
            else:
                sock.settimeout(connect_timeout)
                self._ws = websocket.upgrade(
                    sock, endpoint, headers=headers, subprotocols=subprotocols
                )
        except websocket.HandshakeRefused as e:
            text = e.body.decode(errors="replace")
            raise api_error(e.status, _json(e.body), text or e.reason) from e
        except websocket.RequestSent as e:
            raise TransportError(
                f"exec into {target.pod}: {e} (not retried: the command may have started)",
                retryable=False,
            ) from e
        except OSError as e:
            err = dialing.transport_error(config.server, e)
            raise TransportError(f"exec into {target.pod}: {err}", retryable=err.retryable) from e
        # From here on the remote command may run for hours: no read timeout.
        self._ws.settimeout(None)
        self._stopped = threading.Event()
        self.protocol: str = self._ws.subprotocol
        logger.debug("exec %s/%s over %s", target.namespace, target.pod, self.protocol or "?")
        if self.protocol not in subprotocols:
            self._ws.close()
            raise TransportError(
                f"API server offered no supported exec sub-protocol (got {self.protocol!r})",
                retryable=False,
            )

    @property
    def can_close_stdin(self) -> bool:
        return self.protocol == V5

    def write_stdin(self, data: bytes, *, timeout: float | None = None) -> None:
        """``timeout``: see :meth:`websocket.WebSocket.send_binary`."""
        if data:
            self._send(bytes([STDIN]) + data, timeout=timeout)

    def close_stdin(self) -> None:
        """Half-close stdin (v5). On v4 this is impossible; the caller must cope."""
        if self.can_close_stdin:
            self._send(bytes([CLOSE, STDIN]))

    def resize(self, columns: int, rows: int) -> None:
        self._send(bytes([RESIZE]) + json.dumps({"Width": columns, "Height": rows}).encode())

    def _send(self, frame: bytes, *, timeout: float | None = None) -> None:
        try:
            self._ws.send_binary(frame, timeout=timeout)
        except OSError as e:
            raise TransportError(f"exec into {self.target.pod}: sending failed: {e}") from e

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """stdout/stderr payloads as they arrive, until the server closes the stream."""
        try:
            while True:
                try:
                    message = self._ws.recv()
                except OSError as e:
                    if self.presumed_dead is not None:
                        return
                    raise TransportError(f"exec into {self.target.pod}: stream broken: {e}") from e
                if message is None:
                    return
                _opcode, data = message
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == ERROR:
                    if payload:
                        self.status = _json(payload) or {
                            "message": payload.decode(errors="replace")
                        }
                elif channel in (STDOUT, STDERR) and payload:
                    yield channel, payload
        finally:
            self._stopped.set()

    def exit_code(self) -> int:
        """After ``frames()`` ended: the remote exit code, or an error that says why not."""
        if self.status is None:
            if self.presumed_dead is not None:
                k = self.presumed_dead
                raise TransportError(
                    f"exec into {self.target.pod}: no answer from the API server for "
                    f"{k.count_max} pings {k.interval:g}s apart; the connection is presumed "
                    "dead (-o ServerAliveInterval, -o ServerAliveCountMax)"
                )
            raise TransportError(
                f"exec into {self.target.pod}: stream ended without an exit status"
            )
        return exit_code(self.status)

    def start_heartbeat(
        self, keepalive: Keepalive, nudge: Callable[[], None] | None = None
    ) -> None:
        """Keep the stream alive and watch it (module docstring), from a daemon thread.

        ``nudge`` is called every interval: it must send data the remote side ignores.
        """
        if keepalive.interval <= 0:
            return
        threading.Thread(
            target=self._beat, args=(keepalive, nudge), name="kubexec-heartbeat", daemon=True
        ).start()

    def _beat(self, keepalive: Keepalive, nudge: Callable[[], None] | None) -> None:
        ws = self._ws
        seen = ws.received_at
        missed = 0
        while not self._stopped.wait(keepalive.interval):
            if ws.closed:
                return
            try:
                if nudge is not None:
                    nudge()
                if ws.received_at != seen:
                    seen, missed = ws.received_at, 0
                if time.monotonic() - seen < keepalive.interval:
                    continue
                if missed >= keepalive.count_max:
                    logger.debug("no answer to %d pings: aborting the connection", missed)
                    self.presumed_dead = keepalive
                    ws.abort()
                    return
                # A send that blocks here (the server not reading: back-pressure) is not
                # counted: only pings that went out and got no answer are.
                ws.ping()
                missed += 1
            except (K8smpiError, OSError) as e:  # the reader will see the broken connection
                logger.debug("heartbeat stopped: %s", e)
                return

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake (the remote sees stdin EOF).

        Safe from another thread while one is blocked in :meth:`frames`.
        """
        self._stopped.set()
        self._ws.abort()

    def close(self) -> None:
        self._stopped.set()
        try:
            self._ws.close()
        except OSError:
            logger.debug("closing the exec stream failed", exc_info=True)


def _json(raw: bytes | str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
