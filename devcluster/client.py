"""The cluster under test, as the e2e tier, the demo and the benchmarks see it.

kubectl, namespaces, pod DNS, the audit log, and ``python3 -m devcluster`` itself.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

T = TypeVar("T")

JSON = dict[str, Any]
REPO = Path(__file__).resolve().parent.parent


def devcluster(
    *args: str, timeout: float = 300, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python3 -m devcluster ARGS`` from the repository root; the caller checks the result."""
    return subprocess.run(
        [sys.executable, "-m", "devcluster", *args],
        cwd=REPO,
        capture_output=capture,
        text=True,
        check=False,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl_path: str
    #: What ``python3 -m devcluster up`` recorded (audit log, DNS, bin folder); empty elsewhere.
    state: JSON
    root: Path | None

    @classmethod
    def from_devcluster(cls, root: Path) -> Cluster:
        state = json.loads((root / "state.json").read_text())
        return cls(
            kubeconfig=Path(state["kubeconfig"]),
            kubectl_path=str(Path(state["bin"]) / "kubectl"),
            state=state,
            root=root,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> Cluster:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("KUBECONFIG is set but kubectl is not on PATH")
        return cls(kubeconfig=kubeconfig, kubectl_path=kubectl, state={}, root=None)

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=data,
            capture_output=True,
            check=False,
            timeout=timeout,
            env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace').strip()}"
            )
        return proc

    def get(self, *args: str) -> JSON:
        out: JSON = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def apply(self, objects: Iterable[JSON], namespace: str) -> None:
        items = list(objects)
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.kubectl("apply", "-n", namespace, "-f", "-", input=doc)

    def create_namespace(self, hint: str) -> str:
        base = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-") or "t"
        name = f"{base}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        # Pods are refused until the namespace's default ServiceAccount exists.
        wait_for(
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
        return name

    def delete_namespace(self, name: str, timeout_s: int = 120) -> None:
        # Waiting matters: simulated nodes have few GPUs and the next test needs them back.
        self.kubectl(
            "delete",
            "namespace",
            name,
            "--wait=true",
            f"--timeout={timeout_s}s",
            timeout=timeout_s + 30,
        )

    def token_kubeconfig(self, token: str, namespace: str) -> Path:
        """A kubeconfig that authenticates with ``token`` only (as a pod's service account)."""
        if self.root is None:
            raise RuntimeError("token kubeconfigs need the devcluster")
        path = self.root / "tokens" / f"{namespace}-{secrets.token_hex(4)}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": self.state["server"],
                        "certificate-authority": self.state["ca"],
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [
                {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}
            ],
            "current-context": "c",
        }
        path.write_text(json.dumps(cfg))
        path.chmod(0o600)
        return path

    def add_nodes(self, count: int, owner: str) -> list[str]:
        """``count`` extra simulated nodes (seed-talk resources) for a test that needs capacity.

        They carry ``k8smpi.dev/test-nodes=<owner>``; :meth:`remove_nodes` deletes them.
        """
        if self.root is None:
            raise RuntimeError("extra simulated nodes need the devcluster")
        resources = self.state["node_resources"]
        names = [f"kwok-{owner}-{i}" for i in range(count)]
        items = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {
                        "k8smpi.dev/test-nodes": owner,
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "type": "kwok",
                    },
                },
                "status": {"capacity": resources, "allocatable": resources},
            }
            for name in names
        ]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.kubectl("create", "-f", "-", input=doc)

        def all_ready() -> bool:
            nodes = self.get("nodes", "-l", f"k8smpi.dev/test-nodes={owner}")["items"]
            ready = [
                n
                for n in nodes
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) == count

        wait_for(all_ready, timeout=60, what=f"{count} extra nodes Ready")
        return names

    def remove_nodes(self, owner: str) -> None:
        self.kubectl("delete", "nodes", "-l", f"k8smpi.dev/test-nodes={owner}", "--wait=true")

    # -- DNS -------------------------------------------------------------------------------

    def resolv_conf(self, namespace: str) -> Path:
        """What the kubelet would give a pod in ``namespace``: CoreDNS plus search domains."""
        if self.root is None:
            raise RuntimeError("pod DNS checks need the devcluster")
        domain = self.state["cluster_domain"]
        path = self.root / "resolv" / f"{namespace}.conf"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f"nameserver {self.state['dns_address']}\n"
            f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            "options ndots:5 timeout:1 attempts:2\n"
        )
        return path

    def run_with_pod_dns(
        self, namespace: str, argv: list[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` with /etc/resolv.conf replaced in a private mount namespace only."""
        conf = self.resolv_conf(namespace)
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, str(conf), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def resolve(self, namespace: str, name: str) -> list[str]:
        """IPv4 addresses getaddrinfo() gives for ``name`` as a pod in ``namespace`` sees it."""
        code = (
            "import socket, sys\n"
            "try:\n"
            "    infos = socket.getaddrinfo(sys.argv[1], None, socket.AF_INET)\n"
            "except socket.gaierror:\n"
            "    sys.exit(2)\n"
            "print(' '.join(sorted({i[4][0] for i in infos})))\n"
        )
        proc = self.run_with_pod_dns(namespace, [sys.executable, "-c", code, name])
        if proc.returncode == 2:
            return []
        if proc.returncode != 0:
            raise AssertionError(f"resolving {name} failed: {proc.stderr.strip()}")
        return proc.stdout.split()

    # -- audit log -------------------------------------------------------------------------

    def audit_events(self) -> list[JSON]:
        path = Path(self.state["audit_log"])
        # The apiserver may be writing the last line right now: only whole lines count.
        complete, _, _partial = path.read_text().rpartition("\n")
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def exec_events(self, namespace: str, pod: str | None = None) -> list[JSON]:
        """Completed pods/exec requests into ``namespace`` (one per exec, whatever the verb)."""
        return [
            e
            for e in self.audit_events()
            if e.get("stage") == "ResponseComplete"
            and e.get("objectRef", {}).get("subresource") == "exec"
            and e["objectRef"].get("namespace") == namespace
            and (pod is None or e["objectRef"].get("name") == pod)
        ]


def wait_for(
    predicate: Callable[[], T | bool | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll until ``predicate`` returns something truthy, and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
