"""Record what an image contains in /etc/k8smpi/versions.json; fail the build on a mismatch.

Runs at build time in the runtime stage of every image (``images/*/Dockerfile``), with the image's
own ``python3`` and the standard library only. It writes the build ARGs (the same values the OCI
labels carry) next to what the installed software reports about itself, so a check on a node can
compare the image with the host (CUDA driver, OFED) without starting MPI, and a test can compare
the labels with the truth. ``--expect KEY=VALUE`` makes the build fail when a detected value
differs (for instance when ``ompi_info`` does not report CUDA support).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VENV_PYTHON = "/opt/k8smpi/venv/bin/python"


def _run(*argv: str) -> str:
    """stdout of argv ("" when the program is missing). A non-zero exit status is ignored: at
    build time ompi_info may fail to open its CUDA component (no driver) yet print the rest."""
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return ""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return ""
    return done.stdout


def _deb_version(package: str) -> str:
    return _run("dpkg-query", "-W", "-f=${Version}", package).strip()


def _os_release() -> dict[str, str]:
    fields: dict[str, str] = {}
    path = Path("/etc/os-release")
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value.strip().strip('"')
    return fields


def _openmpi(found: dict[str, object]) -> None:
    version = re.search(r"Open MPI v(\S+)", _run("ompi_info", "--version"))
    if not version:
        return
    found["openmpi"] = version.group(1)
    parsable = _run("ompi_info", "--parsable", "--all")
    found["openmpi.cuda"] = "mpi_built_with_cuda_support:value:true" in parsable
    found["openmpi.pml_ucx"] = bool(re.search(r"^mca:pml:ucx:", parsable, re.MULTILINE))
    if deb := _deb_version("openmpi-bin"):
        found["openmpi.deb"] = deb


def _mpich(found: dict[str, object]) -> None:
    version = re.search(r"^MPICH Version:\s*(\S+)", _run("mpichversion"), re.MULTILINE)
    if version:
        found["mpich"] = version.group(1)


def _impi(found: dict[str, object]) -> None:
    # "Intel(R) MPI Library for Linux* OS, Version 2021.19.0 Build ..."
    version = re.search(r"Intel\(R\) MPI Library.*Version (\S+)", _run("mpiexec.hydra", "-V"))
    if version:
        found["impi"] = version.group(1)
    if deb := _deb_version("libfabric1"):
        found["libfabric.deb"] = deb


def _mpi_flavour(found: dict[str, object]) -> None:
    """Which MPI the image has, as the CPU image's MPI ARG names it."""
    if "impi" in found:
        found["mpi"] = "impi"
    elif "mpich" in found:
        found["mpi"] = "mpich"
    elif "openmpi.deb" in found:
        found["mpi"] = "openmpi4"
    elif str(found.get("openmpi", "")).startswith("5."):
        found["mpi"] = "openmpi5"


def _ucx(found: dict[str, object]) -> None:
    info = _run("ucx_info", "-v")
    # "# Version 1.13.1" (UCX 1.13) or "# Library version: 1.18.1" (newer).
    version = re.search(r"^#\s*(?:Library version:|Version)\s*(\d\S*)", info, re.MULTILINE)
    if not version:
        return
    found["ucx"] = version.group(1)
    configure = re.search(r"[Cc]onfigured with:(.*)", info)
    flags = configure.group(1).split() if configure else []
    found["ucx.cuda"] = any(f.startswith("--with-cuda") and f != "--with-cuda=no" for f in flags)
    found["ucx.gdrcopy"] = any(
        f.startswith("--with-gdrcopy") and f != "--with-gdrcopy=no" for f in flags
    )
    if deb := _deb_version("libucx0"):
        found["ucx.deb"] = deb


def _rdma(found: dict[str, object]) -> None:
    if ofed := _run("ofed_info", "-s").strip().rstrip(":"):
        found["ofed"] = ofed
    if deb := _deb_version("libibverbs1"):
        found["rdma-core.deb"] = deb


def _cuda(found: dict[str, object]) -> None:
    version_json = Path("/usr/local/cuda/version.json")
    if version_json.exists():
        found["cuda"] = json.loads(version_json.read_text()).get("cuda", {}).get("version", "")
    elif os.environ.get("CUDA_VERSION"):
        found["cuda"] = os.environ["CUDA_VERSION"]
    compat = sorted(str(p) for p in Path("/usr/local/cuda/compat").glob("libcuda.so.*.*"))
    if compat:
        found["cuda.compat"] = compat[-1].split("libcuda.so.", 1)[1]
    if os.environ.get("NVIDIA_REQUIRE_CUDA"):
        found["cuda.require"] = os.environ["NVIDIA_REQUIRE_CUDA"]
    # libgdrapi.so.<major>.<minor>: the library's version, not always the release's (2.5.1).
    libs = sorted(str(p) for p in Path("/opt/gdrcopy").glob("lib*/libgdrapi.so.*.*"))
    if libs:
        found["gdrcopy.lib"] = libs[-1].split("libgdrapi.so.", 1)[1]


def detect() -> dict[str, object]:
    """What the image's software reports about itself."""
    found: dict[str, object] = {}
    osr = _os_release()
    found["os"] = f"{osr.get('ID', '')}{osr.get('VERSION_ID', '')}"
    found["python"] = sys.version.split()[0]
    if Path(VENV_PYTHON).exists():
        found["k8smpi-runtime"] = _run(
            VENV_PYTHON, "-c", "import importlib.metadata as m; print(m.version('k8smpi-runtime'))"
        ).strip()
    _openmpi(found)
    _mpich(found)
    _impi(found)
    _mpi_flavour(found)
    _ucx(found)
    _rdma(found)
    _cuda(found)
    return found


def _pairs(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"record-versions: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--arg", action="append", default=[], help="a build ARG, KEY=VALUE")
    parser.add_argument("--expect", action="append", default=[], help="detected KEY must be VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    found = detect()
    scripts_file = Path("/opt/k8smpi/console-scripts.txt")
    scripts = scripts_file.read_text().split() if scripts_file.exists() else []
    record = {
        "schema": 1,
        "variant": args.variant,
        "build_args": _pairs(args.arg),
        "detected": found,
        "console_scripts": scripts,
    }
    wrong = [
        f"  {key}: expected {want!r}, the image has {_text(found[key]) if key in found else None!r}"
        for key, want in _pairs(args.expect).items()
        if key not in found or _text(found[key]) != want
    ]
    if wrong:
        sys.stderr.write("record-versions: the image does not match its build ARGs:\n")
        sys.stderr.write("\n".join(wrong) + "\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(json.dumps(found, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
