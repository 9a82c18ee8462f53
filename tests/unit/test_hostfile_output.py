"""Atomic file replacement and ConfigMap create-or-update with conflict retries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from k8smpi_runtime.errors import ConflictError
from k8smpi_runtime.hostfile.output import (
    OutputError,
    parse_configmap_arg,
    write_atomic,
    write_configmap,
)
from tests.unit.fakeapi import FakeApi

CM = "/api/v1/namespaces/ns1/configmaps"


def test_write_atomic_new_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "hostfile"
    write_atomic(path, "a slots=1\n")
    assert path.read_text() == "a slots=1\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask
    path.chmod(0o600)
    write_atomic(path, "b slots=2\n")
    assert path.read_text() == "b slots=2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # an existing file keeps its mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostfile"]  # no temp file left


def test_write_atomic_leaves_the_old_file_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hostfile"
    path.write_text("old\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match=r"cannot write .*hostfile: Input/output error"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostfile"]


def test_write_atomic_into_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        write_atomic(tmp_path / "no" / "hostfile", "x\n")


def test_parse_configmap_arg() -> None:
    assert parse_configmap_arg("hf") == ("hf", "hostfile")
    assert parse_configmap_arg("hf:hosts.txt") == ("hf", "hosts.txt")
    with pytest.raises(ValueError, match="no ConfigMap name"):
        parse_configmap_arg(":key")


def test_configmap_create_update_unchanged_keeps_other_keys() -> None:
    api = FakeApi()
    assert write_configmap(api.as_api(), "ns1", "hf", "hostfile", "a\n") == "created"
    stored = api.objects[f"{CM}/hf"]
    assert stored["data"] == {"hostfile": "a\n"}
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "hostfile-gen"}
    stored["data"]["other"] = "kept"
    assert write_configmap(api.as_api(), "ns1", "hf", "hostfile", "b\n") == "updated"
    assert api.objects[f"{CM}/hf"]["data"] == {"hostfile": "b\n", "other": "kept"}
    calls = len(api.calls)
    assert write_configmap(api.as_api(), "ns1", "hf", "hostfile", "b\n") == "unchanged"
    assert [m for m, _ in api.calls[calls:]] == ["GET"]


def test_configmap_conflict_is_retried_after_a_fresh_read() -> None:
    api = FakeApi()
    write_configmap(api.as_api(), "ns1", "hf", "hostfile", "a\n")
    raced = {"n": 0}

    def someone_else_writes_first(method: str, path: str) -> None:
        if method == "PUT" and raced["n"] == 0:
            raced["n"] += 1
            obj = api.objects[path]
            obj["data"]["theirs"] = "x"
            obj["metadata"]["resourceVersion"] = "99"

    api.before_write = someone_else_writes_first
    assert write_configmap(api.as_api(), "ns1", "hf", "hostfile", "mine\n") == "updated"
    assert api.objects[f"{CM}/hf"]["data"] == {"hostfile": "mine\n", "theirs": "x"}
    assert [m for m, _ in api.calls].count("PUT") == 2


def test_configmap_created_by_someone_else_meanwhile() -> None:
    api = FakeApi()

    def they_create_it(method: str, path: str) -> None:
        if method == "POST" and f"{CM}/hf" not in api.objects:
            api.objects[f"{CM}/hf"] = {
                "metadata": {"name": "hf", "resourceVersion": "5"},
                "data": {"theirs": "x"},
            }

    api.before_write = they_create_it
    assert write_configmap(api.as_api(), "ns1", "hf", "hostfile", "mine\n") == "updated"
    assert api.objects[f"{CM}/hf"]["data"] == {"theirs": "x", "hostfile": "mine\n"}


def test_configmap_gives_up_after_repeated_conflicts() -> None:
    api = FakeApi()
    write_configmap(api.as_api(), "ns1", "hf", "hostfile", "a\n")

    def always(method: str, path: str) -> None:
        raise ConflictError("modified", status=409, reason="Conflict")

    api.before_write = always
    with pytest.raises(OutputError, match="kept changing"):
        write_configmap(api.as_api(), "ns1", "hf", "hostfile", "b\n")
    assert api.objects[f"{CM}/hf"]["data"] == {"hostfile": "a\n"}


def test_configmap_binary_key_is_refused() -> None:
    api = FakeApi(
        objects={
            f"{CM}/hf": {"metadata": {"resourceVersion": "1"}, "binaryData": {"hostfile": "AA=="}}
        }
    )
    with pytest.raises(OutputError, match="binaryData"):
        write_configmap(api.as_api(), "ns1", "hf", "hostfile", "b\n")
