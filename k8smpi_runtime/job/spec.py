"""A job's inputs, from the command line and a job spec file, checked before anything is built.

Every input has one key in the job spec file (YAML) and one option on the command line; the
command line wins. :func:`build` turns the merged inputs into a :class:`JobSpec` or raises
:class:`SpecError` whose message is one line naming the input and what is wrong with it.

The job spec file, every key optional except ``image`` and ``script`` (paths are relative to
the file)::

    name: allreduce              # default: the script's file name
    script: batch.sh
    image: localhost/k8smpi/cpu:0.1.0-bookworm-ompi4.1.4-ucx1.13.1
    workers: 4
    gpus: 4                      # nvidia.com/gpu per worker
    resources: {rdma/hca: 1}     # any other extended resource per worker
    cpu: "16"                    # per worker (request = limit)
    memory: 64Gi
    mpi: openmpi5                # openmpi (4.1 or 5), openmpi4, openmpi5, mpich, intel
    user: 1000:1000:1000,2000    # UID[:GID[:GROUPS]], or "image"; default: yours
    namespace: hpc
    shape: statefulset           # or jobset
    queue: team-a                # a Kueue LocalQueue: gang admission
    mpiOptions: {hostfile: true, service: true, dns: true, kubexec: true, preflight: true}
    slots: 4                     # ranks per worker; default: the GPUs (or whole cores)
    shm: 8Gi                     # /dev/shm per worker; default: half the memory, else 1Gi
    time: 2h                     # the launcher's run-time limit (from its start)
    waitTimeout: 10m             # how long the waiter waits for the workers
    keepFor: 1h                  # how long a finished job's objects (and logs) stay
    env: {UCX_TLS: "rc,sm,self"} # for the launcher and the workers
    nodeSelector: {k8smpi.dev/devcluster: "true"}
    tolerations: [{key: k8smpi.dev/real-node, operator: Exists, effect: NoSchedule}]
    launcher: {cpu: "1", memory: 1Gi, annotations: {}}
    waiterImage: localhost/k8smpi/waiter:0.1.0-bookworm
    imagePullPolicy: IfNotPresent  # every container's (Always, IfNotPresent, Never)
    clusterDomain: cluster.local

``mpiOptions.preflight`` (on by default): the waiter runs ``k8smpi-preflight`` in every worker
once they are ready (``k8s-waitfor --preflight``), so a node without the GPUs a worker asked for,
with a driver too old for the image's CUDA or an HCA port down fails the job in seconds, with
the reason, before mpirun. Off (``--no-preflight``) for images without the k8smpi tools.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.hostfile.slots import QuantityError, parse_quantity
from k8smpi_runtime.job import shared

SHAPES = ("statefulset", "jobset")
DEFAULT_FLAVOUR = "openmpi"
MAX_WORKERS = 10000
MAX_NAME = 40
"""Job names stay short enough for every derived name (``<name>-hpc-cluster``, pod host names
``<name>-cnode-<i>``, the StatefulSet's revision label) to fit Kubernetes' 63-character limits."""
MAX_SCRIPT = 512 * 1024
"""ConfigMaps hold at most 1 MiB; a batch script is far smaller."""
DEFAULT_TIME = 86400.0
DEFAULT_WAIT = 600.0
DEFAULT_KEEP = 3600.0
DEFAULT_LAUNCHER_CPU = "1"
DEFAULT_LAUNCHER_MEMORY = "1Gi"
DEFAULT_SHM = "1Gi"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_EXTENDED = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

KEYS = (
    "name",
    "script",
    "image",
    "workers",
    "gpus",
    "resources",
    "cpu",
    "memory",
    "mpi",
    "user",
    "namespace",
    "shape",
    "queue",
    "mpiOptions",
    "slots",
    "shm",
    "time",
    "waitTimeout",
    "keepFor",
    "env",
    "nodeSelector",
    "tolerations",
    "launcher",
    "waiterImage",
    "imagePullPolicy",
    "clusterDomain",
)
"""The job spec file's keys (the command line sets the same inputs)."""
MPI_OPTIONS = ("hostfile", "service", "dns", "kubexec", "preflight")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
LAUNCHER_KEYS = ("cpu", "memory", "annotations")

JSON = dict[str, Any]


class SpecError(K8smpiError):
    """A bad input: the message is one line naming it."""


@dataclass(frozen=True)
class User:
    """The ids the job's processes run as; None: the image's own user (``containedUser``)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    """Everything a shape needs to render one job, validated."""

    name: str
    script: str
    script_name: str
    image: str
    workers: int
    namespace: str
    flavour: shared.Flavour
    shape: str = "statefulset"
    #: Extended resources per worker (name -> whole count), GPUs included.
    resources: tuple[tuple[str, int], ...] = ()
    cpu: str | None = None
    memory: str | None = None
    user: User | None = None
    queue: str | None = None
    hostfile: bool = True
    service: bool = True
    dns: bool = True
    kubexec: bool = True
    #: The waiter runs k8smpi-preflight in every worker before the script starts.
    preflight: bool = True
    #: Ranks per worker when fixed (``--slots``); else counted from :attr:`slots_resource`.
    slots: int | None = None
    slots_resource: str = "cpu"
    shm: str = DEFAULT_SHM
    time_limit: int = int(DEFAULT_TIME)
    wait_timeout: int = int(DEFAULT_WAIT)
    keep_for: int = int(DEFAULT_KEEP)
    env: tuple[tuple[str, str], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[JSON, ...] = ()
    launcher_cpu: str = DEFAULT_LAUNCHER_CPU
    launcher_memory: str = DEFAULT_LAUNCHER_MEMORY
    launcher_annotations: tuple[tuple[str, str], ...] = ()
    waiter_image: str = shared.WAITER_IMAGE
    #: Every container's imagePullPolicy; None: the cluster's default (IfNotPresent for a tag).
    image_pull_policy: str | None = None
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    @property
    def names(self) -> shared.Names:
        return shared.Names(self.name)

    @property
    def slots_per_worker(self) -> int | None:
        """Ranks per worker, when known before the pods exist."""
        if self.slots is not None:
            return self.slots
        counts = dict(self.resources)
        if self.slots_resource in counts:
            return counts[self.slots_resource]
        if self.slots_resource == "cpu" and self.cpu is not None:
            return math.floor(parse_quantity(self.cpu))
        return None


# -- reading the inputs ------------------------------------------------------------------------


def load_file(path: str) -> JSON:
    """The job spec file as a mapping; SpecError when it cannot be read or is not one."""
    import yaml  # noqa: PLC0415 - only the spec file needs it (a dependency of kubernetes too)

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"job spec {path}: cannot read it: {_os_reason(e)}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SpecError(f"job spec {path}: not valid YAML{where}: {problem}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"job spec {path}: expected a mapping of inputs, found {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise SpecError(f"job spec {path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    return data


def _os_reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def merge(file_inputs: JSON, cli_inputs: JSON) -> JSON:
    """The command line's inputs over the file's; mappings (mpiOptions, launcher) key by key."""
    merged = dict(file_inputs)
    for key, value in cli_inputs.items():
        if value is None:
            continue
        if key in ("mpiOptions", "launcher", "env", "nodeSelector", "resources") and isinstance(
            merged.get(key), dict
        ):
            merged[key] = {**merged[key], **value}
        elif key == "tolerations" and isinstance(merged.get(key), list):
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


# -- checking them -----------------------------------------------------------------------------


def build(
    inputs: JSON,
    *,
    base_dir: str | None = None,
    default_namespace: str | None = None,
    caller: User | None = None,
) -> JobSpec:
    """A validated :class:`JobSpec` from merged inputs; SpecError (one line) otherwise.

    ``base_dir``: where a relative ``script`` path starts (the spec file's folder);
    ``default_namespace``: used when no namespace is given (the kubeconfig's);
    ``caller``: the default user (the ids of whoever runs the command; None: the image's).
    """
    script_path, script = _script(inputs.get("script"), base_dir)
    name = _name(inputs.get("name"), script_path)
    flavour_name = _choice("mpi", inputs.get("mpi", DEFAULT_FLAVOUR), tuple(shared.FLAVOURS))
    flavour = shared.FLAVOURS[flavour_name]
    shape = _choice("shape", inputs.get("shape", "statefulset"), SHAPES)
    options = _mpi_options(inputs.get("mpiOptions"))
    _check_options(options, flavour)
    resources = _resources(inputs.get("gpus"), inputs.get("resources"))
    cpu = _quantity("cpu", inputs.get("cpu"))
    memory = _quantity("memory", inputs.get("memory"))
    slots = _count("slots", inputs.get("slots"), low=1, high=4096)
    slots_resource = _slots_resource(resources)
    if slots is None and slots_resource == "cpu" and cpu is None:
        raise SpecError(
            "slots: nothing to count ranks from: give --gpus, a --resource, --cpu or --slots"
        )
    if slots is None and slots_resource == "cpu" and cpu is not None and parse_quantity(cpu) < 1:
        raise SpecError(f"cpu: {cpu} is less than one whole core: give --slots")
    launcher = _launcher(inputs.get("launcher"))
    return JobSpec(
        name=name,
        script=script,
        script_name=Path(script_path).name,
        image=_image("image", inputs.get("image"), required=True),
        workers=_count("workers", inputs.get("workers", 1), low=1, high=MAX_WORKERS) or 1,
        namespace=_namespace(inputs.get("namespace") or default_namespace or "default"),
        flavour=flavour,
        shape=shape,
        resources=resources,
        cpu=cpu,
        memory=memory,
        user=_user(inputs.get("user"), caller),
        queue=_queue(inputs.get("queue")),
        hostfile=options["hostfile"],
        service=options["service"],
        dns=options["dns"],
        kubexec=options["kubexec"],
        preflight=options["preflight"],
        slots=slots,
        slots_resource=slots_resource,
        shm=_shm(inputs.get("shm"), memory),
        time_limit=_duration("time", inputs.get("time"), DEFAULT_TIME),
        wait_timeout=_duration("waitTimeout", inputs.get("waitTimeout"), DEFAULT_WAIT),
        keep_for=_duration("keepFor", inputs.get("keepFor"), DEFAULT_KEEP, zero_ok=True),
        env=_env(inputs.get("env")),
        node_selector=_labels("nodeSelector", inputs.get("nodeSelector")),
        tolerations=_tolerations(inputs.get("tolerations")),
        launcher_cpu=launcher["cpu"],
        launcher_memory=launcher["memory"],
        launcher_annotations=launcher["annotations"],
        waiter_image=_image("waiterImage", inputs.get("waiterImage")) or shared.WAITER_IMAGE,
        image_pull_policy=_pull_policy(inputs.get("imagePullPolicy")),
        cluster_domain=_cluster_domain(inputs.get("clusterDomain")),
    )


def _script(value: object, base_dir: str | None) -> tuple[str, str]:
    if value is None or value == "":
        raise SpecError("script: give the batch script (a file), e.g. k8smpi-job submit batch.sh")
    if not isinstance(value, str):
        raise SpecError(f"script: expected a file name, found {_kind(value)}")
    path = value if base_dir is None else str(Path(base_dir) / value)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SpecError(f"script {value}: cannot read it: {_os_reason(e)}") from e
    if len(raw) > MAX_SCRIPT:
        raise SpecError(f"script {value}: {len(raw)} bytes, more than a ConfigMap should hold")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"script {value}: not a text file (UTF-8)") from None
    if not text.strip():
        raise SpecError(f"script {value}: the file is empty")
    if "\x00" in text:
        raise SpecError(f"script {value}: not a text file (it holds NUL bytes)")
    return path, text


def _name(value: object, script_path: str) -> str:
    if value is None or value == "":
        stem = Path(script_path).name.split(".")[0].lower()
        derived = re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")
        derived = re.sub(r"^[^a-z]+", "", derived)[:MAX_NAME].rstrip("-")
        if not derived:
            raise SpecError(
                f"name: cannot make a job name from the script's name {Path(script_path).name!r}: "
                "give --name"
            )
        return derived
    if not isinstance(value, str):
        raise SpecError(f"name: expected a string, found {_kind(value)}")
    if len(value) > MAX_NAME:
        raise SpecError(f"name {value!r}: longer than {MAX_NAME} characters")
    if not _DNS_LABEL.match(value):
        raise SpecError(
            f"name {value!r}: use lowercase letters, digits and '-', starting with a letter"
        )
    return value


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _mpi_options(value: object) -> dict[str, bool]:
    options = dict.fromkeys(MPI_OPTIONS, True)
    if value is None:
        return options
    if not isinstance(value, dict):
        raise SpecError(f"mpiOptions: expected a mapping, found {_kind(value)}")
    for key, flag in value.items():
        if key not in MPI_OPTIONS:
            raise SpecError(f"mpiOptions: unknown option {key!r} (known: {', '.join(MPI_OPTIONS)})")
        if not isinstance(flag, bool):
            raise SpecError(f"mpiOptions.{key}: expected true or false, found {flag!r}")
        options[key] = flag
    return options


def _check_options(options: dict[str, bool], flavour: shared.Flavour) -> None:
    if flavour.dials_back and not (options["service"] and options["dns"]):
        off = "--no-service" if not options["service"] else "--no-dns"
        raise SpecError(
            f"{off}: {flavour.title} proxies dial back to the launcher by name; keep the "
            "Service and DNS for it"
        )
    if not options["service"] and options["dns"]:
        # Without the Service no name resolves: the search path would point at nothing.
        options["dns"] = False


def _count(key: str, value: object, *, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{key}: expected a whole number, found {_kind(value)}")
    try:
        number = int(value)
    except ValueError:
        raise SpecError(f"{key}: not a whole number: {value!r}") from None
    if not low <= number <= high:
        raise SpecError(f"{key}: {number} is out of range ({low}..{high})")
    return number


def _resources(gpus: object, extra: object) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    number = _count("gpus", gpus, low=0, high=1024)
    if number:
        counts["nvidia.com/gpu"] = number
    if extra is None:
        return tuple(counts.items())
    if not isinstance(extra, dict):
        raise SpecError(f"resources: expected a mapping NAME: COUNT, found {_kind(extra)}")
    for name, value in extra.items():
        if name in ("cpu", "memory"):
            raise SpecError(f"resources: give {name} with --{name}, not as an extended resource")
        if not isinstance(name, str) or not _EXTENDED.match(name):
            raise SpecError(
                f"resources: {name!r} is not an extended resource name (domain/name, e.g. "
                "rdma/hca or amd.com/gpu)"
            )
        if name in counts and number is not None:
            raise SpecError(f"resources: {name} is given twice (--gpus and --resource)")
        count = _count(f"resources.{name}", value, low=0, high=1_000_000)
        if count:
            counts[name] = count
    return tuple(counts.items())


def _slots_resource(resources: tuple[tuple[str, int], ...]) -> str:
    names = [n for n, _ in resources]
    if "nvidia.com/gpu" in names:
        return "nvidia.com/gpu"
    gpus = [n for n in names if n.rsplit("/", 1)[-1].startswith("gpu")]
    if gpus:
        return gpus[0]
    return "cpu"


def _quantity(key: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{key}: expected a quantity such as 4 or 8Gi, found {_kind(value)}")
    text = str(value).strip()
    try:
        amount = parse_quantity(text)
    except QuantityError:
        raise SpecError(
            f"{key}: {text!r} is not a Kubernetes quantity (e.g. 4, 500m, 8Gi)"
        ) from None
    if amount <= 0:
        raise SpecError(f"{key}: {text} must be more than 0")
    return text


def _shm(value: object, memory: str | None) -> str:
    if value is not None:
        return _quantity("shm", value) or DEFAULT_SHM
    if memory is None:
        return DEFAULT_SHM
    half = parse_quantity(memory) / 2
    mib = math.floor(half / 2**20)
    return f"{mib}Mi" if mib >= 1 else DEFAULT_SHM


def parse_duration(key: str, value: object) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m``, ``2d``, ``500ms`` -> seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"{key}: expected a duration such as 90s, 10m or 2h, found {_kind(value)}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    total, pos = 0.0, 0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            raise SpecError(f"{key}: not a duration: {value!r} (say 90s, 10m, 2h)")
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    if not text:
        raise SpecError(f"{key}: not a duration: {value!r} (say 90s, 10m, 2h)")
    return total


def _duration(key: str, value: object, default: float, *, zero_ok: bool = False) -> int:
    seconds = default if value is None else parse_duration(key, value)
    if seconds < (0 if zero_ok else 1) or seconds > 366 * 86400:
        raise SpecError(f"{key}: {value!r} is out of range (1s..366d)")
    return math.ceil(seconds)


def _user(value: object, caller: User | None) -> User | None:
    if value is None:
        return caller
    if isinstance(value, str) and value == "image":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SpecError(f"user: expected UID[:GID[:GROUPS]] or 'image', found {_kind(value)}")
    parts = value.split(":")
    if len(parts) > 3 or not all(p.strip() for p in parts[:2]):
        raise SpecError(f"user: {value!r} is not UID[:GID[:GROUP,GROUP...]] or 'image'")
    try:
        uid = int(parts[0])
        gid = int(parts[1]) if len(parts) > 1 else uid
        groups = tuple(int(g) for g in parts[2].split(",") if g.strip()) if len(parts) > 2 else ()
    except ValueError:
        raise SpecError(f"user: {value!r}: ids are numbers (UID[:GID[:GROUPS]])") from None
    if uid == 0:
        raise SpecError(
            "user: root (uid 0) is refused: the job's pods run as non-root; give your uid, or "
            "'image' for the image's own (non-root) user"
        )
    if any(i < 0 or i > 2**31 - 1 for i in (uid, gid, *groups)):
        raise SpecError(f"user: {value!r}: ids must be between 0 and 2147483647")
    return User(uid, gid, tuple(sorted(set(groups) - {gid})))


def caller_user() -> User | None:
    """The ids of whoever runs this; None for root (then the image's user runs the job)."""
    uid = os.getuid()
    if uid == 0:
        return None
    gid = os.getgid()
    return User(uid, gid, tuple(sorted(set(os.getgroups()) - {gid})))


def _namespace(value: object) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise SpecError(f"namespace: {value!r} is not a namespace name")
    return value


def _queue(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 63 or not _DNS_SUBDOMAIN.match(value):
        raise SpecError(f"queue: {value!r} is not a LocalQueue name")
    return value


def _image(key: str, value: object, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise SpecError(f"{key}: give the container image (--{_option(key)} IMAGE)")
        return ""
    if not isinstance(value, str) or not _IMAGE.match(value) or value.endswith((":", "/", "@")):
        raise SpecError(f"{key}: {value!r} is not an image reference")
    return value


def _pull_policy(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _choice("imagePullPolicy", value, PULL_POLICIES)


def _option(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "-" + m[1].lower(), key)


def _pairs(key: str, value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise SpecError(f"{key}: expected a mapping NAME: VALUE, found {_kind(value)}")
    out = []
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise SpecError(f"{key}.{name}: expected a string value, found {_kind(item)}")
        out.append((str(name), str(item)))
    return out


def _env(value: object) -> tuple[tuple[str, str], ...]:
    pairs = _pairs("env", value)
    for name, _ in pairs:
        if not _ENV_NAME.match(name):
            raise SpecError(f"env: {name!r} is not an environment variable name")
    return tuple(pairs)


def _labels(key: str, value: object) -> tuple[tuple[str, str], ...]:
    pairs = _pairs(key, value)
    for name, item in pairs:
        if len(name) > 316 or not _LABEL_NAME.match(name):
            raise SpecError(f"{key}: {name!r} is not a label name")
        if len(item) > 63 or not _LABEL_VALUE.match(item):
            raise SpecError(f"{key}: {item!r} is not a label value (for {name})")
    return tuple(pairs)


def _annotations(key: str, value: object) -> tuple[tuple[str, str], ...]:
    pairs = _pairs(key, value)
    for name, _ in pairs:
        if len(name) > 316 or not _LABEL_NAME.match(name):
            raise SpecError(f"{key}: {name!r} is not an annotation name")
    return tuple(pairs)


def _tolerations(value: object) -> tuple[JSON, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(f"tolerations: expected a list, found {_kind(value)}")
    out = []
    allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
    for item in value:
        if not isinstance(item, dict):
            raise SpecError(
                f"tolerations: expected mappings (key, operator, effect), found {item!r}"
            )
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise SpecError(f"tolerations: unknown field {unknown[0]!r}")
        if item.get("operator", "Equal") not in ("Equal", "Exists"):
            raise SpecError(
                f"tolerations: operator {item.get('operator')!r} is not Equal or Exists"
            )
        if item.get("effect") not in (None, *_TOLERATION_EFFECTS):
            raise SpecError(
                f"tolerations: effect {item.get('effect')!r} is not one of "
                f"{', '.join(_TOLERATION_EFFECTS)}"
            )
        if "key" in item and not _LABEL_NAME.match(str(item["key"])):
            raise SpecError(f"tolerations: {item['key']!r} is not a taint key")
        out.append(dict(item))
    return tuple(out)


def parse_toleration(text: str) -> JSON:
    """``KEY[=VALUE][:EFFECT]`` (the taint's own spelling) -> a toleration; SpecError if bad."""
    rest, _, effect = text.partition(":")
    key, eq, value = rest.partition("=")
    if not key:
        raise SpecError(f"--toleration {text!r}: expected KEY[=VALUE][:EFFECT]")
    tol: JSON = {"key": key, "operator": "Equal" if eq else "Exists"}
    if eq:
        tol["value"] = value
    if effect:
        tol["effect"] = effect
    return tol


def _launcher(value: object) -> JSON:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(
            f"launcher: expected a mapping (cpu, memory, annotations), found {_kind(value)}"
        )
    unknown = sorted(str(k) for k in value if k not in LAUNCHER_KEYS)
    if unknown:
        raise SpecError(f"launcher: unknown key {unknown[0]!r} (known: {', '.join(LAUNCHER_KEYS)})")
    return {
        "cpu": _quantity("launcher.cpu", value.get("cpu")) or DEFAULT_LAUNCHER_CPU,
        "memory": _quantity("launcher.memory", value.get("memory")) or DEFAULT_LAUNCHER_MEMORY,
        "annotations": _annotations("launcher.annotations", value.get("annotations")),
    }


def _cluster_domain(value: object) -> str:
    if value is None or value == "":
        return DEFAULT_CLUSTER_DOMAIN
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise SpecError(f"clusterDomain: {value!r} is not a DNS domain")
    return value


def pairs_arg(option: str, text: str) -> tuple[str, str]:
    """``NAME=VALUE`` from a command-line option; SpecError if there is no ``=``."""
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise SpecError(f"{option} {text!r}: expected NAME=VALUE")
    return name, value
