"""``hostfile-gen``: a hostfile whose slots come from each pod's GPUs, in every MPI dialect."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import traceback
from typing import TYPE_CHECKING

from k8smpi_runtime import __version__, selection
from k8smpi_runtime.errors import (
    ApiError,
    ConfigError,
    ForbiddenError,
    K8smpiError,
    TransportError,
    UnauthorizedError,
)
from k8smpi_runtime.hostfile import core, formats, output
from k8smpi_runtime.hostfile.core import LAUNCHER_MODES, NAME_MODES, Options, Refused
from k8smpi_runtime.hostfile.output import OutputError
from k8smpi_runtime.hostfile.slots import DEFAULT_RESOURCE, QuantityError, SlotRule
from k8smpi_runtime.selection import SelectionError, TargetNotFound

if TYPE_CHECKING:
    from collections.abc import Sequence

PROG = "hostfile-gen"

#: Exit statuses (also in --help and the README).
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_API = 4
EXIT_OUTPUT = 5

EPILOG = f"""\
exit status:
  {EXIT_OK}  the hostfile was written
  {EXIT_REFUSED}  refused: no pods matched, fewer pods than expected, a pod not scheduled
     (or not Ready with --require-ready), or 0 slots in total; nothing was written
  {EXIT_USAGE}  bad arguments or configuration (options, kubeconfig, hostfile to read)
  {EXIT_DENIED}  API access denied (401/403: credentials or RBAC)
  {EXIT_API}  API server unreachable or failing
  {EXIT_OUTPUT}  the output could not be written (any previous file or ConfigMap is intact)

Slots are each pod's amount of --resource: its app containers' limits (requests where there
is no limit), summed; init containers are not counted. cpu counts whole cores, rounded down
(1500m -> 1). Pods with 0 slots are left out (listed in the header) unless --min-slots.

examples:
  hostfile-gen --statefulset my-cnode -o /tmp/hostfile
  hostfile-gen -l app=my-hpc-compute-nodes --format hydra --names fqdn
  hostfile-gen --job trainer --resource amd.com/gpu --configmap my-hostfile
"""


def add_shape_arguments(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """What the hostfile looks like: slots, names, launcher position, format.

    Shared with k8s-waitfor's ``--hostfile-out``, so the same options mean the same there;
    :func:`slot_rule` reads them back. Returns the group for the caller's output options.
    """
    group = parser.add_argument_group(title)
    how = group.add_mutually_exclusive_group()
    how.add_argument(
        "--resource",
        default=DEFAULT_RESOURCE,
        metavar="NAME",
        help=f"resource counted per pod: {DEFAULT_RESOURCE} (default), amd.com/gpu, cpu, ...",
    )
    # Ranges are SlotRule's to check (slot_rule), with one message for both tools.
    how.add_argument("--slots", type=int, metavar="N", help="N slots for every pod")
    group.add_argument(
        "--min-slots",
        type=int,
        metavar="N",
        help="at least N slots per pod (none is skipped)",
    )
    group.add_argument(
        "--max-slots",
        metavar="N|slots",
        help="cap at N and write max_slots=N (openmpi, json); 'slots': max_slots = own slots",
    )
    group.add_argument(
        "--names",
        choices=NAME_MODES,
        default="pod",
        help="pod: pod names (kubexec; default); fqdn: <hostname>.<subdomain>.<ns>.svc.<domain>;"
        " ip: pod IPs",
    )
    group.add_argument(
        "--cluster-domain",
        metavar="DOMAIN",
        help="for --names fqdn; default: from the search list in /etc/resolv.conf",
    )
    group.add_argument(
        "--launcher",
        choices=LAUNCHER_MODES,
        default="first",
        help="where the pod running this goes if it is selected (default: first)",
    )
    group.add_argument(
        "-f", "--format", choices=formats.FORMATS, default="openmpi", help="default: openmpi"
    )
    return group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Write an MPI hostfile for a job's pods, with one slot per GPU (or any resource) "
            "each pod has. Refuses to write an empty or partial hostfile."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    selection.add_arguments(parser)
    out = add_shape_arguments(parser, "hosts and output")
    out.add_argument(
        "--launcher-pod",
        metavar="NAME",
        help="the launcher pod; default: $K8SMPI_POD_NAME, $POD_NAME, in a pod its hostname",
    )
    out.add_argument(
        "--require-ready", action="store_true", help="refuse when a selected pod is not Ready"
    )
    out.add_argument("--no-header", action="store_true", help="no # comment lines at the top")
    out.add_argument(
        "-o", "--output", metavar="FILE", help="write FILE atomically instead of stdout ('-')"
    )
    out.add_argument(
        "--configmap",
        metavar="NAME[:KEY]",
        help="create or update this ConfigMap's KEY (default key: hostfile)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log, tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def slot_rule(args: argparse.Namespace) -> SlotRule:
    """The slot rule the :func:`add_shape_arguments` options describe."""
    max_slots: int | None = None
    same = False
    if args.max_slots == "slots":
        same = True
    elif args.max_slots is not None:
        try:
            max_slots = int(args.max_slots)
        except ValueError:
            raise ValueError(
                f"--max-slots takes a number or 'slots', not {args.max_slots!r}"
            ) from None
    return SlotRule(
        resource=args.resource,
        slots=args.slots,
        min_slots=args.min_slots,
        max_slots=max_slots,
        max_slots_same=same,
    )


def run(args: argparse.Namespace) -> int:
    try:
        rule = slot_rule(args)
        options = Options(
            slots=rule,
            names=args.names,
            cluster_domain=args.cluster_domain,
            launcher=args.launcher,
            launcher_pod=args.launcher_pod or core.detect_launcher(),
            require_ready=args.require_ready,
        )
        configmap = output.parse_configmap_arg(args.configmap) if args.configmap else None
    except ValueError as e:
        raise SelectionError(str(e)) from e
    spec = selection.spec_from_args(args)
    api = selection.connect(args)
    try:
        selected = selection.select(api, spec)
        hostfile = core.build(selected, options)
        text = formats.render(hostfile, args.format, header=not args.no_header)
        if configmap is not None:
            what = output.write_configmap(api, hostfile.namespace, *configmap, text)
            logging.getLogger(PROG).info("ConfigMap %s: %s", configmap[0], what)
    finally:
        api.close()
    if args.output and args.output != "-":
        output.write_atomic(args.output, text)
    elif configmap is None or args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK


def exit_status(error: BaseException) -> int:
    """The documented exit status for a known error."""
    if isinstance(error, Refused | TargetNotFound):
        return EXIT_REFUSED
    if isinstance(error, SelectionError | ConfigError | QuantityError):
        return EXIT_USAGE
    if isinstance(error, UnauthorizedError | ForbiddenError):
        return EXIT_DENIED
    if isinstance(error, TransportError | ApiError):
        return EXIT_API
    if isinstance(error, OutputError):
        return EXIT_OUTPUT
    return EXIT_API


def _message(error: K8smpiError) -> str:
    if isinstance(error, UnauthorizedError | ForbiddenError):
        return f"API access denied: {error}"
    if isinstance(error, ApiError):
        return f"API error {error.status}: {error}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    # Decoded pods hold no reference cycles: the cyclic collector would only trace thousands
    # of pod dicts again and again (half the CPU time at 5000 pods). Restored for callers.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse printed them)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"{PROG}: %(message)s",
    )
    try:
        return run(args)
    except K8smpiError as e:
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: {_message(e)}\n")
        return exit_status(e)
    except BrokenPipeError:
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
