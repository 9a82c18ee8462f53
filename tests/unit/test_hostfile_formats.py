"""Each output format against golden files (tests/unit/golden/), and read back as a hostfile.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_hostfile_formats.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from k8smpi_runtime import __version__
from k8smpi_runtime.hostfile.core import Hostfile, Options, build
from k8smpi_runtime.hostfile.formats import FORMATS, render
from k8smpi_runtime.hostfile.slots import SlotRule
from k8smpi_runtime.selection import Selected, Target, hostfile_hosts, ordered
from tests.unit.podfactory import make_pod, sts_pod

GOLDEN = Path(__file__).parent / "golden"
VERSION = "@VERSION@"  # in the golden files, so a release does not rewrite them all


def hetero(**options: object) -> Hostfile:
    """3 StatefulSet pods with 4 GPUs, 2 pods with 2 GPUs, a CPU-only launcher pod."""
    pods = [sts_pod("cnode", i) for i in (2, 0, 1)]
    pods += [
        make_pod(
            f"small-{i}", gpus=2, hostname=f"small-{i}", subdomain="cnode-svc", ip=f"10.0.2.{i}"
        )
        for i in (1, 0)
    ]
    pods.append(make_pod("launcher", subdomain="cnode-svc"))
    target = Target(namespace="ns1", description="pods matching job=hf")
    return build(Selected(target, ordered(pods), None), Options(**options))  # type: ignore[arg-type]


CASES: dict[str, tuple[str, dict[str, object], bool]] = {
    "hetero.openmpi": ("openmpi", {}, True),
    "hetero.hydra": ("hydra", {}, True),
    "hetero.expanded": ("expanded", {}, True),
    "hetero.json": ("json", {}, True),
    "hetero-noheader.openmpi": ("openmpi", {}, False),
    "hetero-maxslots.openmpi": ("openmpi", {"slots": SlotRule(max_slots_same=True)}, True),
    "hetero-cap3.json": ("json", {"slots": SlotRule(max_slots=3)}, True),
    "hetero-fqdn-launcher.hydra": (
        "hydra",
        {"names": "fqdn", "cluster_domain": "cluster.local", "launcher_pod": "small-1"},
        True,
    ),
    "hetero-ip.expanded": ("expanded", {"names": "ip", "slots": SlotRule(slots=1)}, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    fmt, options, header = CASES[name]
    text = render(hetero(**options), fmt, header=header)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text.replace(__version__, VERSION))
    expected = path.read_text().replace(VERSION, __version__)
    assert text == expected, f"{name} differs from its golden file (UPDATE_GOLDEN=1 to rewrite)"


def test_rerun_is_byte_identical() -> None:
    for fmt in FORMATS:
        assert render(hetero(), fmt) == render(hetero(), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_as_a_hostfile(fmt: str) -> None:
    """What we write, --hostfile (k8s-waitfor, kubexec) reads: the same hosts in order."""
    hf = hetero()
    assert hostfile_hosts(render(hf, fmt)) == [h.name for h in hf.hosts]
    hf = hetero(names="ip")
    assert hostfile_hosts(render(hf, fmt)) == [h.name for h in hf.hosts]


def test_json_is_json() -> None:
    doc = json.loads(render(hetero(), "json"))
    assert doc["total_slots"] == 16
    assert doc["skipped"] == ["launcher"]
    assert [h["slots"] for h in doc["hosts"]] == [4, 4, 4, 2, 2]


def test_ipv6_in_hydra_is_bracketed() -> None:
    pod = make_pod("v6", gpus=2, ip="fd00::7")
    target = Target(namespace="ns1", description="pods v6")
    hf = build(Selected(target, [pod], 1), Options(names="ip"))
    assert render(hf, "hydra", header=False) == "[fd00::7]:2\n"
    assert render(hf, "openmpi", header=False) == "fd00::7 slots=2\n"
    assert hostfile_hosts(render(hf, "hydra")) == ["[fd00::7]"]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(hetero(), "slurm")
