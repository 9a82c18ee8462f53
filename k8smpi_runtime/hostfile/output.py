"""Where a hostfile goes: a file replaced atomically, or a ConfigMap created or updated."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from k8smpi_runtime import __version__
from k8smpi_runtime.errors import ConflictError, K8smpiError, NotFoundError

if TYPE_CHECKING:
    from k8smpi_runtime.kube.rest import JSON, Api

logger = logging.getLogger(__name__)

DEFAULT_KEY = "hostfile"
CONFLICT_RETRIES = 5


class OutputError(K8smpiError):
    """The hostfile could not be written where asked (the previous content is intact)."""


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text``: temp file in the same folder, fsync, rename.

    Readers see the old file or the new one, never a mix; on any error the old file is left
    as it was and the temp file is removed. A new file gets mode 0644 (less the umask); an
    existing file keeps its mode.
    """
    target = Path(path)
    folder = target.parent
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror}") from e
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        Path(tmp).replace(target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from e
    # The rename is durable once the folder is synced (not every filesystem allows it).
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def parse_configmap_arg(text: str) -> tuple[str, str]:
    """``NAME[:KEY]`` -> (name, key); the key defaults to ``hostfile``."""
    name, _, key = text.partition(":")
    key = key or DEFAULT_KEY
    if not name:
        raise ValueError(f"--configmap {text!r}: no ConfigMap name")
    return name, key


def write_configmap(api: Api, namespace: str, name: str, key: str, text: str) -> str:
    """Create ConfigMap ``name`` with ``data[key] = text``, or update that key in place.

    Other keys are kept. A conflict (someone else wrote it meanwhile) re-reads and retries.
    Returns ``created``, ``updated`` or ``unchanged``.
    """
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    for _ in range(CONFLICT_RETRIES):
        try:
            current = api.get(f"{path}/{name}")
        except NotFoundError:
            body: JSON = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "hostfile-gen"},
                    "annotations": {"k8smpi.dev/generator": f"hostfile-gen {__version__}"},
                },
                "data": {key: text},
            }
            try:
                api.request("POST", path, body=body)
            except ConflictError:
                logger.debug("ConfigMap %s created meanwhile; updating it", name)
                continue
            return "created"
        data = current.get("data") or {}
        if data.get(key) == text:
            return "unchanged"
        if (current.get("binaryData") or {}).get(key) is not None:
            raise OutputError(f"ConfigMap {name} has {key!r} as binaryData; pick another key")
        current["data"] = {**data, key: text}
        try:
            api.request("PUT", f"{path}/{name}", body=current)
        except ConflictError:
            logger.debug("ConfigMap %s changed meanwhile; re-reading", name)
            continue
        except NotFoundError:
            logger.debug("ConfigMap %s deleted meanwhile; creating it", name)
            continue
        return "updated"
    raise OutputError(
        f"ConfigMap {name} kept changing under us ({CONFLICT_RETRIES} conflicts); try again"
    )
