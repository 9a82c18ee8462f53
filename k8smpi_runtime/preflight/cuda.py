"""Whether a host's NVIDIA driver runs an image's CUDA: NVIDIA's rules, as data.

Three ways a driver runs a CUDA release (NVIDIA, "CUDA Compatibility" and the CUDA Toolkit
release notes' table "CUDA Toolkit and Corresponding Driver Versions", Linux x86_64):

1. the driver is at least the release's own minimum (:data:`MIN_DRIVER`, per major.minor: the
   GA release's; an update release may want a later one of the same branch, which minor-version
   compatibility below covers);
2. **minor-version compatibility** (CUDA 11 and later): any driver of at least the family's
   minimum (:data:`FAMILY_MIN`: 11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580) runs the
   family's applications, except PTX JIT of code newer than the driver and features that need
   the newer driver;
3. **forward compatibility**: the image carries ``cuda-compat-<major>-<minor>`` (a newer
   user-space driver in /usr/local/cuda/compat, used when the host driver's branch is older);
   supported on data-center GPUs only (elsewhere cuInit fails with 804).
"""

from __future__ import annotations

import re

from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, WARN, Finding

#: The minimum Linux x86_64 driver of each CUDA release (major, minor): its GA release's.
MIN_DRIVER: dict[tuple[int, int], str] = {
    (11, 0): "450.36.06",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
#: Minor-version compatibility: the oldest driver that runs a whole CUDA major family.
FAMILY_MIN: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580"}
SOURCE = "NVIDIA CUDA Toolkit release notes, driver table"


def version_key(text: str) -> tuple[int, ...]:
    """``570.124.06`` -> (570, 124, 6); non-numeric parts end the key."""
    parts: list[int] = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def major_minor(cuda: str) -> tuple[int, int] | None:
    key = version_key(cuda)
    return (key[0], key[1]) if len(key) >= 2 else None


def minimum_for(cuda: str) -> str | None:
    """The release's own minimum driver; for a release newer than the table, None."""
    mm = major_minor(cuda)
    return MIN_DRIVER.get(mm) if mm else None


def judge(  # noqa: PLR0911 - one return per rule
    cuda: str | None,
    driver: str | None,
    *,
    compat: str | None = None,
    wanted: bool,
    cuda_source: str = "the image",
    driver_source: str = "/proc/driver/nvidia/version",
) -> Finding:
    """The ``cuda`` finding: does ``driver`` run ``cuda`` (see the module docstring)?

    ``wanted``: the pod asked for GPUs (no driver is then fatal, not merely absent).
    """
    if cuda is None:
        if driver is None:
            return Finding("cuda", ABSENT, "no CUDA in the image, no NVIDIA driver")
        return Finding("cuda", OK, f"driver {driver}", message="the image records no CUDA")
    mm = major_minor(cuda)
    if mm is None:
        return Finding("cuda", WARN, f"CUDA {cuda!r} ({cuda_source})", message="not a version")
    release_min = MIN_DRIVER.get(mm)
    family_min = FAMILY_MIN.get(mm[0])
    need = release_min or family_min or "?"
    label = f"CUDA {mm[0]}.{mm[1]} ({cuda} from {cuda_source})"
    if driver is None:
        status = FAIL if wanted else ABSENT
        return Finding(
            "cuda",
            status,
            f"no NVIDIA driver ({driver_source} absent); image {label}",
            f"driver >= {need}",
            "the pod asked for GPUs but the node has no NVIDIA driver visible in it"
            if wanted
            else "no GPU here and none asked for; a GPU node needs that driver",
        )
    have = version_key(driver)
    found = f"driver {driver}, image {label}"
    if release_min and have >= version_key(release_min):
        return Finding(
            "cuda",
            OK,
            found,
            f">= {release_min}",
            f"{release_min} is CUDA {mm[0]}.{mm[1]}'s minimum ({SOURCE})",
        )
    if family_min and have >= version_key(family_min):
        return Finding(
            "cuda",
            WARN if release_min else OK,
            found,
            f">= {release_min or family_min}",
            f"minor-version compatibility: CUDA {mm[0]}.x runs on drivers >= {family_min}, "
            f"but without PTX JIT of newer code and features that need "
            f"{release_min or 'the release driver'} ({SOURCE}; CUDA Compatibility)",
        )
    if compat and version_key(compat) >= version_key(need) and version_key(compat)[:1] > have[:1]:
        return Finding(
            "cuda",
            OK,
            found + f", forward-compat driver {compat} in the image",
            f">= {need} (or forward compatibility)",
            f"forward compatibility: the image's cuda-compat {compat} runs CUDA {mm[0]}.{mm[1]} "
            f"on driver branch {have[0]}; data-center GPUs only (elsewhere cuInit fails "
            "with 804, see the cuinit check)",
        )
    compat_text = (
        f"its forward-compat driver {compat} does not cover it"
        if compat
        else (f"no forward-compat package (cuda-compat-{mm[0]}-{mm[1]}) in the image")
    )
    family = f" or >= {family_min} through minor-version compatibility" if family_min else ""
    return Finding(
        "cuda",
        FAIL,
        found,
        f">= {need}",
        f"the driver is too old for CUDA {mm[0]}.{mm[1]}: it needs >= {need}{family} "
        f"({SOURCE}); {compat_text}. Upgrade the node's driver or build the image with an older "
        "CUDA_VERSION",
    )
