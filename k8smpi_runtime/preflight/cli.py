"""``k8smpi-preflight``: the command line. Entry point :func:`main`.

Without a pod selection it checks the pod it runs in and prints its findings; with one
(``--statefulset``, ``--job``, ``-l``, ``--pods``, ``--hostfile``) it runs itself in every
selected pod through pods/exec and prints one table, a row per pod, worst first, followed by
one line per fatal finding. ``--json`` prints the reports as JSON instead. Known failures print
one line ``k8smpi-preflight: <message>``; ``-v`` adds debug lines and the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from k8smpi_runtime import __version__, clitool, selection
from k8smpi_runtime.errors import (
    ConfigError,
    ForbiddenError,
    K8smpiError,
    UnauthorizedError,
)
from k8smpi_runtime.preflight import exitcodes, table
from k8smpi_runtime.preflight.host import Host
from k8smpi_runtime.preflight.local import OFF, Expect, Live, launcher_checks, node_checks
from k8smpi_runtime.selection import SelectionError, TargetNotFound

if TYPE_CHECKING:
    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.preflight.model import Report

PROG = "k8smpi-preflight"
logger = logging.getLogger(PROG)

DESCRIPTION = """\
Confirm that GPUs, InfiniBand, limits and MPI will work, before mpirun.

In a pod: checks that pod (GPU devices against its nvidia.com/gpu request, the driver against
the image's CUDA, cuInit; RDMA devices, ports, kernel ABI and OFED against the image; UCX
transports; memlock, /dev/shm, open files, pids; the launcher's MPI agent variables and
hostfile). With a pod selection: runs itself in every selected pod through pods/exec and prints
a table, plus pods/exec permission (SelfSubjectAccessReview) and DNS of every worker.
"""

EXAMPLES = f"""
examples:
  {PROG}                                   # this pod
  {PROG} --gpus 4 --ranks 4                # this pod, which must see exactly 4 GPUs
  {PROG} --statefulset my-cnode            # every worker, one table, before mpirun
  {PROG} -l app=my-hpc-compute-nodes --json
"""


class Denied(K8smpiError):
    """API access denied while selecting the pods."""


class NothingToCheck(K8smpiError):
    """No pod matched, or the StatefulSet/Job does not exist."""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=exitcodes.EPILOG + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selection.add_arguments(parser, required=False)
    want = parser.add_argument_group("what the pod asked for and will use")
    want.add_argument(
        "--gpus", type=_count, metavar="N",
        help="GPUs this pod must see, exactly (default: its nvidia.com/gpu from the API when "
        "readable; across the job: each pod's own)",
    )  # fmt: skip
    want.add_argument("--gpu-source", default="--gpus", help=argparse.SUPPRESS)
    want.add_argument(
        "--hcas", type=_count, metavar="N",
        help="RDMA devices this pod must have (default: its rdma/* resources)",
    )  # fmt: skip
    want.add_argument(
        "--ranks", type=_count, metavar="N",
        help="ranks per pod, for /dev/shm and pids (default: its GPUs, at least 1)",
    )  # fmt: skip
    want.add_argument("--tls", metavar="LIST", help="UCX_TLS to check (default: $UCX_TLS)")
    want.add_argument(
        "--check-hostfile", metavar="FILE",
        help="the launcher's hostfile (default: $K8SMPI_HOSTFILE, the MPI default-hostfile "
        "variables)",
    )  # fmt: skip
    job = parser.add_argument_group("across the job")
    job.add_argument(
        "--remote-command", default=PROG, metavar="CMD",
        help=f"what runs the checks in each pod (default: {PROG} on the pod's PATH)",
    )  # fmt: skip
    job.add_argument("-c", "--container", metavar="NAME", help="container (default: first)")
    job.add_argument(
        "--parallelism", type=_count, default=16, metavar="N", help="pods checked at once (16)"
    )
    job.add_argument(
        "--exec-timeout", type=float, default=60.0, metavar="SECONDS",
        help="connect timeout of each pod's exec (60)",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="the reports as JSON on stdout")
    out.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    out.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    out.add_argument("-v", "--verbose", action="store_true", help="debug log, tracebacks")
    out.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _selected(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k) is not None for k in ("selector", "statefulset", "job", "pods", "hostfile")
    )


def _config(args: argparse.Namespace) -> ClientConfig:
    """The waiter's credentials and namespace rule (--namespace, in-cluster, kubeconfig)."""
    from k8smpi_runtime.waitfor.cli import load_config  # noqa: PLC0415 - only with the API

    return load_config(args)


def _own_request(host: Host, args: argparse.Namespace) -> Expect:
    """--gpus/--hcas, else this pod's own resources when it may read its pod."""
    expect = Expect(
        args.gpus, args.gpu_source, args.hcas, args.ranks, args.tls or host.env.get("UCX_TLS")
    )
    if args.gpus is not None or args.worker or not host.live:
        return expect
    from k8smpi_runtime.hostfile.core import detect_launcher  # noqa: PLC0415

    name = detect_launcher(host.env)
    if name is None:
        return expect
    try:
        from k8smpi_runtime.kube.rest import Api  # noqa: PLC0415
        from k8smpi_runtime.preflight.kube import gpus_of, own_pod, rdma_of  # noqa: PLC0415

        cfg = _config(args)
        api = Api(cfg)
        try:
            pod = own_pod(api, cfg.namespace, name)
        finally:
            api.close()
    except K8smpiError:
        logger.debug("cannot read this pod's spec", exc_info=True)
        return expect
    if pod is None:
        return expect
    return dataclasses.replace(
        expect,
        gpus=gpus_of(pod),
        gpu_source=f"pod {name}'s nvidia.com/gpu limit",
        hcas=args.hcas if args.hcas is not None else rdma_of(pod),
    )


def run_local(args: argparse.Namespace, host: Host, live: Live) -> list[Report]:
    from k8smpi_runtime.hostfile.core import detect_launcher  # noqa: PLC0415

    name = detect_launcher(host.env) or "(here)"
    report = node_checks(host, _own_request(host, args), live, name)
    if not args.worker:
        launcher_checks(host, report, hostfile=args.check_hostfile)
    return [report]


def run_job(args: argparse.Namespace, host: Host, live: Live) -> list[Report]:
    from k8smpi_runtime.hostfile.core import detect_launcher  # noqa: PLC0415
    from k8smpi_runtime.kube.rest import Api  # noqa: PLC0415
    from k8smpi_runtime.preflight import job, kube  # noqa: PLC0415
    from k8smpi_runtime.preflight.model import Report  # noqa: PLC0415

    spec = selection.spec_from_args(args)
    cfg = _config(args)
    api = Api(cfg)
    try:
        try:
            chosen = selection.select(api, spec, cfg.namespace)
        except TargetNotFound as e:
            raise NothingToCheck(str(e)) from e
        except (UnauthorizedError, ForbiddenError) as e:
            raise Denied(f"API access denied while selecting pods: {e}") from e
        launcher = detect_launcher(host.env)
        workers = [p for p in chosen.pods if selection.pod_name(p) != launcher]
        if not workers:
            raise NothingToCheck(f"no running pod matches {spec.describe()} in {cfg.namespace}")
        plan = job.Plan(
            command=tuple(shlex.split(args.remote_command)),
            ranks=args.ranks,
            tls=args.tls,
            container=args.container,
            timeout=args.exec_timeout,
        )
        reports = job.check_pods(cfg, cfg.namespace, workers, plan, parallelism=args.parallelism)
        if launcher is not None and host.live:
            own = node_checks(host, _own_request(host, args), live, launcher)
        else:
            own = Report(launcher or "(here)")
        launcher_checks(
            host, own, hostfile=args.check_hostfile, pods=workers, namespace=cfg.namespace
        )
        own.add(kube.check_exec_rbac(api, cfg.namespace, workers))
        own.add(kube.check_dns(workers, parallelism=args.parallelism))
        if not chosen.complete:
            from k8smpi_runtime.preflight.model import FAIL, Finding  # noqa: PLC0415

            expected = chosen.expected if chosen.expected is not None else "?"
            missing = f"; missing {', '.join(chosen.missing)}" if chosen.missing else ""
            own.add(
                Finding(
                    "preflight",
                    FAIL,
                    f"{len(chosen.pods)} running pods{missing}",
                    f"{expected} pods",
                )
            )
        return [own, *reports]
    finally:
        api.close()


def run(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise ConfigError(f"--root {args.root} is not a directory")
    host = Host(args.root.resolve())
    live = Live() if host.live else OFF
    reports = run_job(args, host, live) if _selected(args) else run_local(args, host, live)
    if args.json:
        sys.stdout.write(table.to_json(reports))
    elif len(reports) == 1 and not _selected(args):
        sys.stdout.write(f"{PROG}: {reports[0].pod}\n{table.details(reports[0])}")
    else:
        sys.stdout.write(table.render(reports))
    sys.stdout.flush()
    fatal = table.fatal_lines(reports)
    if not args.json or not args.worker:
        for line in fatal:
            sys.stderr.write(f"{PROG}: FATAL {line}\n")
    return exitcodes.FATAL if fatal else exitcodes.OK


def exit_status(error: BaseException) -> int:
    if isinstance(error, NothingToCheck):
        return exitcodes.NOT_FOUND
    if isinstance(error, Denied | UnauthorizedError | ForbiddenError):
        return exitcodes.DENIED
    if isinstance(error, SelectionError | ConfigError):
        return exitcodes.USAGE
    return exitcodes.API


def main(argv: list[str] | None = None) -> int:
    """Run k8smpi-preflight with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    return clitool.run_main(
        PROG,
        build_parser(),
        argv,
        run,
        exit_status,
        usage=exitcodes.USAGE,
        interrupted=exitcodes.INTERRUPTED,
    )


if __name__ == "__main__":
    sys.exit(main())
