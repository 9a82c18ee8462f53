"""The CPU and waiter images build on this machine, without a registry, and work (issue 7).

They are built the way ``make images`` builds them: the image tool (images/build.py) drives a
private podman service (overlay storage under ~/.cache/k8smpi/images/podman) through the docker
SDK, FROM a debian:bookworm made locally with debootstrap (rootfs cached by suite and date) and
tagged as the upstream name; no FROM image is ever pulled -- the CPU image once per MPI
(``build.MPIS``: Debian's Open MPI 4.1, and Open MPI 5, MPICH, Intel MPI from their PyPI wheels),
each with the example image FROM it. Then, inside the built images: every
console script that pyproject.toml declares answers ``--help``, kubexec is at its fixed path,
``mpirun -np 4`` of the MPI test program (the example user image, FROM the CPU image) runs
over UCX, also under an arbitrary uid that has no passwd entry, each MPI's example runs its
4 ranks and names its MPI in versions.json, the runtime images hold no compiler and no -dev
package, versions.json agrees with the labels, and k8smpi-preflight reads the container's own
limits. A second build of the
same sources must come entirely from the layer cache. Build times and sizes are printed at the
end of the run and kept in ~/.cache/k8smpi/images/e2e-build-times.json.

The GPU base (images/base) is not built here: its download hosts are unreachable. It is linted
and parsed by tests/unit/test_images_static.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from images import build
from k8smpi_runtime.preflight.model import size_text

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

REPO = Path(__file__).resolve().parents[2]
NP = 4
# Without IB devices UCX's PML only accepts the shared-memory/TCP transports when told to.
UCX = ["--mca", "pml", "ucx", "--mca", "pml_ucx_tls", "any", "--mca", "pml_ucx_devices", "any"]
RANK_LINE = re.compile(r"^rank=(\d+) size=(\d+) sum=(\d+) host=(\S+)$", re.M)
ANY_UID = "4242:0"  # no passwd entry, group 0: what an arbitrary runAsUser looks like

# A cold build takes several minutes on 2 cores; the first test waits for it.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3000)]


@dataclass
class Built:
    client: docker.DockerClient
    engine: str
    plan: list[build.Build]
    results: list[build.Result]
    seconds: float
    context: bytes  # the sources as they were built (colleagues may edit the tree meanwhile)

    def tag(self, variant: str, mpi: str = build.MPIS[0]) -> str:
        """The tag of ``variant`` (cpu, example: with the cpu image's MPI ``mpi``, or FROM the
        one other image of the plan, base-pypi for instance)."""
        if variant == "example":
            cpu = any(b.variant == "cpu" for b in self.plan)
            parent = self.tag("cpu", mpi) if cpu else self.tag(self._example_parent())
            return next(b.tag for b in self.plan if b.buildargs.get("BASE_IMAGE") == parent)
        return next(
            b.tag for b in self.plan if b.variant == variant and b.buildargs.get("MPI", mpi) == mpi
        )

    def _example_parent(self) -> str:
        (variant,) = {b.variant for b in self.plan if b.variant != "example"}
        return variant

    def devel_tag(self, variant: str) -> str:
        tag = next(b.devel_tag for b in self.plan if b.variant == variant)
        assert tag is not None
        return tag


def _summary(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print lines on the terminal now, through pytest's output capture."""
    plugins = request.config.pluginmanager
    reporter = plugins.getplugin("terminalreporter")
    capture = plugins.getplugin("capturemanager")
    if reporter is None:
        return
    uncaptured = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with uncaptured:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@contextlib.contextmanager
def building(
    request: pytest.FixtureRequest, variants: list[str], example_from: str = "cpu"
) -> Iterator[Built]:
    """Build ``variants`` as ``make images`` does; the build summary goes to the terminal."""
    if not os.environ.get("DOCKER_HOST"):
        missing = [t for t in ("podman", "debootstrap", "runc") if shutil.which(t) is None]
        if missing:
            pytest.fail(f"{missing} not installed: `make apt` (devcluster/apt.sh) installs them")
    plan = build.plan(
        variants,
        # The cpu image once per MPI, as `make images` builds it.
        {"MPI": list(build.MPIS)} if "cpu" in variants else {},
        version=build.project_version(),
        vcs_ref=build.vcs_ref(),
        example_from=example_from,
    )
    log: list[str] = []
    times_file = build.cache_dir() / "e2e-build-times.json"
    with build.engine() as (client, engine):
        context = build.build_context()
        started = time.monotonic()
        try:
            results = build.build_all(client, plan, log=log.append, context=context)
        except build.ToolError as err:
            pytest.fail(f"{err}\n--- build output (tail)\n" + "\n".join(log[-80:]))
        seconds = time.monotonic() - started
        build.prune_stale(client)  # as `make images` does: the storage does not grow forever
        lines = [
            f"images: built in {seconds:.1f} s with {engine}",
            *build.format_results(results).splitlines(),
        ]
        _summary(request, lines)
        times_file.parent.mkdir(parents=True, exist_ok=True)
        history = json.loads(times_file.read_text()) if times_file.exists() else []
        history.append(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(seconds, 1),
                "images": {r.tag: [round(r.seconds, 1), r.size_bytes] for r in results},
            }
        )
        times_file.write_text(json.dumps(history[-50:], indent=1) + "\n")
        yield Built(client, engine, plan, results, seconds, context)


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[Built]:
    with building(request, ["cpu", "waiter", "example"]) as done:
        yield done


def run(built: Built, image: str, argv: list[str], user: str | None = None) -> tuple[int, str]:
    """Run argv in a new container of image (no network: MPI here needs none); exit status
    and stdout+stderr."""
    container = built.client.containers.run(
        image, argv, user=user, detach=True, network_mode="none"
    )
    try:
        status = int(container.wait(timeout=300)["StatusCode"])
        return status, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def sh(built: Built, image: str, script: str, user: str | None = None) -> tuple[int, str]:
    return run(built, image, ["bash", "-c", script], user=user)


@pytest.mark.parametrize("variant", ["cpu", "waiter"])
def test_every_console_script_answers_help(built: Built, variant: str) -> None:
    """What pyproject.toml declares is what the image has, and each script runs (any uid)."""
    scripts = build.project_scripts()
    image = built.tag(variant)
    status, listed = sh(built, image, "cat /opt/k8smpi/console-scripts.txt")
    assert status == 0
    assert listed.split() == scripts
    checks = "; ".join(
        f'{s} --help >/tmp/out 2>&1 || {{ echo "FAILED {s}"; cat /tmp/out; }}' for s in scripts
    )
    status, out = sh(built, image, f"{checks}; true", user=ANY_UID)
    assert status == 0
    assert "FAILED" not in out, out


def test_kubexec_is_at_the_fixed_path_the_manifests_use(built: Built) -> None:
    image = built.tag("cpu")
    if "kubexec" not in build.project_scripts():
        status, _ = sh(built, image, "test ! -e /opt/mpi/bin/kubexec")
        assert status == 0
        return
    status, out = run(built, image, ["/opt/mpi/bin/kubexec", "--help"], user=ANY_UID)
    assert status == 0, out
    status, out = sh(built, image, 'command -v kubexec; echo "$OMPI_MCA_plm_rsh_agent"')
    assert out.split() == ["/opt/k8smpi/bin/kubexec", "/opt/mpi/bin/kubexec"]


def _ranks(out: str) -> list[tuple[int, int, int]]:
    return sorted((int(r), int(s), int(x)) for r, s, x, _ in RANK_LINE.findall(out))


@pytest.mark.parametrize("user", [None, ANY_UID], ids=["image-user", "arbitrary-uid"])
def test_mpirun_np4_over_ucx(built: Built, user: str | None) -> None:
    """The example user image (FROM the CPU image) runs 4 ranks through the UCX PML.

    The launcher environment is the image's (kubexec agent, the empty default hostfile);
    ``pml_base_verbose`` shows which PML each rank selected.
    """
    argv = ["mpirun", "--oversubscribe", "-np", str(NP), *UCX]
    argv += ["--mca", "pml_base_verbose", "10", "app"]
    status, out = run(built, built.tag("example"), argv, user=user)
    assert status == 0, out
    assert _ranks(out) == [(r, NP, NP * (NP + 1) // 2) for r in range(NP)], out
    assert out.count("select: component ucx selected") == NP, out


# Every MPI's mpirun, 4 ranks in one container (no network): its shared-memory path.
MPIRUN = {
    "openmpi4": ["mpirun", "--oversubscribe", "-np", str(NP), "app"],
    "openmpi5": ["mpirun", "--oversubscribe", "-np", str(NP), "app"],
    "mpich": ["mpirun", "-n", str(NP), "app"],
    "impi": ["mpirun", "-n", str(NP), "app"],
}


@pytest.mark.parametrize("mpi", build.MPIS)
def test_every_mpi_runs_the_example_program(built: Built, mpi: str) -> None:
    """The example image FROM the cpu image with each MPI: the program at /opt/app/bin/app
    (where deploy/'s batch script runs it) built against that MPI, run by its mpirun as an
    arbitrary uid; versions.json names the MPI and its version."""
    image = built.tag("example", mpi)
    status, out = run(built, image, MPIRUN[mpi], user=ANY_UID)
    assert status == 0, out
    assert _ranks(out) == [(r, NP, NP * (NP + 1) // 2) for r in range(NP)], out
    status, text = sh(built, image, "cat /etc/k8smpi/versions.json; command -v app")
    record = json.loads(text[: text.rindex("}") + 1])
    assert record["detected"]["mpi"] == mpi == record["build_args"]["MPI"]
    assert text.split()[-1] == "/opt/app/bin/app"
    labels = built.client.images.get(built.tag("cpu", mpi)).labels
    assert labels["dev.k8smpi.mpi"] == mpi


def test_runtime_images_hold_no_compiler_or_dev_package(built: Built) -> None:
    probe = (
        "for c in gcc cc c++ g++ gfortran clang nvcc; do command -v $c; done; "
        "dpkg-query -W -f='${Package}\\n' | grep -E -- '-dev$' || true"
    )
    images = [built.tag("waiter")] + [
        built.tag(variant, mpi) for variant in ("cpu", "example") for mpi in build.MPIS
    ]
    for image in images:
        status, out = sh(built, image, probe)
        assert status == 0
        assert out.strip() == "", f"{image}: {out}"
    # The probe finds them where they are: the devel image user programs are built in.
    status, out = sh(built, built.devel_tag("cpu"), probe)
    assert "/usr/bin/gcc" in out
    assert "libopenmpi-dev" in out


def test_waiter_has_python_and_the_package_only(built: Built) -> None:
    status, out = sh(
        built, built.tag("waiter"), "command -v mpirun ucx_info; python3 -c 'print(1)'"
    )
    assert status == 0
    assert out.split() == ["1"]


def test_versions_file_agrees_with_labels_and_software(built: Built) -> None:
    for variant in ("cpu", "waiter"):
        image = built.tag(variant)
        labels = built.client.images.get(image).labels
        status, text = sh(built, image, "cat /etc/k8smpi/versions.json")
        assert status == 0
        record = json.loads(text)
        assert record["variant"] == variant
        args = record["build_args"]
        raw = DockerfileParser(path=str(REPO / f"images/{variant}/Dockerfile"), env_replace=False)
        for label, value in raw.labels.items():
            ref = re.fullmatch(r"\$\{(\w+)\}", value)
            if ref:
                assert labels[label] == args[ref.group(1)], label
        version = build.project_version()
        assert labels["org.opencontainers.image.version"] == version
        assert record["detected"]["k8smpi-runtime"] == version
        assert record["console_scripts"] == build.project_scripts()
    cpu = json.loads(sh(built, built.tag("cpu"), "cat /etc/k8smpi/versions.json")[1])
    assert cpu["detected"]["openmpi.deb"] == cpu["build_args"]["OPENMPI_VERSION"]
    assert cpu["detected"]["openmpi.pml_ucx"] is True
    assert cpu["detected"]["openmpi.cuda"] is False


def test_preflight_in_a_real_container(built: Built) -> None:
    """k8smpi-preflight in the CPU image: the image's record, ucx_info, and the container's own
    memlock and /dev/shm (podman's 64 MiB: fatal for 8 ranks), as a pod on a CPU node sees them.
    """
    script = (
        "k8smpi-preflight --json --gpus 0 --ranks 8 >/tmp/report.json 2>/dev/null; echo $?; "
        "ulimit -l; df -k /dev/shm | tail -1; cat /tmp/report.json"
    )
    status, text = sh(built, built.tag("cpu"), script, user=ANY_UID)
    assert status == 0, text
    code, memlock, shm, *report = text.splitlines()
    (pod,) = json.loads("\n".join(report))["pods"]
    found = {f["check"]: f for f in pod["findings"]}
    assert code == "1"  # the /dev/shm finding below is fatal
    shm_kib = int(shm.split()[1])
    assert found["shm"]["status"] == "fail"
    assert f"size={shm_kib}k" in found["shm"]["found"] and "8 ranks" in found["shm"]["found"]
    soft = "unlimited" if memlock == "unlimited" else size_text(int(memlock) * 1024)
    assert found["memlock"]["found"].startswith(f"{soft} (soft)")
    assert found["memlock"]["status"] == "ok"  # no RDMA device: not needed
    assert found["mpi-env"] == {
        "check": "mpi-env",
        "status": "ok",
        "found": "Open MPI 4 4.1.4: OMPI_MCA_plm_rsh_agent=/opt/mpi/bin/kubexec",
        "expected": "",
        "message": "",
    }
    assert found["ucx"]["status"] == "ok" and "posix" in found["ucx"]["found"]
    assert [found[c]["status"] for c in ("gpu", "cuda", "cuinit", "rdma")] == ["absent"] * 4


def test_launcher_environment_and_any_uid(built: Built) -> None:
    script = (
        'echo "$OMPI_MCA_plm_rsh_agent $OMPI_MCA_orte_default_hostfile '
        '$PRTE_MCA_plm_ssh_agent $PRTE_MCA_prte_default_hostfile"; '
        'test -r /opt/mpi/etc/hostfile && touch "$HOME/probe" && id -u'
    )
    status, out = sh(built, built.tag("cpu"), script, user=ANY_UID)
    assert status == 0, out
    assert out.split() == [
        "/opt/mpi/bin/kubexec",
        "/opt/mpi/etc/hostfile",
        "/opt/mpi/bin/kubexec",
        "/opt/mpi/etc/hostfile",
        "4242",
    ]
    assert built.client.images.get(built.tag("cpu")).attrs["Config"]["User"] == "1000"


def test_rebuild_comes_from_the_cache(built: Built, request: pytest.FixtureRequest) -> None:
    """Same sources, same ARGs: every step is a cache hit and the image ids do not change."""
    again = [b for b in built.plan if b.variant in ("cpu", "waiter")]
    started = time.monotonic()
    results = build.build_all(built.client, again, log=lambda _line: None, context=built.context)
    seconds = time.monotonic() - started
    _summary(request, [f"images: warm rebuild of cpu + waiter in {seconds:.1f} s"])
    before = {r.tag: r.image_id for r in built.results}
    for result in results:
        assert result.fully_cached, f"{result.tag}: {result.cached_steps}/{result.steps} cached"
        assert result.image_id == before[result.tag]


def test_base_ofed_repo_script_runs(built: Built) -> None:
    """The one piece of the GPU recipe that runs here: images/base/ofed-repo.sh, as root in the
    Debian base (no network: the doca/mlnx downloads are not reached, their argument checks are).
    """
    script = (REPO / "images/base/ofed-repo.sh").read_text()
    files = (
        "/etc/apt/sources.list.d/k8smpi-ofed.list /etc/apt/preferences.d/k8smpi-ofed "
        "/usr/share/keyrings/k8smpi-ofed.gpg"
    )

    def ofed(*args: str) -> tuple[int, str]:
        run_it = f'printf "%s" "$0" >/tmp/ofed-repo.sh && bash /tmp/ofed-repo.sh "$@" && ls {files}'
        argv = ["bash", "-c", run_it, script, *args]
        return run(built, "docker.io/library/debian:bookworm", argv, user="0")

    status, out = ofed("rdma-core", "", "ubuntu24.04")
    assert status == 0, out
    assert sorted(out.split()) == sorted(files.split())
    status, out = ofed("doca", "", "ubuntu24.04")
    assert status == 1
    assert "needs OFED_VERSION" in out
    status, out = ofed("rdma-core", "44.0", "ubuntu24.04")
    assert status == 1
    assert "rdma-core is the OS's" in out
    status, out = ofed("mofed", "24.10", "ubuntu24.04")
    assert status == 1
    assert "must be rdma-core, doca or mlnx" in out
