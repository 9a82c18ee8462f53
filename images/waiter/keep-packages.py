"""Purge every Debian package the waiter image does not need (run in its slim stage).

Kept: the Essential set (dpkg, bash, coreutils...: what makes it a Debian system that dpkg can
still query) and everything the packages named on the command line need, following Depends and
Pre-Depends (every alternative of an "a | b" that is installed, and what provides a virtual
package). Everything else -- apt, its TLS and keyring libraries, e2fsprogs, tzdata... -- is
purged in one dpkg call, which refuses if the walk missed a dependency.

    python3 keep-packages.py python3 ca-certificates
"""

from __future__ import annotations

import subprocess
import sys

FIELDS = "${Package}\t${Essential}\t${Depends}, ${Pre-Depends}\t${Provides}\n"


def installed() -> dict[str, tuple[bool, list[str], list[str]]]:
    """name -> (essential, names it depends on (alternatives flattened), names it provides)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", FIELDS], capture_output=True, text=True, check=True
    ).stdout
    packages = {}
    for line in out.splitlines():
        name, essential, depends, provides = line.split("\t")
        needs = [_name(alt) for dep in depends.split(",") for alt in dep.split("|") if alt.strip()]
        gives = [_name(p) for p in provides.split(",") if p.strip()]
        packages[name] = (essential == "yes", needs, gives)
    return packages


def _name(relation: str) -> str:
    """``libc6 (>= 2.34)`` or ``python3:any`` -> the package name."""
    return relation.strip().split()[0].split(":")[0]


def unneeded(keep: list[str]) -> list[str]:
    packages = installed()
    providers: dict[str, list[str]] = {}
    for name, (_, _, gives) in packages.items():
        for virtual in gives:
            providers.setdefault(virtual, []).append(name)
    todo = keep + [name for name, (essential, _, _) in packages.items() if essential]
    needed: set[str] = set()
    while todo:
        name = todo.pop()
        for real in [name] if name in packages else providers.get(name, []):
            if real not in needed:
                needed.add(real)
                todo.extend(packages[real][1])
    missing = [name for name in keep if name not in needed]
    if missing:
        raise SystemExit(f"keep-packages: not installed: {' '.join(missing)}")
    return sorted(set(packages) - needed)


def main() -> int:
    purge = unneeded(sys.argv[1:])
    print(f"keep-packages: purging {' '.join(purge) or 'nothing'}", flush=True)
    if purge:
        subprocess.run(["dpkg", "--purge", *purge], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
