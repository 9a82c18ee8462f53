"""Optional controllers beside the devcluster, started only when asked: JobSet and Kueue.

``python3 -m devcluster up --with jobset,kueue`` (or :func:`up` from code) builds them from their
pinned Go modules (``build-addons.sh``), installs their CRDs with a server-side apply (JobSet's
CRD is too big for a client-side apply's annotation), starts each as a local process and, once
it answers, registers its admission webhooks. ``down`` removes the webhook configurations first
and then stops the processes: no create is ever refused by a webhook that no longer answers.

The wiring they share (:mod:`devcluster.jobset` and :mod:`devcluster.kueue` hold the rest):

- webhooks on loopback: the upstream webhook manifests with each ``service`` reference replaced
  by ``url: https://127.0.0.1:<port><same path>`` and the devcluster CA as ``caBundle`` (there is
  no kube-proxy, and Endpoints refuse loopback addresses); one serving certificate for
  ``IP:127.0.0.1``/``DNS:localhost`` from the devcluster CA (their own certificate managers
  issue only ``<svc>.<ns>.svc`` names and are off); Kueue's CRDs convert through its ``/convert``;
- no leader election; webhook, health and metrics ports of their own, moved by
  ``DEVCLUSTER_PORT_OFFSET`` like every other port;
- they authenticate with a ``system:masters`` client certificate, as kwok and CoreDNS do here
  (development infrastructure), so no RBAC is set up for them.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster import jobset, kueue, processes
from devcluster.controlplane import kubectl
from devcluster.layout import HERE, DevclusterError, log, write_atomic
from devcluster.pki import _issue, kubeconfig_text

if TYPE_CHECKING:
    from devcluster.layout import Layout

NAMES = (jobset.NAME, kueue.NAME)
#: Port bases, each moved by DEVCLUSTER_PORT_OFFSET (0..249): the ranges never overlap.
PORT_BASES = {
    ("jobset", "webhook"): 20000,
    ("jobset", "health"): 20250,
    ("jobset", "metrics"): 20500,
    ("kueue", "webhook"): 20750,
    ("kueue", "health"): 21000,
    ("kueue", "metrics"): 21250,
}
DEVCLUSTER_LABEL = "k8smpi.dev/devcluster"
JSON = dict[str, Any]


@dataclass(frozen=True)
class AddonPorts:
    offset: int

    def of(self, name: str, role: str) -> int:
        return PORT_BASES[(name, role)] + self.offset


def build() -> Path:
    """build-addons.sh (a no-op when cached): the folder with bin/, the CRDs and webhooks."""
    proc = subprocess.run(
        ["bash", str(HERE / "build-addons.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise DevclusterError("building JobSet and Kueue failed (output above)")
    return Path(proc.stdout.strip().splitlines()[-1])


# -- files -------------------------------------------------------------------------------------


def folder(lay: Layout) -> Path:
    return lay.root / "addons"


def write_files(lay: Layout, ports: AddonPorts, server: str) -> Path:
    """Certificates, kubeconfigs and configurations; the webhook certificate folder."""
    _issue(
        lay.pki,
        "addons-webhook",
        "/CN=k8smpi-devcluster-webhooks",
        san="IP:127.0.0.1,DNS:localhost",
        usage="serverAuth",
    )
    certs = folder(lay) / "certs"
    # controller-runtime's file names.
    write_atomic(certs / "tls.crt", (lay.pki / "addons-webhook.crt").read_bytes())
    write_atomic(certs / "tls.key", (lay.pki / "addons-webhook.key").read_bytes(), 0o600)
    for name in NAMES:
        _issue(lay.pki, name, f"/O=system:masters/CN={name}")
        write_atomic(lay.component_kubeconfig(name), kubeconfig_text(server, lay.pki, name), 0o600)
    write_atomic(folder(lay) / "jobset-config.yaml", jobset.config(ports, certs))
    write_atomic(folder(lay) / "kueue-config.yaml", kueue.config(ports, certs))
    kueue.private_etc(folder(lay), certs)
    return certs


def command_line(name: str, lay: Layout, built: Path) -> list[str]:
    binary = built / "bin" / name
    config = folder(lay) / f"{name}-config.yaml"
    if name == jobset.NAME:
        return jobset.argv(lay, binary, config)
    return kueue.argv(lay, binary, config, folder(lay) / "kueue-etc")


# -- manifests ---------------------------------------------------------------------------------


def read_manifest(lay: Layout, path: Path) -> list[JSON]:
    """A YAML manifest file as objects (kubectl parses it: no YAML library needed here)."""
    text = kubectl(lay, "create", "--dry-run=client", "-o", "json", "-f", str(path))
    return json_objects(text)


def json_objects(text: str) -> list[JSON]:
    """Concatenated JSON documents (kubectl prints one per object), Lists unpacked."""
    decoder = json.JSONDecoder()
    out: list[JSON] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        doc, pos = decoder.raw_decode(text, pos)
        out.extend(doc["items"] if doc.get("kind") == "List" else [doc])


def webhooks(
    objects: list[JSON], *, name: str, port: int, ca_bundle: str, keep: frozenset[str] | None
) -> list[JSON]:
    """The upstream webhook configurations, pointed at ``https://127.0.0.1:<port>``.

    Renamed ``k8smpi-dev-<name>-mutating|validating`` (both projects call theirs
    ``mutating-webhook-configuration``). ``keep`` (Kueue): only webhooks for these resources or
    Kueue's own types stay, and those for namespaced objects act in opted-in namespaces only.
    """
    out = []
    for obj in objects:
        kept = []
        for hook in obj.get("webhooks") or []:
            rules = hook.get("rules", [])
            resources = {r for rule in rules for r in rule.get("resources", [])}
            own = any("kueue.x-k8s.io" in rule.get("apiGroups", []) for rule in rules)
            if keep is not None and not own and not resources & keep:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            cluster_scoped = own and not resources & {"workloads", "localqueues"}
            if keep is not None and not cluster_scoped:
                hook["namespaceSelector"] = kueue.opt_in()
            kept.append(hook)
        kind = "mutating" if obj["kind"].startswith("Mutating") else "validating"
        out.append(
            {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": {
                    "name": f"k8smpi-dev-{name}-{kind}",
                    "labels": {DEVCLUSTER_LABEL: "true"},
                },
                "webhooks": kept,
            }
        )
    return out


def conversion_patch(port: int, ca_bundle: str) -> JSON:
    """Upstream's conversion patch, pointed at Kueue's /convert on loopback."""
    webhook = {
        "clientConfig": {"url": f"https://127.0.0.1:{port}/convert", "caBundle": ca_bundle},
        "conversionReviewVersions": ["v1"],
    }
    return {"spec": {"conversion": {"strategy": "Webhook", "webhook": webhook}}}


# Server-side: JobSet's CRD is too big for the annotation a client-side apply writes.
SERVER_SIDE = ("apply", "--server-side", "--force-conflicts", "--field-manager=k8smpi-devcluster")


def apply(lay: Layout, objects: list[JSON]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl(lay, *SERVER_SIDE, "-f", "-", stdin=doc)


def install_crds(lay: Layout, built: Path, ports: AddonPorts, ca_bundle: str) -> None:
    for name in NAMES:
        kubectl(lay, *SERVER_SIDE, "-f", str(built / f"{name}-crds"))
    # Exactly the CRDs upstream converts through Kueue's webhook (build-addons.sh lists them).
    converted = (built / "kueue-converted-crds.txt").read_text().split()
    patch = json.dumps(conversion_patch(ports.of(kueue.NAME, "webhook"), ca_bundle))
    for crd in converted:
        kubectl(lay, "patch", "crd", crd, "--type=merge", "-p", patch)
    kubectl(
        lay,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        jobset.API,
        "workloads.kueue.x-k8s.io",
        "clusterqueues.kueue.x-k8s.io",
        "localqueues.kueue.x-k8s.io",
    )


# -- processes ---------------------------------------------------------------------------------


def _alive(lay: Layout, name: str) -> bool:
    """The recorded process exists (Kueue's is unshare, then sh, before it is kueue)."""
    try:
        pid = int(lay.pidfile(name).read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return False
    return state != "Z"


def wait_ready(lay: Layout, name: str, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.http_ok(f"http://127.0.0.1:{port}/readyz"):
            return
        if not _alive(lay, name):
            raise DevclusterError(f"{name} exited; see {lay.logs / (name + '.log')}")
        time.sleep(0.3)
    raise DevclusterError(
        f"{name} not ready after {timeout:.0f}s; see {lay.logs / (name + '.log')}"
    )


def up(
    lay: Layout,
    *,
    offset: int,
    server: str,
    nodes: int,
    resources: dict[str, str],
    names: tuple[str, ...],
) -> None:
    """Start ``names`` if they are not running; return when each one works."""
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise DevclusterError(f"--with takes {', '.join(NAMES)}, not {', '.join(unknown)}")
    if not names:
        return
    if kueue.NAME in names and shutil.which("unshare") is None:
        raise DevclusterError("Kueue needs unshare (util-linux) for its private /etc")
    t0 = time.monotonic()
    built = build()
    ports = AddonPorts(offset)
    write_files(lay, ports, server)
    ca = base64.b64encode((lay.pki / "ca.crt").read_bytes()).decode()
    # Both CRD sets: Kueue's JobSet integration needs the JobSet API even without its controller.
    install_crds(lay, built, ports, ca)
    started = []
    for name in (n for n in NAMES if n in names):
        if processes.read_pid(lay, name) is None:
            if name == kueue.NAME:
                apply(lay, [kueue.namespace(kueue.NAMESPACE)])
            processes.start(lay, name, command_line(name, lay, built))
            started.append(name)
        wait_ready(lay, name, ports.of(name, "health"))
        hooks = read_manifest(lay, built / f"{name}-webhooks.yaml")
        keep = kueue.WEBHOOK_RESOURCES if name == kueue.NAME else None
        port = ports.of(name, "webhook")
        apply(lay, webhooks(hooks, name=name, port=port, ca_bundle=ca, keep=keep))
        if name == kueue.NAME:
            apply(lay, kueue.cluster_queue(nodes, resources))
            kueue.wait_for_admission(lay)
    what = f"started {', '.join(started)}" if started else "already running"
    asked = ", ".join(n for n in NAMES if n in names)
    log(f"{asked} ready in {time.monotonic() - t0:.1f}s ({what})")


def down(lay: Layout) -> None:
    """Webhook configurations first (no create may wait on a stopped server), then processes."""
    if all(processes.read_pid(lay, n) is None for n in NAMES):
        return
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        try:
            kubectl(lay, "delete", kind, "-l", f"{DEVCLUSTER_LABEL}=true", "--ignore-not-found")
        except DevclusterError as e:  # the apiserver may be gone already
            log(f"could not remove the webhook configurations: {e}")
    for name in reversed(NAMES):
        processes.stop(lay, name)


def started(lay: Layout) -> list[tuple[str, int | None]]:
    """(name, pid) of each one that was started; pid None: it is not running any more."""
    return [
        (name, processes.read_pid(lay, name))
        for name in NAMES
        if lay.pidfile(name).exists() or processes.read_pid(lay, name) is not None
    ]
