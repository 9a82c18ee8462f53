"""k8smpi-preflight's node checks on fixture trees laid out like real systems.

The trees and where each file's format comes from: tests/unit/preflight_tree.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k8smpi_runtime.preflight import cuda, gpu, image, limits, rdma, ucx
from k8smpi_runtime.preflight.host import Host
from k8smpi_runtime.preflight.local import OFF, Expect, Live, node_checks
from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, WARN, Finding, Report
from k8smpi_runtime.preflight.native import CudaProbe, VerbsProbe
from tests.unit.preflight_tree import Tree

CUDA_BASE = {
    "cuda": "12.8.1",
    "ucx": "1.18.1",
    "ucx.cuda": True,
    "ucx.gdrcopy": True,
    "openmpi": "5.0.8",
}


def run(tree: Tree, expect: Expect | None = None, live: Live = OFF) -> Report:
    return node_checks(Host(tree.root, env={}), expect or Expect(), live, "w-0")


def one(report: Report, check: str) -> Finding:
    return report.by_check()[check]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


# -- the driver against the image's CUDA ---------------------------------------------------------


def test_driver_too_old_for_the_images_cuda(tree: Tree) -> None:
    tree.nvidia("470.57.02", gpus=4).cuda_toolkit("12.8.1")
    found = one(run(tree, Expect(gpus=4)), "cuda")
    assert found.status == FAIL
    assert "470.57.02" in found.found and "12.8.1" in found.found
    assert found.expected == ">= 570.26"
    # the rule applied, with the exact versions: minor-version compat and forward compat named
    assert ">= 525.60.13 through minor-version compatibility" in found.message
    assert "no forward-compat package (cuda-compat-12-8)" in found.message


def test_driver_new_enough(tree: Tree) -> None:
    tree.nvidia("570.124.06", gpus=4).versions(CUDA_BASE, {"CUDA_VERSION": "12.8.1"})
    report = run(tree, Expect(gpus=4))
    found = one(report, "cuda")
    assert found.status == OK
    assert found.expected == ">= 570.26"
    assert "/etc/k8smpi/versions.json" in found.found  # the image's CUDA came from its record
    assert one(report, "gpu").status == OK
    assert "NVIDIA H100 80GB HBM3" in one(report, "gpu").found


def test_minor_version_compatibility_runs_with_a_warning(tree: Tree) -> None:
    tree.nvidia("535.104.05", gpus=1).cuda_toolkit("12.8.1")
    found = one(run(tree, Expect(gpus=1)), "cuda")
    assert found.status == WARN
    assert "minor-version compatibility" in found.message
    assert "525.60.13" in found.message


def test_forward_compatibility_package_in_the_image(tree: Tree) -> None:
    tree.nvidia("470.57.02", gpus=2).cuda_toolkit("12.8.1", compat="570.124.06")
    found = one(run(tree, Expect(gpus=2)), "cuda")
    assert found.status == OK
    assert "forward-compat driver 570.124.06" in found.found
    assert "data-center GPUs only" in found.message


def test_forward_compat_too_old_for_the_cuda_is_still_fatal(tree: Tree) -> None:
    tree.nvidia("470.57.02", gpus=2).cuda_toolkit("12.8.1", compat="560.35.03")
    found = one(run(tree, Expect(gpus=2)), "cuda")
    assert found.status == FAIL
    assert "forward-compat driver 560.35.03 does not cover it" in found.message


def test_driver_version_from_both_module_flavours(tree: Tree) -> None:
    for open_module in (True, False):
        tree.nvidia("550.54.15", gpus=1, open_module=open_module)
        text = (tree.root / "proc/driver/nvidia/version").read_text()
        assert gpu.driver_version(text) == "550.54.15"


def test_sys_module_version_when_proc_is_missing(tree: Tree) -> None:
    tree.nvidia("575.57.08", gpus=1)
    (tree.root / "proc/driver/nvidia/version").unlink()
    facts = gpu.facts(Host(tree.root, env={}))
    assert (facts.driver, facts.driver_source) == ("575.57.08", gpu.SYS_VERSION)


# -- GPU devices against the request -------------------------------------------------------------


def test_no_gpu_and_none_asked_for_is_absent_not_fatal(tree: Tree) -> None:
    tree.versions(CUDA_BASE)
    report = run(tree, Expect(gpus=0, gpu_source="nvidia.com/gpu limit"))
    assert one(report, "gpu").status == ABSENT
    assert one(report, "cuda").status == ABSENT  # CUDA in the image, no driver, none needed
    assert "570.26" in one(report, "cuda").expected
    assert one(report, "cuinit").status == ABSENT
    assert not report.fatal()


def test_gpus_asked_for_but_none_visible_is_fatal(tree: Tree) -> None:
    tree.versions(CUDA_BASE)
    report = run(tree, Expect(gpus=4, gpu_source="nvidia.com/gpu limit"))
    assert one(report, "gpu").status == FAIL
    assert one(report, "gpu").found == "0 GPUs"
    assert one(report, "gpu").expected == "4 (nvidia.com/gpu limit)"
    assert one(report, "cuda").status == FAIL
    assert "no NVIDIA driver" in one(report, "cuda").found


def test_fewer_gpus_than_requested(tree: Tree) -> None:
    tree.nvidia(gpus=2).cuda_toolkit()
    found = one(run(tree, Expect(gpus=4, gpu_source="nvidia.com/gpu limit")), "gpu")
    assert found.status == FAIL
    assert found.found.startswith("2 GPUs (/dev/nvidia0, /dev/nvidia1)")
    assert found.expected == "4 (nvidia.com/gpu limit)"
    assert "fewer GPU devices" in found.message


def test_a_launcher_that_asked_for_none_must_see_none(tree: Tree) -> None:
    tree.nvidia(gpus=8).cuda_toolkit()
    found = one(run(tree, Expect(gpus=0)), "gpu")
    assert found.status == FAIL
    assert "NVIDIA_VISIBLE_DEVICES" in found.message


def test_cuinit_agrees_with_the_device_nodes(tree: Tree) -> None:
    tree.nvidia(gpus=4).cuda_toolkit()
    good = Live(cuda=lambda: CudaProbe(True, 0, 4, 12080), verbs=None, ucx_info=None)
    found = one(run(tree, Expect(gpus=4), good), "cuinit")
    assert found.status == OK
    assert "driver supports CUDA 12.8" in found.found
    fewer = Live(cuda=lambda: CudaProbe(True, 0, 3, 12080), verbs=None, ucx_info=None)
    assert one(run(tree, Expect(gpus=4), fewer), "cuinit").status == FAIL
    compat = Live(cuda=lambda: CudaProbe(True, 804), verbs=None, ucx_info=None)
    found = one(run(tree, Expect(gpus=4), compat), "cuinit")
    assert found.status == FAIL
    assert "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE (804)" in found.found
    missing = Live(cuda=lambda: CudaProbe(False, error="not found"), verbs=None, ucx_info=None)
    assert "NVIDIA_DRIVER_CAPABILITIES" in one(run(tree, Expect(gpus=4), missing), "cuinit").message


def test_compat_rule_table() -> None:
    assert cuda.minimum_for("12.8.1") == "570.26"
    assert cuda.minimum_for("11.4.3") == "470.42.01"
    assert cuda.version_key("570.124.06") > cuda.version_key("570.26")
    newer = cuda.judge("13.5.0", "590.44.01", wanted=True)  # not in the table: the family rule
    assert newer.status == OK


# -- InfiniBand / RDMA ---------------------------------------------------------------------------


def test_hca_port_down(tree: Tree) -> None:
    tree.hca("mlx5_0", state="1: DOWN", phys_state="3: Disabled", rate="10 Gb/sec (4X SDR)")
    found = one(run(tree), "rdma")
    assert found.status == FAIL
    assert found.found == "mlx5_0 port 1: DOWN, InfiniBand, 10 Gb/sec (4X SDR)"
    assert found.expected == "a port in state ACTIVE"


def test_roce(tree: Tree) -> None:
    tree.hca("mlx5_1", link_layer="Ethernet", rate="100 Gb/sec (4X EDR)")
    found = one(run(tree), "rdma")
    assert found.status == OK
    assert found.found == "mlx5_1 port 1: ACTIVE, Ethernet (RoCE), 100 Gb/sec (4X EDR)"
    assert "GID" in found.message


def test_hca_on_the_node_but_not_given_to_the_pod(tree: Tree) -> None:
    tree.hca("mlx5_0", given=False)
    assert one(run(tree), "rdma").status == ABSENT
    found = one(run(tree, Expect(hcas=1)), "rdma")
    assert found.status == FAIL
    assert "the node has mlx5_0" in found.found


def test_rdma_core_too_new_for_the_kernel_abi(tree: Tree) -> None:
    tree.hca(kernel_abi=2).versions({"rdma-core.deb": "44.0-2"})
    report = run(tree)
    found = [f for f in report.findings if f.check == "rdma-stack" and f.status == FAIL]
    assert len(found) == 1
    assert found[0].found == "kernel uverbs ABI 2"
    assert found[0].expected == "3..6 (what rdma-core 44.0-2's libibverbs accepts)"
    assert "too new for this kernel" in found[0].message


def test_provider_driver_abi_mismatch(tree: Tree) -> None:
    tree.hca(driver_abi=2)
    found = [f for f in run(tree).findings if f.check == "rdma-stack" and f.status == FAIL]
    assert any("driver ABI 2" in f.found and f.expected.startswith("1..1") for f in found)


def test_mofed_4_kernel_with_mofed_5_user_space(tree: Tree) -> None:
    tree.hca().mofed("4.9-7.1.0").versions(
        {}, {"OFED_FLAVOR": "mlnx", "OFED_VERSION": "5.8-6.0.4.2"}
    )
    found = one(run(tree), "rdma-stack")
    assert found.status == FAIL
    assert "ucx#6906" in found.message


def test_libibverbs_live_count(tree: Tree) -> None:
    tree.hca()
    none = Live(
        cuda=None,
        verbs=lambda: VerbsProbe(True, 0, "ibv_get_device_list failed (errno 38)"),
        ucx_info=None,
    )
    found = [
        f for f in run(tree, live=none).findings if f.check == "rdma-stack" and f.status == FAIL
    ]
    assert found and "ibverbs-providers" in found[0].message


def test_gpudirect_wants_peermem_and_gdrdrv(tree: Tree) -> None:
    tree.nvidia(gpus=1).hca().versions(CUDA_BASE)
    report = run(tree, Expect(gpus=1))
    assert one(report, "gpudirect").status == WARN
    tree.peermem()
    assert one(run(tree, Expect(gpus=1)), "gpudirect").status == OK


UCX_INFO = """#
# Memory domain: posix
#     Component: posix
#      Transport: posix
#         Device: memory
#
# Memory domain: mlx5_0
#     Component: ib
#      Transport: rc_verbs
#         Device: mlx5_0:1
#      Transport: rc_mlx5
#         Device: mlx5_0:1
#      Transport: ud_mlx5
#         Device: mlx5_0:1
#      Transport: tcp
#         Device: eth0
"""


def test_ucx_transports_against_ucx_tls() -> None:
    assert ucx.transports(UCX_INFO) == {"posix", "rc_verbs", "rc_mlx5", "ud_mlx5", "tcp"}
    ok = ucx.check(lambda: UCX_INFO, tls="rc,sm,self", hcas=1, gpus=0)
    assert [f.status for f in ok] == [FAIL]  # self is not listed in this excerpt
    assert "self" in ok[0].expected
    assert ucx.check(lambda: UCX_INFO, tls="rc,sm", hcas=1, gpus=0)[0].status == OK
    dc = ucx.check(lambda: UCX_INFO, tls="dc,sm", hcas=1, gpus=0)
    assert dc[0].status == FAIL and dc[0].expected == "dc (UCX_TLS=dc,sm)"
    tcp_only = ucx.check(lambda: "#      Transport: tcp\n", tls=None, hcas=1, gpus=0)
    assert tcp_only[0].status == WARN and "falls back" in tcp_only[0].message
    assert ucx.check(lambda: None, tls=None, hcas=0, gpus=0)[0].status == ABSENT


# -- limits --------------------------------------------------------------------------------------


def test_memlock_64_kib_with_an_hca(tree: Tree) -> None:
    tree.hca().limits(memlock="65536")
    found = one(run(tree), "memlock")
    assert found.status == FAIL
    assert found.found == "64 KiB (soft), 64 KiB (hard)"
    assert found.expected == "unlimited (RDMA pins memory)"
    assert "LimitMEMLOCK=infinity" in found.message


def test_memlock_finite_but_large_with_an_hca_is_a_warning(tree: Tree) -> None:
    tree.hca().limits(memlock=str(8 << 20))
    assert one(run(tree), "memlock").status == FAIL  # containerd's 8 MiB
    tree.limits(memlock=str(16 << 30))
    assert one(run(tree), "memlock").status == WARN


def test_memlock_64_kib_without_rdma_or_with_ipc_lock(tree: Tree) -> None:
    tree.limits(memlock="65536")
    assert one(run(tree), "memlock").status == OK
    tree.hca().status(uid=0, cap_eff=1 << 14)
    found = one(run(tree), "memlock")
    assert found.status == OK and "CAP_IPC_LOCK" in found.found


def test_shm_64_mib_with_8_ranks(tree: Tree) -> None:
    tree.shm(64 << 20)
    found = one(run(tree, Expect(ranks=8)), "shm")
    assert found.status == FAIL
    assert found.found == "64 MiB (tmpfs size=65536k) for 8 ranks: 8 MiB each"
    assert found.expected == ">= 128 MiB (16 MiB per rank)"
    assert "emptyDir" in found.message
    assert one(run(tree, Expect(ranks=1)), "shm").status == WARN
    tree.shm(1 << 30)
    assert one(run(tree, Expect(ranks=8)), "shm").status == OK


def test_nofile_and_pids(tree: Tree) -> None:
    tree.limits(nofile="1024").pids("100")
    report = run(tree, Expect(ranks=4))
    assert one(report, "nofile").status == WARN
    assert one(report, "pids").status == WARN
    assert one(report, "pids").expected.startswith(">= 320")
    tree.limits(nofile="65536").pids("max")
    report = run(tree, Expect(ranks=4))
    assert (one(report, "nofile").status, one(report, "pids").status) == (OK, OK)


def test_limits_parser_reads_unlimited_and_numbers(tree: Tree) -> None:
    tree.limits(memlock="8388608")
    host = Host(tree.root, env={})
    assert host.limits()["Max locked memory"].soft == 8 << 20
    assert host.limits()["Max cpu time"].soft is None
    assert limits.shm_size(host)[0] == 64 << 20


def test_image_facts_fall_back_to_cuda_files(tree: Tree) -> None:
    tree.cuda_toolkit("12.6.3", compat="560.35.05")
    img = image.load(Host(tree.root, env={}))
    assert (img.cuda, img.cuda_source, img.compat) == (
        "12.6.3",
        image.CUDA_VERSION_FILE,
        "560.35.05",
    )
    assert image.load(Host(tree.root / "nothing", env={"CUDA_VERSION": "12.4.1"})).cuda == "12.4.1"


def test_rdma_facts_map_uverbs_to_hcas(tree: Tree) -> None:
    tree.hca("mlx5_0", uverbs=0).hca("mlx5_1", uverbs=1, link_layer="Ethernet")
    facts = rdma.facts(Host(tree.root, env={}))
    assert facts.given == {"uverbs0": "mlx5_0", "uverbs1": "mlx5_1"}
    assert [p.describe() for p in facts.ports][1].startswith(
        "mlx5_1 port 1: ACTIVE, Ethernet (RoCE)"
    )
