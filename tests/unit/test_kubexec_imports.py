"""kubexec's import path stays lean: it runs once per remote node per MPI job.

A fresh interpreter imports the CLI module (and, separately, resolves credentials the
in-cluster way) and must not have pulled in the heavy client stack. The kubernetes client's
CoreV1Api path cost 1.2-1.7 s and 66 MiB per call; kubexec's budget is kubectl's wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("kubernetes", "pydantic", "urllib3", "yaml", "tenacity", "psutil")


def modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return {name.split(".")[0] for name in json.loads(proc.stdout.splitlines()[-1])}


@pytest.mark.timeout(60)
def test_importing_the_cli_pulls_in_nothing_heavy() -> None:
    loaded = modules_after("import k8smpi_runtime.kubexec.cli")
    assert not loaded & set(HEAVY), f"heavy modules on kubexec's import path: {loaded & set(HEAVY)}"


@pytest.mark.timeout(60)
def test_in_cluster_credentials_need_no_yaml(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t0ken")
    (sa / "ca.crt").write_text("")
    (sa / "namespace").write_text("ns1")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "K8SMPI_SERVICEACCOUNT_DIR": str(sa),
    }
    code = (
        "import os\n"
        "from k8smpi_runtime.kubexec import cli, sshargs\n"
        "from k8smpi_runtime.kube import config\n"
        "cfg = config.load(env=os.environ)\n"
        "assert cfg.namespace == 'ns1', cfg\n"
        "cli.choose_mode(sshargs.parse(['-n', 'w-0', 'true'], {}), stdin_fd=0)\n"
    )
    loaded = modules_after(code, env)
    assert not loaded & set(HEAVY), f"heavy modules on the in-cluster path: {loaded & set(HEAVY)}"
