"""deploy/: render the kustomize base and overlays, and name what a job is made of.

Shared by tests/unit/test_deploy_manifests.py (rendered offline with ``kubectl kustomize``)
and tests/e2e/test_deploy.py (the same directories applied to the devcluster).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DIRS = ("base", "overlays/gpu-ib", "overlays/cpu", "overlays/indexed")
"""Every kustomization a user applies."""

JSON = dict[str, Any]


def kubectl_path() -> str:
    """$K8SMPI_KUBECTL, the devcluster's kubectl, kubectl on PATH, or the cached build's."""
    explicit = os.environ.get("K8SMPI_KUBECTL")
    if explicit:
        return explicit
    local = REPO / ".devcluster" / "bin" / "kubectl"
    if local.exists():
        return str(local)
    found = shutil.which("kubectl")
    if found:
        return found
    # A no-op when the control-plane binaries are cached (make setup builds them).
    proc = subprocess.run(
        ["bash", str(REPO / "devcluster" / "build.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return str(Path(proc.stdout.strip().splitlines()[-1]) / "kubectl")


def render(directory: str) -> list[JSON]:
    """``kubectl kustomize deploy/<directory>`` (or an absolute directory), parsed."""
    proc = subprocess.run(
        [kubectl_path(), "kustomize", str(DEPLOY / directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {DEPLOY / directory}: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@dataclass(frozen=True)
class Job:
    """One rendered job: its objects by kind and role."""

    objects: list[JSON]

    def of_kind(self, kind: str) -> list[JSON]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, role: str | None = None) -> JSON:
        found = [
            o
            for o in self.of_kind(kind)
            if role is None
            or o["spec"]
            .get("template", {})
            .get("metadata", {})
            .get("labels", {})
            .get("k8smpi.dev/role")
            == role
        ]
        assert len(found) == 1, f"expected one {kind} (role {role}), found {len(found)}"
        return found[0]

    @property
    def workers(self) -> JSON:
        """The StatefulSet or (Indexed) Job of workers."""
        found = [
            o
            for o in self.objects
            if o["kind"] in ("StatefulSet", "Job")
            and o["spec"]["template"]["metadata"]["labels"].get("k8smpi.dev/role") == "worker"
        ]
        assert len(found) == 1, f"expected one worker set, found {len(found)}"
        return found[0]

    @property
    def launcher(self) -> JSON:
        return self.one("Job", "launcher")

    @property
    def worker_count(self) -> int:
        spec = self.workers["spec"]
        if self.workers["kind"] == "StatefulSet":
            return int(spec["replicas"])
        return int(min(spec["parallelism"], spec["completions"]))

    @property
    def worker_pod_names(self) -> list[str] | None:
        """The worker pods' names; None where they are not known in advance (Job pods)."""
        if self.workers["kind"] != "StatefulSet":
            return None
        name = self.workers["metadata"]["name"]
        return [f"{name}-{i}" for i in range(self.worker_count)]

    @property
    def worker_hostnames(self) -> list[str]:
        name = self.workers["metadata"]["name"]
        return [f"{name}-{i}" for i in range(self.worker_count)]

    @property
    def service_account(self) -> str:
        return str(self.launcher["spec"]["template"]["spec"]["serviceAccountName"])

    @property
    def role(self) -> JSON:
        return self.one("Role")

    def rules_for(self, resource: str) -> list[JSON]:
        return [r for r in self.role["rules"] if resource in r["resources"]]

    @property
    def hostfile_configmap(self) -> str:
        names = [
            c["metadata"]["name"]
            for c in self.of_kind("ConfigMap")
            if "hostfile" in c.get("data", {})
        ]
        assert len(names) == 1, names
        return str(names[0])

    def init_env(self, container: str) -> dict[str, str]:
        spec = self.launcher["spec"]["template"]["spec"]
        (c,) = [c for c in spec["initContainers"] if c["name"] == container]
        return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def job(directory: str) -> Job:
    return Job(render(directory))
