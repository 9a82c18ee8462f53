"""Starting, finding and stopping the devcluster's processes, by the pids they recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.layout import DevclusterError, log, write_atomic

if TYPE_CHECKING:
    from devcluster.layout import Layout


def read_pid(lay: Layout, name: str, exe: str | None = None) -> int | None:
    """The recorded pid, if that process is still the one we started (not a reused pid): its
    executable is ``exe`` (default: the component's name)."""
    try:
        pid = int(lay.pidfile(name).read_text().strip())
        path = Path(f"/proc/{pid}/exe").readlink()
    except (OSError, ValueError):
        return None
    return pid if path.name.removesuffix(" (deleted)") == (exe or name) else None


def start(lay: Layout, name: str, argv: list[str]) -> int:
    lay.logs.mkdir(parents=True, exist_ok=True)
    lay.run.mkdir(parents=True, exist_ok=True)
    with (lay.logs / f"{name}.log").open("ab") as out:
        # A session of its own: the component outlives `make`, and `down` can stop it together
        # with anything it started (kwok's execs) through its process group.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=lay.root,
        )
    write_atomic(lay.pidfile(name), f"{proc.pid}\n")
    return proc.pid


def stop(
    lay: Layout, name: str, timeout: float = 15.0, exe: str | None = None, *, kill: bool = False
) -> None:
    """Stop ``name`` and its process group: TERM, then KILL after ``timeout`` seconds.

    ``kill``: KILL at once -- a crash, not a drain (an apiserver given TERM closes its streams
    gracefully and keeps old ones open for a while, which is not what a crash does)."""
    pid = read_pid(lay, name, exe)
    if pid is not None:
        if not kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.05)
        if _group_alive(pid):
            raise DevclusterError(f"{name} (process group {pid}) did not stop")
        log(f"{'killed' if kill else 'stopped'} {name} (pid {pid})")
    lay.pidfile(name).unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def https_ok(lay: Layout, url: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    ctx.load_cert_chain(str(lay.pki / "admin.crt"), str(lay.pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:  # noqa: S310 - our https URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - our loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
