"""The image tool (images/build.py) without an engine: plans, tags, build context, settings."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from images import build

REPO = Path(__file__).resolve().parents[2]
VERSION = build.project_version()
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def plan(*names: str, **kwargs: object) -> list[build.Build]:
    matrix = kwargs.pop("matrix", {})
    assert isinstance(matrix, dict)
    return build.plan(list(names), matrix, version=VERSION, vcs_ref="abc123", **kwargs)  # type: ignore[arg-type]


def tag_of(ref: str) -> str:
    return ref.rsplit(":", 1)[1]


def test_default_cpu_tag_names_the_versions() -> None:
    (cpu,) = plan("cpu")
    assert cpu.tag == f"localhost/k8smpi/cpu:{VERSION}-bookworm-ompi4.1.4-ucx1.13.1"
    assert cpu.devel_tag == cpu.tag + "-devel"
    assert cpu.cache_tags == (cpu.tag + "-tools", cpu.tag + "-wheels")
    (waiter,) = plan("waiter")
    assert waiter.cache_tags == tuple(f"{waiter.tag}-{s}" for s in ("tools", "slim", "os"))
    assert cpu.buildargs == {"K8SMPI_VERSION": VERSION, "VCS_REF": "abc123"}
    assert cpu.dockerfile == "images/cpu/Dockerfile"


def test_each_mpi_of_the_cpu_image_names_its_own_version_in_the_tag() -> None:
    """MPI=<value>: only the chosen MPI's version shows (the default's tag is unchanged)."""
    builds = plan("cpu", "example", matrix={"MPI": list(build.MPIS)}, example_from="cpu")
    cpu = [tag_of(b.tag) for b in builds if b.variant == "cpu"]
    assert cpu == [
        f"{VERSION}-bookworm-ompi4.1.4-ucx1.13.1",
        f"{VERSION}-bookworm-ompi5.0.11-ucx1.13.1",
        f"{VERSION}-bookworm-mpich4.3.2-ucx1.13.1",
        f"{VERSION}-bookworm-impi2021.19.0-ucx1.13.1",
    ]
    examples = [tag_of(b.tag) for b in builds if b.variant == "example"]
    assert examples == [f"cpu-{t}" for t in cpu]


def test_the_mpis_are_defined_once() -> None:
    """build.MPIS = what the Makefile builds = what the Dockerfile's case knows; the PyPI
    versions in the Dockerfile are devcluster/versions.env's (the e2e tier's launchers)."""
    makefile = (REPO / "Makefile").read_text()
    (listed,) = re.findall(r"^MPIS := (\S+)$", makefile, re.M)
    assert tuple(listed.split(",")) == build.MPIS
    dockerfile = (REPO / "images" / "cpu" / "Dockerfile").read_text()
    assert build.dockerfile_args(REPO / "images" / "cpu" / "Dockerfile")["MPI"] == build.MPIS[0]
    for mpi in build.MPIS:
        assert f"FROM os AS mpi-{mpi}" in dockerfile
        assert f"FROM compilers AS devel-{mpi}" in dockerfile
        assert f"      {mpi}) " in dockerfile
    env = dict(
        line.split("=", 1)
        for line in (REPO / "devcluster" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    args = build.dockerfile_args(REPO / "images" / "cpu" / "Dockerfile")
    assert args["OPENMPI5_VERSION"] == env["OPENMPI5_PYPI_VERSION"]
    assert args["MPICH_VERSION"] == env["MPICH_PYPI_VERSION"]
    assert args["IMPI_VERSION"] == env["IMPI_PYPI_VERSION"]


def test_default_base_tag() -> None:
    (base,) = plan("base")
    assert tag_of(base.tag) == (
        f"{VERSION}-cuda12.8.1-ubuntu24.04-rdma-core-ucx1.18.1-gdrcopy2.5.1-ompi5.0.8"
    )


def test_matrix_is_the_cross_product_with_distinct_predictable_tags() -> None:
    builds = plan(
        "base", matrix={"OMPI_VERSION": ["4.1.8", "5.0.8"], "CUDA_VERSION": ["12.6.3", "12.8.1"]}
    )
    assert len(builds) == 4
    tags = [b.tag for b in builds]
    assert len(set(tags)) == 4
    assert any("cuda12.6.3" in t and "ompi4.1.8" in t for t in tags)
    assert all(TAG.match(tag_of(t)) for t in tags)
    again = plan(
        "base", matrix={"OMPI_VERSION": ["4.1.8", "5.0.8"], "CUDA_VERSION": ["12.6.3", "12.8.1"]}
    )
    assert [b.tag for b in again] == tags
    one = next(b for b in builds if "ompi4.1.8" in b.tag and "cuda12.6.3" in b.tag)
    assert one.buildargs["OMPI_VERSION"] == "4.1.8"
    assert one.buildargs["CUDA_VERSION"] == "12.6.3"


def test_ofed_flavour_and_version_show_in_the_tag() -> None:
    (doca,) = plan("base", matrix={"OFED_FLAVOR": ["doca"], "OFED_VERSION": ["3.3.0"]})
    assert "-ubuntu24.04-doca-3.3.0-ucx" in doca.tag


def test_args_outside_the_tag_add_a_stable_hash() -> None:
    (plain,) = plan("base")
    (a,) = plan("base", matrix={"UCX_SHA256": ["aa"]})
    (b,) = plan("base", matrix={"UCX_SHA256": ["bb"]})
    (a2,) = plan("base", matrix={"UCX_SHA256": ["aa"]})
    assert len({plain.tag, a.tag, b.tag}) == 3
    assert a.tag == a2.tag
    assert re.search(r"-x[0-9a-f]{8}$", a.tag)


def test_matrix_key_applies_to_the_variants_that_declare_it() -> None:
    builds = plan("cpu", "base", matrix={"OMPI_VERSION": ["4.1.8"]})
    cpu = next(b for b in builds if b.variant == "cpu")
    base = next(b for b in builds if b.variant == "base")
    assert "OMPI_VERSION" not in cpu.buildargs
    assert base.buildargs["OMPI_VERSION"] == "4.1.8"


@pytest.mark.parametrize(
    ("names", "matrix", "message"),
    [
        (["gpu"], {}, "unknown variant"),
        (["cpu"], {"NOT_AN_ARG": ["1"]}, "no selected variant has"),
    ],
)
def test_plan_errors(names: list[str], matrix: dict[str, list[str]], message: str) -> None:
    with pytest.raises(build.ToolError, match=message):
        build.plan(names, matrix, version=VERSION, vcs_ref="x")


def test_parse_matrix() -> None:
    assert build.parse_matrix(["A=1,2", "B=x", "A=3"]) == {"A": ["1", "2", "3"], "B": ["x"]}
    assert build.parse_matrix(["OFED_VERSION="]) == {"OFED_VERSION": [""]}
    for bad in ("A", "=1", "K8SMPI_VERSION=9", "VCS_REF=x"):
        with pytest.raises(build.ToolError):
            build.parse_matrix([bad])


def test_example_is_built_from_the_chosen_variant_after_it() -> None:
    builds = plan("example", example_from="cpu")
    assert [b.variant for b in builds] == ["cpu", "example"]
    cpu, example = builds
    assert example.buildargs["BASE_IMAGE"] == cpu.tag
    assert example.buildargs["DEVEL_IMAGE"] == cpu.devel_tag
    assert example.tag == f"localhost/k8smpi/example:cpu-{tag_of(cpu.tag)}"
    with pytest.raises(build.ToolError):
        plan("example", example_from="waiter")  # no devel stage to build in


def test_repository_prefix_and_no_devel() -> None:
    (cpu,) = plan("cpu", repository="registry.example/hpc/k8smpi", devel=False)
    assert cpu.tag.startswith("registry.example/hpc/k8smpi/cpu:")
    assert cpu.devel_tag is None
    assert cpu.cache_tags  # the cache anchor is not optional
    # ... except where the example needs its parent's devel image to compile in.
    cpu, example = plan("example", example_from="cpu", devel=False)
    assert example.buildargs["DEVEL_IMAGE"] == cpu.devel_tag == cpu.tag + "-devel"


def test_no_tag_is_ever_latest() -> None:
    builds = plan("cpu", "waiter", "base", "example")
    assert all("latest" not in b.tag for b in builds)
    assert all(TAG.match(tag_of(b.tag)) for b in builds)


def test_sanitize_tag() -> None:
    assert build.sanitize_tag("1.0-4.1.4-3+b1") == "1.0-4.1.4-3_b1"
    assert build.sanitize_tag("-.x") == "x"
    long = build.sanitize_tag("a" * 300)
    assert len(long) == 128
    assert long != build.sanitize_tag("a" * 299)


def test_dockerfile_args_and_from_images() -> None:
    cpu = REPO / "images/cpu/Dockerfile"
    args = build.dockerfile_args(cpu)
    assert args["DEBIAN_SUITE"] == "bookworm"
    assert args["OPENMPI_VERSION"] == "4.1.4-3+b1"
    assert build.from_images(cpu, {}) == ["debian:bookworm"]
    assert build.from_images(cpu, {"DEBIAN_SUITE": "trixie"}) == ["debian:trixie"]
    base = REPO / "images/base/Dockerfile"
    assert build.from_images(base, {"CUDA_VERSION": "12.6.3", "OS": "ubuntu22.04"}) == [
        "nvidia/cuda:12.6.3-devel-ubuntu22.04",
        "nvidia/cuda:12.6.3-runtime-ubuntu22.04",
    ]
    example = REPO / "images/example/Dockerfile"
    assert build.from_images(example, {"BASE_IMAGE": "b:1", "DEVEL_IMAGE": "d:1"}) == [
        "d:1",
        "b:1",
    ]


def test_debian_ref_recognises_the_upstream_names() -> None:
    for ref in ("debian:bookworm", "docker.io/library/debian:bookworm", "library/debian:trixie"):
        assert build.DEBIAN_REF.match(ref)
    for ref in ("debian", "debian:12", "nvidia/cuda:12.8.1-devel-ubuntu24.04", "x/debian:bookworm"):
        assert not build.DEBIAN_REF.match(ref)


def test_project_scripts_read_pyproject() -> None:
    text = """
[project]
name = "x"
version = "1.2.3"

[project.scripts]
# a comment = not a script
kubexec = "a.b:main"
"hostfile-gen" = "a.c:main"

[project.urls]
Source = "x"
"""
    assert build.project_scripts(text) == ["hostfile-gen", "kubexec"]
    assert build.project_version(text) == "1.2.3"
    assert build.project_scripts("[project]\nversion = '1'\n") == []


def test_project_scripts_match_the_installed_entry_points() -> None:
    """The e2e tests derive their list from pyproject.toml; the editable install agrees."""
    from importlib.metadata import distribution  # noqa: PLC0415

    installed = sorted(
        ep.name
        for ep in distribution("k8smpi-runtime").entry_points
        if ep.group == "console_scripts"
    )
    assert build.project_scripts() == installed


def test_build_context_is_small_deterministic_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8SMPI_BUILD_CA", "")
    first = build.build_context()
    assert first == build.build_context()
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    for needed in (
        "pyproject.toml",
        "README.md",
        "k8smpi_runtime/__init__.py",
        "images/cpu/Dockerfile",
        "images/common/install-tools.sh",
        "devcluster/mpi/allreduce.c",
    ):
        assert needed in names
    assert not any(n.startswith((".venv", ".git", ".devcluster", "tests/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert len(first) < 5_000_000


def test_build_context_carries_extra_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "a.crt").write_text(pem)
    monkeypatch.setenv("K8SMPI_BUILD_CA", str(tmp_path / "a.crt"))
    with tarfile.open(fileobj=io.BytesIO(build.build_context())) as tar:
        member = tar.extractfile(build.BUILD_CA)
        assert member is not None
        assert member.read().decode() == pem
    monkeypatch.setenv("K8SMPI_BUILD_CA", "")
    with tarfile.open(fileobj=io.BytesIO(build.build_context())) as tar:
        member = tar.extractfile(build.BUILD_CA)
        assert member is not None
        assert b"BEGIN CERTIFICATE" not in member.read()


def test_podman_service_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("K8SMPI_PODMAN_ULIMITS", raising=False)
    service = build.PodmanService(tmp_path)
    argv = service.argv()
    assert argv[argv.index("--storage-driver") + 1] == "overlay"  # never vfs
    assert argv[argv.index("--root") + 1] == str(tmp_path / "storage")
    assert service.runroot.name.endswith(build._boot_id())  # keyed by boot
    assert len(str(service.runroot)) <= build.RUNROOT_MAX  # podman's limit
    tmp_path.mkdir(exist_ok=True)
    service.write_conf()
    conf = service.conf.read_text()
    assert 'cgroup_manager = "cgroupfs"' in conf
    assert re.search(r'default_ulimits = \["nofile=\d+:\d+", "nproc=4096:4096"\]', conf)
    assert service.env()["CONTAINERS_CONF"] == str(service.conf)
    long_root = tmp_path / ("x" * 120)
    assert len(str(build.PodmanService(long_root).sock)) < 108
    # A home folder longer than /root: the cache's own runroot would be too long for podman.
    home = build.PodmanService(Path("/home/a-user/.cache/k8smpi/images/podman"))
    assert len(str(home.runroot)) <= build.RUNROOT_MAX
    assert home.runroot != build.PodmanService(long_root).runroot  # one per cache
    short = build.PodmanService(Path("/root/.cache/k8smpi/images/podman"))
    assert short.runroot.parent == short.root  # short enough: in the cache, as before


def test_cache_dir_follows_k8smpi_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K8SMPI_CACHE", str(tmp_path))
    assert build.cache_dir() == tmp_path / "images"
    monkeypatch.delenv("K8SMPI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir() == tmp_path / "xdg" / "k8smpi" / "images"


def test_format_results() -> None:
    results = [
        build.Result(
            "cpu", "localhost/k8smpi/cpu:1", "sha256:" + "a" * 64, 519_000_000, 67.04, 24, 24
        ),
        build.Result("waiter", "localhost/k8smpi/waiter:1", "b" * 64, 426_000_000, 43.5, 21, 8),
    ]
    text = build.format_results(results)
    assert "aaaaaaaaaaaa  519 MB  67.0 s  all cached" in text
    assert "8/21 steps" in text


def test_dry_run_prints_the_plan_without_an_engine() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "images.build", "cpu", "waiter", "--dry-run",
         "--docker-host", "unix:///nonexistent.sock"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [b["variant"] for b in lines] == ["cpu", "waiter"]


def test_bad_arguments_exit_1_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "images.build", "cpu", "--set", "NOPE=1", "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no selected variant has the ARG(s) ['NOPE']" in done.stderr


def test_record_versions_writes_the_file_and_enforces_expectations(tmp_path: Path) -> None:
    script = REPO / "images/common/record-versions.py"
    out = tmp_path / "versions.json"
    ok = subprocess.run(
        [sys.executable, str(script), "--variant", "t", "--arg", "A=1", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    record = json.loads(out.read_text())
    assert record["schema"] == 1
    assert record["variant"] == "t"
    assert record["build_args"] == {"A": "1"}
    assert record["detected"]["python"] == sys.version.split()[0]
    bad = subprocess.run(
        [sys.executable, str(script), "--variant", "t", "--expect", "python=0.0",
         "--expect", "openmpi.cuda=true", "--out", str(tmp_path / "no.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "python: expected '0.0'" in bad.stderr
    assert "openmpi.cuda: expected 'true'" in bad.stderr
    assert not (tmp_path / "no.json").exists()
