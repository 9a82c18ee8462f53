"""kubexec's import path stays lean: it runs once per remote node per MPI job.

Fresh interpreters import what a call imports -- the CLI alone, the control-master client
(a whole call when a master is used), and a direct call's modules with in-cluster credentials
and its request built -- and must not have pulled in anything that the call does not need.
Each name below cost a call measurable time on the 2-core machine (Python 3.11): the kubernetes
client's CoreV1Api path 1.2-1.7 s and 66 MiB; dataclasses (with inspect) 9 ms; logging 6 ms;
tempfile 6 ms; the idna codec (with stringprep, unicodedata) 5 ms; secrets 4 ms; urllib.parse
(with ipaddress) 4 ms; typing and pathlib 2.4 ms each; collections 1.7 ms (the master's client);
PyYAML 15-60 ms with its pure-Python loader. kubexec's budget is kubectl's wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Never on a call's path.
HEAVY = (
    "kubernetes", "pydantic", "urllib3", "yaml", "tenacity", "psutil", "dataclasses",
    "inspect", "logging", "typing", "pathlib", "tempfile", "secrets", "random", "urllib",
    "ipaddress", "subprocess", "http", "email", "encodings.idna", "unicodedata", "asyncio",
)  # fmt: skip
# Not even the TLS and JSON stack: the master's client only hands its stdio over.
CLIENT_HEAVY = (
    *HEAVY, "ssl", "_ssl", "json", "socket", "hashlib", "re", "threading", "select", "signal",
    "enum", "collections",
)  # fmt: skip


def modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = (
        f"{code}\nimport sys\nmods = sorted(sys.modules)\nimport json\nprint(json.dumps(mods))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return set(json.loads(proc.stdout.splitlines()[-1]))


def heavy(loaded: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in loaded if m in names or m.split(".")[0] in names}


@pytest.mark.timeout(60)
def test_importing_the_cli_pulls_in_nothing_heavy() -> None:
    loaded = modules_after("import k8smpi_runtime.kubexec.cli")
    assert not heavy(loaded, CLIENT_HEAVY), heavy(loaded, CLIENT_HEAVY)


@pytest.mark.timeout(60)
def test_the_control_master_client_is_lean(tmp_path: Path) -> None:
    code = (
        "import os\n"
        "from k8smpi_runtime import lazylog\n"
        "from k8smpi_runtime.kubexec import cli, control, sshargs\n"
        "lazylog.drop_below(lazylog.WARNING)  # as cli._configure_logging does\n"
        f"inv = sshargs.parse(['-o', 'ControlMaster=no', '-S', {str(tmp_path / 'm')!r}, 'w-0',"
        " 'true'], {})\n"
        "assert control.client(inv, [], {}) is None  # no master there: runs alone\n"
    )
    loaded = modules_after(code, {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert not heavy(loaded, CLIENT_HEAVY), heavy(loaded, CLIENT_HEAVY)


@pytest.mark.timeout(60)
def test_a_direct_in_cluster_call_needs_nothing_heavy(tmp_path: Path) -> None:
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
    # What cli.run does up to the first byte on the wire.
    code = (
        "import os\n"
        "from k8smpi_runtime import hosts\n"
        "from k8smpi_runtime.kube import config, exec as kexec\n"
        "from k8smpi_runtime.kubexec import cli, identity, remote, resolve, retrying, session,"
        " sshargs, wire\n"
        "inv = sshargs.parse(['-n', 'w-0', 'true'], {})\n"
        "cfg = config.load(env=os.environ)\n"
        "assert cfg.namespace == 'ns1', cfg\n"
        "mode = cli.choose_mode(inv, stdin_fd=0)\n"
        "ref = hosts.parse_host(inv.host)\n"
        "api = wire.Connection(cfg)\n"
        "target = resolve.Target('ns1', 'w-0', None)\n"
        "policy = retrying.Policy(attempts=5)\n"
        "request = session.Request(target=target, command=inv.command,"
        " identity=identity.target(None), mode=mode)\n"
        "launch = remote.build(command='true', grace=5.0, uid=None, gid=None, groups=(),"
        " session_id=remote.new_session_id(), mode=mode)\n"
        "kexec.exec_url(cfg, kexec.ExecTarget('ns1', 'w-0'), launch.argv, stdin=True, tty=False)\n"
        "kexec.Keepalive(inv.server_alive_interval, inv.server_alive_count_max).bound\n"
        "resolve.scope_for(api, explicit=None, in_cluster=False, token=cfg.token)\n"
        # A piped call with the default re-attach window runs through reattach.Link.
        "assert inv.reattach > 0\n"
        "from k8smpi_runtime.kubexec import reattach\n"
    )
    loaded = modules_after(code, env)
    assert not heavy(loaded, HEAVY), heavy(loaded, HEAVY)


@pytest.mark.timeout(60)
def test_a_kubeconfig_in_kubectls_yaml_needs_no_yaml(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n"
        "  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: x\n"
        "current-context: x\nkind: Config\npreferences: {}\nusers:\n- name: u\n  user:\n"
        "    token: abc\n"
    )
    code = "from k8smpi_runtime.kube import config\nassert config.load().token == 'abc'\n"
    loaded = modules_after(code, {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(kubeconfig)})
    assert not heavy(loaded, HEAVY), heavy(loaded, HEAVY)
