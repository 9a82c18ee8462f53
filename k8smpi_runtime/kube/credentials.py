"""Bearer tokens and client keys as client-go gets them, for processes that live long.

A :class:`TokenSource` gives the token to send *now*:

- :class:`StaticToken`: the kubeconfig's ``token``;
- :class:`FileToken`: a file re-read when the last read is older than :data:`FILE_PERIOD`
  seconds (client-go's ``CachedFileTokenSource``): the in-cluster service-account token and a
  kubeconfig ``tokenFile``. Bound service-account tokens rotate (the kubelet rewrites them
  after 80% of their life), so a waiter that runs for minutes must not keep the first one. A
  read that fails after a good one keeps the last good token;
- :class:`ExecPlugin`: a ``client.authentication.k8s.io`` credential plugin, run once and its
  answer cached until its ``expirationTimestamp`` (for the process's life when it has none),
  then run again. Its stderr goes to ours, as with kubectl (an interactive plugin talks to the
  user there); it is never copied into our own messages, where a plugin's diagnostics could
  carry a secret.

Every token is checked before it is used: one holding a line break or another control
character (a header injection), or a character an HTTP header cannot carry, is refused with a
message that never shows the token.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import ConfigError
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Protocol

    class TokenSource(Protocol):
        def token(self) -> str | None:
            """The token to send now (None: none, e.g. a plugin that gave only a
            certificate)."""
            ...


logger = lazylog.getLogger(__name__)

FILE_PERIOD = 60.0
"""Seconds after which a token file is read again (client-go's period)."""
EXEC_TIMEOUT = 60.0
EXPIRY_MARGIN = 10.0
"""Run the plugin again this many seconds before its credential expires."""


def check_token(value: str, where: str) -> str:
    """``value`` if it can travel in an ``Authorization`` header; ConfigError (not naming it)."""
    for char in value:
        code = ord(char)
        if char in "\r\n":
            raise ConfigError(f"the token from {where} holds a line break; refusing to send it")
        if code < 0x20 or code >= 0x7F:
            raise ConfigError(
                f"the token from {where} holds a control or non-ASCII character; "
                "refusing to send it"
            )
    if not value:
        raise ConfigError(f"the token from {where} is empty")
    return value


class StaticToken:
    """The kubeconfig's ``token``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "StaticToken(...)"

    def token(self) -> str:
        return self._value


class FileToken:
    """A token file, read again after :data:`FILE_PERIOD` seconds (see the module doc)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        period: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.period = FILE_PERIOD if period is None else period
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._value = self._read()  # the first read must work: fail at load, not later
        self._read_at = self._clock()

    def __repr__(self) -> str:
        return f"FileToken({self.path!r})"

    def _read(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="strict") as f:
                text = f.read()
        except (OSError, UnicodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8"
            raise ConfigError(f"cannot read the token file {self.path}: {reason}") from None
        return check_token(text.strip(), self.path)

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self.period:
                try:
                    self._value = self._read()
                except ConfigError as e:
                    logger.warning("%s; keeping the token read before", e)
                self._read_at = now
            return self._value


class Credential(Record):
    """What a plugin returned: a token and/or a client certificate and key, and its expiry."""

    token: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    expires: float | None = None
    """Wall-clock seconds (``time.time()``); None: valid for the process's life."""

    def __repr__(self) -> str:
        return f"Credential(expires={self.expires})"


class ExecPlugin:
    """A kubeconfig ``exec`` credential plugin, cached until its answer expires."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        kubeconfig_dir: str,
        env: Mapping[str, str],
        cluster_info: Mapping[str, Any] | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        command = spec.get("command")
        if not command or not isinstance(command, str):
            raise ConfigError("kubeconfig exec plugin has no command")
        # client-go: a command with a path separator is a path, relative to the kubeconfig's
        # folder; a bare name is looked up on PATH.
        if "/" in command and not os.path.isabs(command):
            command = os.path.join(kubeconfig_dir, command)
        self.command = command
        self.args = [str(a) for a in spec.get("args") or []]
        self.api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
        self.env = dict(env)
        for item in spec.get("env") or []:
            if isinstance(item, dict) and "name" in item:
                self.env[str(item["name"])] = str(item.get("value", ""))
        wants_info = bool(spec.get("provideClusterInfo")) and cluster_info is not None
        self.cluster_info = dict(cluster_info or {}) if wants_info else None
        self._wall = wall
        self._lock = threading.Lock()
        self._cached: Credential | None = None

    def __repr__(self) -> str:
        return f"ExecPlugin({self.command!r})"

    def credential(self) -> Credential:
        """The cached credential, or a fresh one when there is none or it (nearly) expired."""
        with self._lock:
            cached = self._cached
            if cached is None or (
                cached.expires is not None and self._wall() >= cached.expires - EXPIRY_MARGIN
            ):
                cached = self._cached = self._run()
            return cached

    def token(self) -> str | None:
        return self.credential().token

    def _run(self) -> Credential:
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster_info is not None:
            spec["cluster"] = self.cluster_info
        child_env = dict(self.env)
        child_env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        )
        import subprocess  # noqa: PLC0415 - only exec-plugin users pay for it (kubexec startup)

        name = self.command
        try:
            # stderr is inherited (kubectl's behaviour): never captured into our messages.
            proc = subprocess.run(
                [self.command, *self.args],
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                check=False,
                timeout=EXEC_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"kubeconfig exec plugin {name!r} did not answer within {EXEC_TIMEOUT:.0f}s"
            ) from None
        except OSError as e:
            raise ConfigError(
                f"kubeconfig exec plugin {name!r} could not run: {e.strerror}"
            ) from None
        if proc.returncode != 0:
            raise ConfigError(
                f"kubeconfig exec plugin {name!r} exited {proc.returncode} (its own messages, "
                "if any, are above on stderr)"
            )
        return _parse_credential(proc.stdout, name, self.api_version)


def _parse_credential(stdout: bytes, name: str, api_version: str) -> Credential:
    try:
        doc = json.loads(stdout)
        status = doc["status"]
        if not isinstance(status, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"kubeconfig exec plugin {name!r} printed no ExecCredential") from None
    if doc.get("apiVersion") not in (None, api_version):
        raise ConfigError(
            f"kubeconfig exec plugin {name!r} answered {doc.get('apiVersion')!r}, "
            f"not the configured {api_version!r}"
        )
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if token is None and cert is None:
        raise ConfigError(f"kubeconfig exec plugin {name!r} returned no token and no certificate")
    if (cert is None) != (key is None):
        raise ConfigError(f"kubeconfig exec plugin {name!r} returned a certificate or key alone")
    if token is not None:
        check_token(str(token), f"exec plugin {name!r}")
    return Credential(
        token=str(token) if token is not None else None,
        cert_pem=str(cert).encode() if cert else None,
        key_pem=str(key).encode() if key else None,
        expires=_expiry(status.get("expirationTimestamp"), name),
    )


def _expiry(value: object, name: str) -> float | None:
    if value in (None, ""):
        return None
    import datetime as dt  # noqa: PLC0415 - only plugins with an expiry need it

    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"kubeconfig exec plugin {name!r} gave an expirationTimestamp that is not RFC 3339"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
