"""The real node's images: the pause image built here, and ``make images``' images put into
containerd.

No registry is reachable, so containerd gets every image from podman's store (the image
tool's private storage, ``images/build.py``): ``podman save --format oci-archive`` piped into
``ctr images import``; pods use them with ``imagePullPolicy: Never``. The pause image (the
pod sandbox) is ``pause/pause.c`` compiled static, in an image ``FROM scratch``
(``pause/Containerfile``), tagged by a hash of those two files.

Each imported image carries podman's image ID as a label, so ``up`` imports again only what
``make images`` rebuilt, and is pinned (``io.cri-containerd.pinned``) so the kubelet's image
garbage collector never removes an image that nothing could pull back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devcluster.layout import HERE, DevclusterError, log
from images import build

PAUSE_SOURCES = (HERE / "pause" / "pause.c", HERE / "pause" / "Containerfile")
# What `make images` builds (images/build.py's plan); the example image is FROM the CPU one,
# once per MPI of the CPU image (build.MPIS). Imported: cpu and example with the default MPI,
# the waiter, and the example with each other MPI (``example-<mpi>``: it holds the whole CPU
# image, and deploy/'s workers and launcher run it).
WORKLOADS = ("cpu", "waiter", "example")
SOURCE_LABEL = "k8smpi.dev/podman-image-id"
PINNED_LABEL = "io.cri-containerd.pinned=pinned"


def pause_tag() -> str:
    """``localhost/k8smpi/pause:<hash of pause.c and the Containerfile>``."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in PAUSE_SOURCES)).hexdigest()[:12]
    return f"{build.DEFAULT_REPOSITORY}/pause:{digest}"


def workload_tags() -> dict[str, str]:
    """Name -> the tag ``make images`` gives it (predictable from the Dockerfiles' ARGs):
    ``cpu``, ``waiter``, ``example`` (the default MPI) and ``example-<mpi>`` for the others."""
    plan = build.plan(
        list(WORKLOADS),
        {"MPI": list(build.MPIS)},
        version=build.project_version(),
        vcs_ref="",
        example_from="cpu",
        devel=False,
    )
    mpi_of = {b.tag: b.buildargs["MPI"] for b in plan if b.variant == "cpu"}
    tags = {}
    for b in plan:
        mpi = mpi_of.get(b.buildargs.get("BASE_IMAGE", b.tag), build.MPIS[0])
        if mpi == build.MPIS[0]:
            tags[b.variant] = b.tag
        elif b.variant == "example":
            tags[f"example-{mpi}"] = b.tag
    return tags


class Podman:
    """The podman CLI on the image tool's private storage (no service needed)."""

    def __init__(self) -> None:
        self.service = build.PodmanService()

    def argv(self, *args: str) -> list[str]:
        if shutil.which("podman") is None:
            raise DevclusterError("podman is not installed: run `make apt`")
        self.service.root.mkdir(parents=True, exist_ok=True)
        self.service.write_conf()
        return [*self.service.argv(), *args]

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            self.argv(*args),
            env=self.service.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if proc.returncode != 0:
            raise DevclusterError(f"podman {args[0]} failed: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def image_ids(self) -> dict[str, str]:
        """Every tagged image in the store: ``repository:tag`` -> image ID."""
        out = self.run("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
        ids = {}
        for line in out.splitlines():
            name, _, image_id = line.partition(" ")
            if not name.endswith(":<none>"):
                ids[name] = image_id.removeprefix("sha256:")
        return ids

    def build_pause(self, tag: str) -> None:
        """Compile pause.c static and build the image FROM scratch around it."""
        if shutil.which("gcc") is None:
            raise DevclusterError("gcc is not installed: run `make apt`")
        log(f"real node: building the pause image {tag}")
        with tempfile.TemporaryDirectory(prefix="k8smpi-pause-") as tmp:
            context = Path(tmp)
            cc = subprocess.run(
                [
                    "gcc",
                    "-Os",
                    "-static",
                    "-s",
                    "-o",
                    str(context / "pause"),
                    str(PAUSE_SOURCES[0]),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if cc.returncode != 0:
                raise DevclusterError(f"compiling pause.c failed: {cc.stderr.strip()[-400:]}")
            shutil.copy(PAUSE_SOURCES[1], context / "Containerfile")
            self.run(
                "build", "--quiet", "--tag", tag, "--file", str(context / "Containerfile"), tmp
            )


def containerd_images(ctr: list[str]) -> dict[str, dict[str, str]]:
    """Images in containerd's ``k8s.io`` namespace: name -> labels."""
    proc = subprocess.run(
        [*ctr, "images", "ls"], capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise DevclusterError(f"ctr images ls failed: {proc.stderr.strip()[-300:]}")
    images = {}
    # Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE holds a space ("1.2 MiB").
    for line in proc.stdout.splitlines()[1:]:
        words = line.split()
        if not words:
            continue
        labels = {} if words[-1] == "-" else dict(kv.split("=", 1) for kv in words[-1].split(","))
        images[words[0]] = labels
    return images


def import_image(podman: Podman, ctr: list[str], tag: str, image_id: str) -> None:
    """Stream one image from podman into containerd, labelled with its podman ID and pinned.

    Through a FIFO: podman cannot save to a pipe (it resolves /dev/stdout to a path), and a
    file would cost a copy of every layer on disk.
    """
    with tempfile.TemporaryDirectory(prefix="k8smpi-import-") as tmp:
        fifo = Path(tmp) / "image.tar"
        os.mkfifo(fifo)
        save = subprocess.Popen(
            podman.argv("save", "--quiet", "--format", "oci-archive", "--output", str(fifo), tag),
            env=podman.service.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        labels = ["--label", f"{SOURCE_LABEL}={image_id}", "--label", PINNED_LABEL]
        load = subprocess.Popen(
            [*ctr, "images", "import", *labels, str(fifo)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 1200
        while load.poll() is None:
            # A podman that failed before opening the FIFO would leave ctr waiting forever.
            if (save.poll() not in (None, 0)) or time.monotonic() > deadline:
                load.kill()
            time.sleep(0.1)
        _, save_err = save.communicate(timeout=60)
        _, load_err = load.communicate()
    if save.returncode != 0:
        raise DevclusterError(f"podman save {tag} failed: {save_err.strip()[-400:]}")
    if load.returncode != 0:
        raise DevclusterError(f"ctr images import {tag} failed: {load_err.strip()[-400:]}")


def variant_tag(variant: str) -> str:
    """The tag ``python -m images.build VARIANT`` gives with its default ARGs (e.g.
    ``base-pypi``, built by ``make images-cuda``)."""
    plan = build.plan([variant], {}, version=build.project_version(), vcs_ref="", devel=False)
    (built,) = [b for b in plan if b.variant == variant]
    return built.tag


def import_variant(ctrs: list[list[str]], variant: str) -> str:
    """One more image of podman's store into every containerd of ``ctrs`` (when it is not
    there in its current build); its tag. For images ``up`` leaves out (the GPU base: a few
    GB, wanted by one test). DevclusterError when podman does not have it."""
    podman = Podman()
    tag = variant_tag(variant)
    image_id = podman.image_ids().get(tag)
    if image_id is None:
        target = "make images-cuda" if variant.startswith("base") else "make images"
        raise DevclusterError(f"{tag} is not built: run `{target}`")
    for ctr in ctrs:
        if containerd_images(ctr).get(tag, {}).get(SOURCE_LABEL) != image_id:
            log(f"real node: importing {tag} into containerd")
            import_image(podman, ctr, tag, image_id)
    return tag


def ensure_images(ctrs: list[list[str]]) -> dict[str, str]:
    """The pause image and the workload images in every containerd of ``ctrs``.

    Builds the pause image when podman lacks it; imports what containerd lacks or holds in an
    older build. Returns what is available, ``name -> tag`` (``pause`` and each workload that
    ``make images`` has built); a workload not built yet is named in a log line, not an error.
    """
    podman = Podman()
    have = podman.image_ids()
    wanted = {"pause": pause_tag(), **workload_tags()}
    if wanted["pause"] not in have:
        podman.build_pause(wanted["pause"])
        have = podman.image_ids()
    missing = [name for name, tag in wanted.items() if tag not in have]
    if missing:
        log(
            f"real node: {', '.join(missing)} not built yet (`make images`); pods using"
            " them would fail with ErrImageNeverPull"
        )
    available = {name: tag for name, tag in wanted.items() if tag in have}
    for ctr in ctrs:
        present = containerd_images(ctr)
        for tag in available.values():
            if present.get(tag, {}).get(SOURCE_LABEL) != have[tag]:
                log(f"real node: importing {tag} into containerd")
                import_image(podman, ctr, tag, have[tag])
    return available
