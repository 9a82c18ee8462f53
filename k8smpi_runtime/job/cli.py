"""``k8smpi-job``: the command line. Entry point :func:`main` (console script ``k8smpi-job``).

Known failures print one line ``k8smpi-job: <why>`` on stderr and exit with a documented status
(:mod:`.exitcodes`); ``-v`` adds debug lines and the traceback. ``render`` writes YAML to
stdout; ``submit`` writes the job's output (the launcher's log) to stdout and its progress to
stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from k8smpi_runtime import __version__, clitool, selection
from k8smpi_runtime.errors import (
    ConfigError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from k8smpi_runtime.job import exitcodes, shared, spec
from k8smpi_runtime.job.applying import JobExists, NoSuchJob

if TYPE_CHECKING:
    from k8smpi_runtime.job.spec import JobSpec
    from k8smpi_runtime.kube.rest import Api

PROG = "k8smpi-job"

DESCRIPTION = """\
One MPI job from a batch script and an image: render its manifests, submit it and follow it to
the end, look at it, cancel it.

  k8smpi-job submit batch.sh --image IMAGE --workers 4 --gpus 4     # like sbatch --wait
  k8smpi-job render batch.sh --image IMAGE --workers 4 | kubectl apply -f -
  k8smpi-job status [NAME]    k8smpi-job logs NAME    k8smpi-job delete NAME
"""


# -- arguments ---------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and where to read more), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"{PROG}: {message} (see {self.prog} --help)\n")


def _add_connection(parser: argparse.ArgumentParser) -> None:
    selection.add_connection_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log, tracebacks")


def _add_job_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", nargs="?", help="the batch script (it calls plain mpirun)")
    job = parser.add_argument_group("the job (each also a key of the --spec file)")
    job.add_argument("-f", "--spec", metavar="FILE", help="a job spec file (YAML) with the inputs")
    job.add_argument("-J", "--name", help="job name (default: the script's file name)")
    job.add_argument("--image", help="the image of the launcher and the workers (same MPI)")
    job.add_argument("-N", "--workers", metavar="N", help="worker pods (default 1)")
    job.add_argument("--gpus", metavar="N", help="nvidia.com/gpu per worker")
    job.add_argument(
        "--resource",
        action="append",
        metavar="NAME=COUNT",
        help="another extended resource per worker, e.g. rdma/hca=1 or amd.com/gpu=8 (repeat)",
    )
    job.add_argument("--cpu", help="CPU per worker (request = limit), e.g. 16")
    job.add_argument("--memory", help="memory per worker (request = limit), e.g. 64Gi")
    job.add_argument(
        "--mpi",
        metavar="FLAVOUR",
        help=f"{', '.join(shared.FLAVOURS)} (default {spec.DEFAULT_FLAVOUR}: Open MPI 4.1 or 5): "
        "the launcher's environment and the hostfile's dialect",
    )
    job.add_argument(
        "--user",
        metavar="UID[:GID[:GROUPS]]|image",
        help="who the processes run as; default: your uid, gid and groups ('image' = the "
        "image's own user; also when you are root)",
    )
    job.add_argument("--shape", metavar="SHAPE", help="statefulset (default) or jobset")
    job.add_argument("--queue", metavar="NAME", help="a Kueue LocalQueue: gang admission")
    job.add_argument("--slots", metavar="N", help="ranks per worker (default: GPUs, or cores)")
    job.add_argument("--shm", metavar="SIZE", help="/dev/shm per worker (default: memory/2)")  # noqa: S108
    job.add_argument("-t", "--time", metavar="DURATION", help="run-time limit (default 24h)")
    job.add_argument(
        "--wait-timeout", metavar="DURATION", help="how long the waiter waits (default 10m)"
    )
    job.add_argument(
        "--keep-for", metavar="DURATION", help="a finished job's objects stay this long (1h)"
    )
    job.add_argument("--env", action="append", metavar="NAME=VALUE", help="(repeat)")
    job.add_argument(
        "--node-selector",
        action="append",
        metavar="LABEL=VALUE",
        help="run every pod of the job on nodes with this label (repeat)",
    )
    job.add_argument(
        "--toleration",
        action="append",
        metavar="KEY[=VALUE][:EFFECT]",
        help="let every pod of the job on nodes with this taint, e.g. "
        "k8smpi.dev/real-node=true:NoSchedule (repeat)",
    )
    job.add_argument("--launcher-cpu", metavar="CPU", help="the launcher's CPU request (1)")
    job.add_argument("--launcher-memory", metavar="SIZE", help="its memory request (1Gi)")
    job.add_argument(
        "--launcher-annotation", action="append", metavar="NAME=VALUE", help="(repeat)"
    )
    job.add_argument("--waiter-image", metavar="IMAGE", help=f"default {shared.WAITER_IMAGE}")
    job.add_argument(
        "--image-pull-policy",
        metavar="POLICY",
        help="every container's: Always, IfNotPresent or Never (images already on the nodes)",
    )
    job.add_argument("--cluster-domain", metavar="DOMAIN", help="default cluster.local")
    switches = parser.add_argument_group("the seed's mpiOptions (all on by default)")
    switches.add_argument(
        "--no-hostfile", action="store_true", help="no hostfile: the script names its hosts"
    )
    switches.add_argument(
        "--no-service", action="store_true", help="no headless Service (Open MPI only)"
    )
    switches.add_argument(
        "--no-dns", action="store_true", help="no DNS search path, no DNS checks (Open MPI only)"
    )
    switches.add_argument(
        "--no-kubexec", action="store_true", help="mpirun uses the image's ssh (needs sshd)"
    )
    switches.add_argument(
        "--no-preflight",
        action="store_true",
        help="the waiter does not run k8smpi-preflight in the workers (images without it)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=exitcodes.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    render = sub.add_parser(
        "render", help="print the job's manifests (for kubectl apply -f -)", formatter_class=fmt
    )
    _add_job_inputs(render)
    _add_connection(render)

    submit = sub.add_parser(
        "submit",
        help="apply the job, follow it, stream its output, exit with its exit status",
        epilog=exitcodes.EPILOG,
        formatter_class=fmt,
    )
    _add_job_inputs(submit)
    _add_connection(submit)
    submit.add_argument(
        "--keep",
        action="store_true",
        help="keep the finished job (launcher pod and logs) for --keep-for; workers end anyway",
    )
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    status = sub.add_parser("status", help="one job's state and pods, or every job's")
    status.add_argument("name", nargs="?", help="the job (default: all jobs in the namespace)")
    _add_connection(status)

    logs = sub.add_parser("logs", help="the launcher's output (the batch script's)")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="until the script ends")
    logs.add_argument("--waiter", action="store_true", help="the waiter's log instead")
    logs.add_argument("--tail", type=int, metavar="N", help="the last N lines only")
    _add_connection(logs)

    delete = sub.add_parser("delete", help="cancel the job and delete all of it")
    delete.add_argument("name")
    delete.add_argument(
        "--no-wait", action="store_true", help="do not wait until its pods are gone"
    )
    _add_connection(delete)

    own = sub.add_parser(
        "own-workers",
        help="(the launcher's sidecar) own the worker StatefulSet; delete it at the end",
    )
    own.add_argument("--statefulset", required=True, metavar="NAME")
    own.add_argument("--pod", metavar="NAME", help="this pod (default: $K8SMPI_POD_NAME)")
    _add_connection(own)
    return parser


def _pairs(option: str, values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    return dict(spec.pairs_arg(option, v) for v in values)


def cli_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The job inputs given on the command line, keyed like the spec file; None: not given."""
    resources = _pairs("--resource", args.resource)
    options = {
        key: False
        for key, off in (
            ("hostfile", args.no_hostfile),
            ("service", args.no_service),
            ("dns", args.no_dns),
            ("kubexec", args.no_kubexec),
            ("preflight", args.no_preflight),
        )
        if off
    }
    launcher = {
        k: v
        for k, v in (
            ("cpu", args.launcher_cpu),
            ("memory", args.launcher_memory),
            ("annotations", _pairs("--launcher-annotation", args.launcher_annotation)),
        )
        if v is not None
    }
    tolerations = [spec.parse_toleration(t) for t in args.toleration or []]
    return {
        "name": args.name,
        "script": args.script,
        "image": args.image,
        "workers": args.workers,
        "gpus": args.gpus,
        "resources": resources,
        "cpu": args.cpu,
        "memory": args.memory,
        "mpi": args.mpi,
        "user": args.user,
        "namespace": args.namespace,
        "shape": args.shape,
        "queue": args.queue,
        "mpiOptions": options or None,
        "slots": args.slots,
        "shm": args.shm,
        "time": args.time,
        "waitTimeout": args.wait_timeout,
        "keepFor": args.keep_for,
        "env": _pairs("--env", args.env),
        "nodeSelector": _pairs("--node-selector", args.node_selector),
        "tolerations": tolerations or None,
        "launcher": launcher or None,
        "waiterImage": args.waiter_image,
        "imagePullPolicy": args.image_pull_policy,
        "clusterDomain": args.cluster_domain,
    }


def default_namespace(args: argparse.Namespace) -> str:
    """--namespace, else the kubeconfig context's (or the pod's), else ``default``."""
    if args.namespace:
        return str(args.namespace)
    from k8smpi_runtime.kube import config  # noqa: PLC0415 - TLS setup only when needed

    try:
        cfg = config.load(kubeconfig=args.kubeconfig, context=args.context)
    except ConfigError:
        return "default"
    return config.in_cluster_namespace() or cfg.namespace


def job_spec(args: argparse.Namespace) -> JobSpec:
    file_inputs: dict[str, Any] = {}
    base_dir = None
    if args.spec:
        file_inputs = spec.load_file(args.spec)
        base_dir = str(Path(args.spec).parent)
    inputs = spec.merge(file_inputs, cli_inputs(args))
    if args.script:  # a script on the command line is relative to the working directory
        base_dir = None
    namespace = inputs.get("namespace") or default_namespace(args)
    return spec.build(
        inputs, base_dir=base_dir, default_namespace=namespace, caller=spec.caller_user()
    )


# -- running -----------------------------------------------------------------------------------


def connect(args: argparse.Namespace, namespace: str | None = None) -> tuple[Api, str]:
    """The REST client and the namespace to act in (``namespace``, else the options')."""
    if namespace:
        args.namespace = namespace
    api = selection.connect(args)
    return api, api.config.namespace


def run(args: argparse.Namespace) -> int:
    if args.command == "render":
        from k8smpi_runtime.job import render  # noqa: PLC0415

        text = render.text(job_spec(args))
        sys.stdout.write(text)
        sys.stdout.flush()
        return exitcodes.OK
    if args.command == "submit":
        from k8smpi_runtime.job import submitting  # noqa: PLC0415

        job = job_spec(args)
        api, _ = connect(args, job.namespace)
        try:
            return submitting.submit(api, job, keep=args.keep, quiet=args.quiet)
        finally:
            api.close()
    if args.command == "own-workers":
        from k8smpi_runtime.job import owning  # noqa: PLC0415

        api, ns = connect(args)
        try:
            return owning.main(api, ns, args.statefulset, pod=args.pod)
        finally:
            api.close()
    from k8smpi_runtime.job import control  # noqa: PLC0415

    api, ns = connect(args)
    try:
        if args.command == "status":
            return control.status(api, ns, args.name, sys.stdout)
        if args.command == "logs":
            return control.logs(
                api, ns, args.name, follow=args.follow, waiter=args.waiter, tail=args.tail
            )
        return control.delete(api, ns, args.name, wait=not args.no_wait)
    finally:
        api.close()


def exit_status(error: BaseException) -> int:
    from k8smpi_runtime.job.submitting import Unmet  # noqa: PLC0415

    if isinstance(error, spec.SpecError | ConfigError | Unmet):
        return exitcodes.USAGE
    if isinstance(error, UnauthorizedError | ForbiddenError):
        return exitcodes.DENIED
    if isinstance(error, JobExists):
        return exitcodes.EXISTS
    if isinstance(error, NoSuchJob | NotFoundError):
        return exitcodes.NOT_FOUND
    return exitcodes.API


def main(argv: list[str] | None = None) -> int:
    """Run k8smpi-job with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    return clitool.run_main(
        PROG,
        build_parser(),
        argv,
        run,
        exit_status,
        usage=exitcodes.USAGE,
        interrupted=exitcodes.INTERRUPTED,
    )


def console_main() -> None:
    """The console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
