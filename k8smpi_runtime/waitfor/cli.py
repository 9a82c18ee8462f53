"""``k8s-waitfor``: the command line. Entry point :func:`main` (console script ``k8s-waitfor``).

Known failures print one line ``k8s-waitfor: <message>`` on stderr (a table of the pods that
are not ready follows when there is one) and exit with a documented status
(:mod:`.exitcodes`); ``-v`` adds debug lines and the traceback. Progress goes to stderr too;
stdout carries only ``--hostfile-out -``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from k8smpi_runtime import __version__, clitool, hosts, selection
from k8smpi_runtime.errors import (
    ApiError,
    ConfigError,
    ForbiddenError,
    K8smpiError,
    NotFoundError,
    TransportError,
    UnauthorizedError,
)
from k8smpi_runtime.kube import rest
from k8smpi_runtime.selection import SelectionError, TargetNotFound
from k8smpi_runtime.waitfor import exitcodes, progress
from k8smpi_runtime.waitfor.denied import explain_denied
from k8smpi_runtime.waitfor.dns import Check
from k8smpi_runtime.waitfor.readiness import Rules, dns_names, pod_ips
from k8smpi_runtime.waitfor.waiting import Settings, Waiter, format_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import TextIO, TypeVar

    from k8smpi_runtime.hostfile.core import Options
    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.selection import Selected, Spec, Target
    from k8smpi_runtime.waitfor.waiting import Outcome

    T = TypeVar("T")

PROG = "k8s-waitfor"
USER_AGENT = f"{PROG}/{__version__} ({rest.USER_AGENT})"
DEFAULT_TIMEOUT = 600.0
DEFAULT_GRACE = 120.0
AUTO = "auto"
logger = logging.getLogger(PROG)

DESCRIPTION = """\
Wait until a job's pods are Ready and resolvable, then exit 0 -- or fail with the reason.

Ready means: exactly the expected pods exist, each one's Ready condition is True (not merely
phase Running), and each one's DNS name (<hostname>.<subdomain>, and the names --pods or
--hostfile use) resolves through the system resolver to the pod's current IP. One list and one
watch of the pods, never a poll per pod; a finite --timeout; fail fast when a pod cannot become
ready (Failed/Succeeded, ErrImagePull, ImagePullBackOff, CrashLoopBackOff, Unschedulable longer
than --unschedulable-grace). Needs pods: get, list, watch (+ get on a --statefulset or --job).
"""

EXAMPLES = f"""
examples:
  {PROG} --statefulset my-cnode
  {PROG} -l app=my-hpc-compute-nodes --count 16 --timeout 5m --resolve-self
  {PROG} --hostfile /opt/mpi/etc/hostfile --exec-probe
  {PROG} --statefulset my-cnode --preflight
  {PROG} --statefulset my-cnode --hostfile-out /shared/hostfile --configmap my-hostfile
"""


class Denied(K8smpiError):
    """API access denied, explained (the message names who lacks what)."""


class NothingToWaitFor(K8smpiError):
    """No such namespace, StatefulSet or Job."""


class GaveUp(K8smpiError):
    """The API server stayed unreachable until the deadline."""


# -- arguments ---------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``1.5m``, ``1m30s``, ``2h``, ``500ms`` -> seconds (> 0)."""
    value = text.strip().lower()
    total, pos = 0.0, 0
    while pos < len(value):
        m = _DURATION.match(value, pos)
        if m is None:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 90s, 10m, 1h)")
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    if not value or total <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive, not {text!r}")
    return total


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=exitcodes.EPILOG + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selection.add_arguments(parser)
    wait = parser.add_argument_group("what ready means, and for how long")
    wait.add_argument(
        "--timeout",
        type=parse_duration,
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help=f"give up after this long (default {format_duration(DEFAULT_TIMEOUT)}; 90s, 5m, 1h)",
    )
    wait.add_argument(
        "--unschedulable-grace",
        type=parse_duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="fail when a pod stays Unschedulable this long "
        f"(default {format_duration(DEFAULT_GRACE)}; raise it with a cluster autoscaler)",
    )
    wait.add_argument("--no-dns", action="store_true", help="do not check DNS names")
    wait.add_argument(
        "--resolve-self",
        nargs="?",
        const=AUTO,
        metavar="NAME",
        help="also require this pod's own name to resolve to its IP (Hydra and Intel MPI dial "
        "back to it); default name: <hostname>.<subdomain> of the launcher pod",
    )
    wait.add_argument(
        "--launcher-pod",
        metavar="NAME",
        help="the pod running this (not required to be Ready); default: $K8SMPI_POD_NAME, "
        "$POD_NAME, in a pod its hostname",
    )
    wait.add_argument(
        "--dns-parallelism",
        type=_positive_int,
        default=16,
        metavar="N",
        help="DNS lookups (and exec probes) in flight at once (default 16)",
    )
    wait.add_argument(
        "--exec-probe",
        action="store_true",
        help="once ready, run `true` in each pod through pods/exec (checks RBAC and the "
        "container before mpirun does)",
    )
    wait.add_argument(
        "-c",
        "--container",
        metavar="NAME",
        help="container for --exec-probe and --preflight (default: first)",
    )
    wait.add_argument(
        "--preflight",
        # --no-preflight too: manifests that pass --$(VAR) can switch it off (deploy/).
        action=argparse.BooleanOptionalAction,
        default=False,
        help="once ready, run k8smpi-preflight in each pod through pods/exec (GPUs against the "
        "pod's request, driver against the image's CUDA, InfiniBand, memlock, /dev/shm) and fail "
        "with the reasons on a fatal finding (default: off)",
    )
    wait.add_argument(
        "--preflight-command",
        default="k8smpi-preflight",
        metavar="CMD",
        help="what --preflight runs in each pod (default: k8smpi-preflight on the pod's PATH)",
    )
    _add_output_arguments(parser)
    shown = parser.add_argument_group("output")
    shown.add_argument(
        "--progress",
        choices=("auto", "tty", "log", "none"),
        default="auto",
        help="tty: one live line; log: a line per change and every --progress-interval; "
        "auto (default): tty on a terminal, else log",
    )
    shown.add_argument(
        "--progress-interval",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="log mode: a line at least this often (default 5s)",
    )
    shown.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, no success line; errors only"
    )
    shown.add_argument("-v", "--verbose", action="store_true", help="debug log, tracebacks")
    shown.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from k8smpi_runtime.hostfile import cli as hostfile_cli  # noqa: PLC0415

    out = hostfile_cli.add_shape_arguments(
        parser, "hostfile once ready (hostfile-gen's code and options)"
    )
    out.add_argument(
        "--hostfile-out", metavar="FILE", help="write the hostfile to FILE atomically ('-': stdout)"
    )
    out.add_argument(
        "--configmap", metavar="NAME[:KEY]", help="create or update this ConfigMap's KEY"
    )


# -- connecting --------------------------------------------------------------------------------


class Api(rest.Api):
    """The REST client, saying who it is (the audit log and the benchmark filter on it)."""

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = super().headers(extra)
        h["User-Agent"] = USER_AGENT
        return h


def load_config(args: argparse.Namespace) -> ClientConfig:
    """Credentials; the namespace: --namespace, else in-cluster, else the kubeconfig's."""
    from k8smpi_runtime.kube import config  # noqa: PLC0415 - keep --help free of TLS setup

    cfg = config.load(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
    namespace = args.namespace or config.in_cluster_namespace() or cfg.namespace
    return cfg._replace(namespace=namespace)


def retrying(fn: Callable[[], T], *, deadline: float, what: str) -> T:
    """``fn()``, retried on transport errors and 429/5xx until ``deadline`` (monotonic)."""
    delay = 0.2
    while True:
        try:
            return fn()
        except (TransportError, ApiError) as e:
            transient = (isinstance(e, TransportError) and e.retryable) or (
                isinstance(e, ApiError) and bool(e.transient)
            )
            if not transient:
                raise
            if time.monotonic() + delay >= deadline:
                raise GaveUp(f"{what}: gave up at the deadline: {e}") from e
            logger.debug("%s: %s; retrying in %.1fs", what, e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def resolve_target(api: Api, spec: Spec, namespace: str, deadline: float) -> Target:
    try:
        return retrying(
            lambda: selection.resolve(api, spec, namespace),
            deadline=deadline,
            what=f"reading {spec.describe()}",
        )
    except TargetNotFound as e:
        raise NothingToWaitFor(str(e)) from e
    except (UnauthorizedError, ForbiddenError) as e:
        kind = "statefulsets.apps" if spec.statefulset else "jobs.batch"
        option = "--statefulset" if spec.statefulset else "--job"
        needed = f"{option} needs {kind}: get, besides pods: get, list, watch"
        raise Denied(
            explain_denied(e, verb="get", resource=kind, namespace=namespace, needed=needed)
        ) from e


def namespace_probe(api: Api, namespace: str) -> Callable[[], bool | None]:
    """Whether the namespace exists: True/False, or None when we may not ask."""

    def exists() -> bool | None:
        try:
            api.get(f"/api/v1/namespaces/{namespace}")
        except NotFoundError:
            return False
        except K8smpiError:
            logger.debug("cannot tell whether namespace %s exists", namespace, exc_info=True)
            return None
        return True

    return exists


def self_checks(
    args: argparse.Namespace, api: Api, namespace: str, launcher: str | None, deadline: float
) -> tuple[tuple[str, Check], ...]:
    """The --resolve-self check: the launcher's own name, to its own IP."""
    if args.resolve_self is None:
        return ()
    if args.no_dns:
        raise ConfigError("--resolve-self checks DNS: it cannot go with --no-dns")
    pod = None
    if launcher is not None:
        try:
            pod = retrying(
                lambda: api.get(f"/api/v1/namespaces/{namespace}/pods/{launcher}"),
                deadline=deadline,
                what=f"reading pod {launcher}",
            )
        except NotFoundError:
            pod = None
        except (UnauthorizedError, ForbiddenError) as e:
            raise Denied(explain_denied(e, verb="get", resource="pods", namespace=namespace)) from e
    if args.resolve_self != AUTO:
        ips = pod_ips(pod) if pod else frozenset()
        label = f"{launcher} (self)" if launcher else "(self)"
        return ((label, Check(args.resolve_self, ips, "self")),)
    if launcher is None:
        raise ConfigError(
            "--resolve-self: not running in a pod (no $KUBERNETES_SERVICE_HOST); pass "
            "--launcher-pod NAME, set K8SMPI_POD_NAME, or give the name: --resolve-self NAME"
        )
    if pod is None:
        raise ConfigError(
            f"--resolve-self: no pod named {launcher} in namespace {namespace}; set "
            "K8SMPI_POD_NAME from the downward API (fieldRef: metadata.name)"
        )
    names = dns_names(pod)
    if not names:
        raise ConfigError(
            f"--resolve-self: pod {launcher} has no spec.subdomain, so workers cannot resolve "
            "it: give it a subdomain naming a headless Service with publishNotReadyAddresses"
        )
    uid = str((pod.get("metadata") or {}).get("uid", "self"))
    return tuple((f"{launcher} (self)", Check(n, pod_ips(pod), uid)) for n in names)


# -- output ------------------------------------------------------------------------------------


def choose_progress(args: argparse.Namespace, stream: TextIO) -> progress.Progress:
    mode = "none" if args.quiet else args.progress
    if mode == "auto":
        tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        mode = "tty" if tty else "log"
    if mode == "tty":
        return progress.LiveLine(stream)
    if mode == "log":
        return progress.LogLines(stream, interval=args.progress_interval)
    return progress.Silent()


def hostfile_plan(
    args: argparse.Namespace, launcher: str | None
) -> tuple[Options, tuple[str, str] | None]:
    """hostfile-gen's options and ConfigMap target from the arguments; SelectionError if bad."""
    from k8smpi_runtime.hostfile import cli as hostfile_cli  # noqa: PLC0415
    from k8smpi_runtime.hostfile import core, output  # noqa: PLC0415

    try:
        options = core.Options(
            slots=hostfile_cli.slot_rule(args),
            names=args.names,
            cluster_domain=args.cluster_domain,
            launcher=args.launcher,
            launcher_pod=launcher,
        )
        configmap = output.parse_configmap_arg(args.configmap) if args.configmap else None
    except ValueError as e:
        raise SelectionError(str(e)) from e
    return options, configmap


def write_hostfile(
    args: argparse.Namespace, api: Api, selected: Selected, launcher: str | None
) -> str:
    """Through hostfile-gen's code: build, render, write; a line saying what was written."""
    from k8smpi_runtime.hostfile import core, formats, output  # noqa: PLC0415

    options, configmap = hostfile_plan(args, launcher)
    hostfile = core.build(selected, options)
    text = formats.render(hostfile, args.format)
    done = []
    if configmap is not None:
        what = output.write_configmap(api, hostfile.namespace, *configmap, text)
        done.append(f"ConfigMap {configmap[0]} {what}")
    if args.hostfile_out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    elif args.hostfile_out:
        output.write_atomic(args.hostfile_out, text)
        done.append(f"wrote {args.hostfile_out}")
    hosts_slots = f"{len(hostfile.hosts)} hosts, {hostfile.total_slots} slots"
    return f"hostfile ({args.format}, {hosts_slots}): {', '.join(done) or 'stdout'}"


def _report(outcome: Outcome, stream: TextIO) -> None:
    stream.write(f"{PROG}: {outcome.message}\n")
    if outcome.code != exitcodes.OK and outcome.rows:
        stream.write(progress.table(outcome.rows))
    stream.flush()


# -- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    deadline = start + args.timeout
    spec = selection.spec_from_args(args)
    cfg = load_config(args)
    namespace = cfg.namespace
    from k8smpi_runtime.hostfile.core import detect_launcher  # noqa: PLC0415

    launcher = args.launcher_pod or detect_launcher()
    if args.hostfile_out or args.configmap:
        hostfile_plan(args, launcher)  # bad hostfile options fail now, not after the wait
    api, watch_api = Api(cfg), Api(cfg)
    try:
        target = resolve_target(api, spec, namespace, deadline)
        extra = self_checks(args, api, namespace, launcher, deadline)
        rules = Rules(
            dns=not args.no_dns,
            unschedulable_grace=args.unschedulable_grace,
            self_ref=_self_ref(launcher),
            statefulset=spec.statefulset,
        )
        settings = Settings(
            timeout=args.timeout,
            rules=rules,
            dns_parallelism=args.dns_parallelism,
            exec_probe=args.exec_probe,
            container=args.container,
            extra_checks=extra,
        )
        shown = choose_progress(args, sys.stderr)
        if isinstance(shown, progress.LogLines):
            expect = f" ({target.expected} pods)" if target.expected is not None else ""
            sys.stderr.write(
                f"{PROG}: waiting up to {format_duration(args.timeout)} for "
                f"{target.description}{expect} in namespace {namespace}"
                f"{'' if rules.dns else ' (no DNS checks)'}\n"
            )
        waiter = Waiter(
            target=target,
            settings=settings,
            api=watch_api,
            progress=shown,
            exec_config=cfg if args.exec_probe else None,
            namespace_exists=namespace_probe(api, namespace),
            start=start,
        )
        outcome = waiter.run()
        logger.debug("stats: %s; verdict at %.3f (epoch)", outcome.stats, time.time())
        if outcome.code != exitcodes.OK:
            _report(outcome, sys.stderr)
            return outcome.code
        if not args.quiet:
            _report(outcome, sys.stderr)
        if args.preflight and outcome.selected is not None:
            code = preflight(args, cfg, namespace, outcome.selected, launcher)
            if code != exitcodes.OK:
                return code
        if (args.hostfile_out or args.configmap) and outcome.selected is not None:
            line = write_hostfile(args, api, outcome.selected, launcher)
            if not args.quiet:
                sys.stderr.write(f"{PROG}: {line}\n")
        return exitcodes.OK
    finally:
        api.close()
        watch_api.close()


def preflight(
    args: argparse.Namespace,
    cfg: ClientConfig,
    namespace: str,
    selected: Selected,
    launcher: str | None,
) -> int:
    """``--preflight``: k8smpi-preflight in every ready pod; POD_FAILED with the reasons."""
    import shlex  # noqa: PLC0415

    from k8smpi_runtime.preflight import job, table  # noqa: PLC0415

    pods = [p for p in selected.pods if selection.pod_name(p) != launcher]
    plan = job.Plan(command=tuple(shlex.split(args.preflight_command)), container=args.container)
    reports = job.check_pods(cfg, namespace, pods, plan, parallelism=args.dns_parallelism)
    fatal = table.fatal_lines(reports)
    if fatal:
        sys.stderr.write(f"{PROG}: preflight: {len(fatal)} fatal finding(s)\n")
        sys.stderr.write(table.render(reports))
        sys.stderr.writelines(f"{PROG}: FATAL {line}\n" for line in fatal)
        return exitcodes.POD_FAILED
    if not args.quiet:
        sys.stderr.write(f"{PROG}: preflight passed in {len(reports)} pods\n")
    return exitcodes.OK


def _self_ref(launcher: str | None) -> hosts.HostRef | None:
    if not launcher:
        return None
    try:
        return hosts.parse_host(launcher)
    except hosts.HostError as e:
        raise ConfigError(f"launcher pod name {launcher!r}: {e}") from e


def exit_status(error: BaseException) -> int:
    """The documented exit status for a known error."""
    from k8smpi_runtime.hostfile.core import Refused  # noqa: PLC0415
    from k8smpi_runtime.hostfile.output import OutputError  # noqa: PLC0415

    if isinstance(error, NothingToWaitFor):
        return exitcodes.NOT_FOUND
    if isinstance(error, Denied | UnauthorizedError | ForbiddenError):
        return exitcodes.DENIED
    if isinstance(error, Refused | OutputError):
        return exitcodes.OUTPUT
    if isinstance(error, SelectionError | ConfigError):
        return exitcodes.USAGE
    return exitcodes.API


def main(argv: list[str] | None = None) -> int:
    """Run k8s-waitfor with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    return clitool.run_main(
        PROG,
        build_parser(),
        argv,
        run,
        exit_status,
        usage=exitcodes.USAGE,
        interrupted=exitcodes.INTERRUPTED,
    )


def console_main() -> NoReturn:
    """The console script: :func:`main`, then exit at once.

    ``os._exit`` skips tearing down the heap (thousands of cached pods) and joining idle
    threads: in an init container the job's next container starts that much sooner.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
