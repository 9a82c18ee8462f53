"""kubexec on the devcluster: exit codes, streams, host forms, RBAC, users, and no orphans.

pods/exec runs each command as a process on this machine (podexec), so a process a test starts
"in a pod" is visible in /proc: the orphan checks look there for a token the command carries
in its environment. Worker pods ask for no GPUs (other tests share the cluster's 16).
"""

from __future__ import annotations

import fcntl
import os
import pty
import secrets
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from typing import TYPE_CHECKING

import pytest

from devcluster.client import JSON, Cluster, wait_for
from devcluster.workloads import (
    DEFAULT_NODES,
    KUBEXEC,
    kubexec_env,
    processes_with,
    run_kubexec,
    running_pods,
    statefulset,
    wait_gone,
)
from k8smpi_runtime.kube import config as kconfig
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kubexec import identity, resolve, retrying, session

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)

CLEANUP_S = 10.0
"""How long the remote side may take to disappear after kubexec did (grace is 5 s)."""


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    """One namespace for this module: 4 root workers ``w-0..3`` behind ``hpc``, one worker
    ``u-0`` that runs as uid 1000 behind ``usvc``, an Indexed Job ``ij`` behind ``jsvc``."""
    name = cluster.create_namespace("kubexec")
    try:
        objects = statefulset("w", service="hpc", replicas=4)
        objects += statefulset(
            "u",
            service="usvc",
            replicas=1,
            security_context={"runAsUser": 1000, "runAsGroup": 1000},
        )
        objects += [indexed_job("ij", "jsvc", 2)]
        cluster.apply(objects, name)
        running_pods(cluster, name, "app=w", 4)
        running_pods(cluster, name, "app=u", 1)
        running_pods(cluster, name, "job-name=ij", 2)
        yield name
    finally:
        cluster.delete_namespace(name)


def indexed_job(name: str, service: str, count: int) -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": count,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "subdomain": service,
                    "restartPolicy": "Never",
                    "nodeSelector": DEFAULT_NODES,
                    "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
                },
            },
        },
    }


def kx(cluster: Cluster, ns: str, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return run_kubexec(cluster, "--namespace", ns, *args, **kw)  # type: ignore[arg-type]


def pod_gets(cluster: Cluster, namespace: str) -> list[JSON]:
    """kubexec's own requests (its user agent) on pods in ``namespace``, exec included."""
    return [
        e
        for e in cluster.audit_events()
        if e.get("stage") == "ResponseComplete"
        and e.get("userAgent") == "k8smpi-runtime"
        and e.get("objectRef", {}).get("namespace") == namespace
        and e["objectRef"].get("resource") == "pods"
    ]


# -- exit codes and streams -------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_passes_through(cluster: Cluster, ns: str, code: int) -> None:
    proc = kx(cluster, ns, "w-0", f"exit {code}")
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr == b""


def test_a_remote_killed_by_a_signal_gives_128_plus_n(cluster: Cluster, ns: str) -> None:
    proc = kx(cluster, ns, "w-0", "kill -KILL $$")
    assert proc.returncode == 128 + signal.SIGKILL, proc.stderr


def test_command_words_are_joined_and_run_by_sh(cluster: Cluster, ns: str) -> None:
    # What launchers rely on: literal quotes and ';' in argv, re-parsed by the remote shell.
    proc = kx(cluster, ns, "w-1", "printf", '"%s|"', "a", "'b c'", ";", "echo", "$((6*7))")
    assert proc.stdout == b"a|b c|42\n", proc.stderr


def test_stdout_and_stderr_stay_apart(cluster: Cluster, ns: str) -> None:
    proc = kx(cluster, ns, "w-0", "printf out1; printf err1 >&2; printf out2; printf err2 >&2")
    assert proc.returncode == 0
    assert proc.stdout == b"out1out2"
    assert proc.stderr == b"err1err2"


def test_five_mib_of_random_bytes_through_stdin_and_back(cluster: Cluster, ns: str) -> None:
    data = os.urandom(5 * 1024 * 1024)
    before = len(cluster.exec_events(ns, "w-2"))
    start = time.monotonic()
    proc = kx(cluster, ns, "w-2", "cat", input=data, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == len(data)
    assert proc.stdout == data
    assert proc.stderr == b""
    # Forwarded stdin travels framed on the command's own exec: one exec, its own lifeline.
    events = wait_for(
        lambda: (ev := cluster.exec_events(ns, "w-2")[before:]) and ev,
        timeout=10,
        what="the exec in the audit log",
    )
    time.sleep(0.5)
    assert len(cluster.exec_events(ns, "w-2")) - before == 1
    assert len(events[0]["requestURI"]) < 2048
    print(f"5 MiB round trip: {elapsed:.2f} s")


def test_stdin_eof_is_delivered(cluster: Cluster, ns: str) -> None:
    proc = kx(cluster, ns, "w-1", "wc -c; echo done", input=b"x" * 1000)
    assert proc.stdout.split() == [b"1000", b"done"], proc.stderr


def test_dash_n_reads_no_stdin(cluster: Cluster, ns: str) -> None:
    proc = kx(cluster, ns, "-n", "w-1", "cat; echo end", input=b"not for you")
    assert (proc.returncode, proc.stdout) == (0, b"end\n"), proc.stderr


def requests_of(cluster: Cluster, ns: str, before: int, count: int) -> list[tuple[str, str]]:
    """kubexec's requests on pods after the first ``before``: (verb, subresource)."""
    wait_for(
        lambda: len(pod_gets(cluster, ns)) - before >= count,
        timeout=10,
        what="kubexec's requests in the audit log",
    )
    time.sleep(0.5)
    events = pod_gets(cluster, ns)[before:]
    return [(e["verb"], e["objectRef"].get("subresource", "")) for e in events]


def test_lifeline_mode_into_a_pod_name_is_one_exec(cluster: Cluster, ns: str) -> None:
    """A pod name (what launchers pass) is exec'd into at once: no lookup before."""
    before = len(pod_gets(cluster, ns))
    proc = kx(cluster, ns, "w-3", "true")
    assert proc.returncode == 0, proc.stderr
    assert requests_of(cluster, ns, before, 1) == [("get", "exec")]


def test_a_refused_exec_is_looked_up_and_made_again(cluster: Cluster, ns: str) -> None:
    """Several containers (the default-container annotation picks one) or a hostname that is
    not a pod name: the first exec is refused before anything runs, the lookup finds the pod."""
    two = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "two",
            "annotations": {"kubectl.kubernetes.io/default-container": "second"},
        },
        "spec": {
            "nodeSelector": DEFAULT_NODES,
            "containers": [
                {"name": n, "image": "k8smpi/cpu:dev", "env": [{"name": "WHICH", "value": n}]}
                for n in ("first", "second")
            ],
        },
    }
    cluster.apply([two], ns)
    try:
        wait_for(
            lambda: cluster.get("pod", "two", "-n", ns)["status"].get("phase") == "Running",
            timeout=60,
            what="pod two Running",
        )
        before = len(pod_gets(cluster, ns))
        proc = kx(cluster, ns, "two", "echo $WHICH")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"second\n", b"")
        assert requests_of(cluster, ns, before, 3) == [
            ("get", "exec"),
            ("get", ""),
            ("get", "exec"),
        ]
    finally:
        cluster.kubectl("delete", "pod", "two", "-n", ns, "--wait=false")
    proc = kx(cluster, ns, "ij-1", "hostname")  # an Indexed Job pod's hostname
    assert (proc.returncode, proc.stdout) == (0, b"ij-1\n"), proc.stderr


def test_unknown_pod_fails_fast_with_one_line(cluster: Cluster, ns: str) -> None:
    start = time.monotonic()
    proc = kx(cluster, ns, "no-such-pod", "true")
    elapsed = time.monotonic() - start
    assert proc.returncode == 255
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "no-such-pod" in lines[0]
    assert ns in lines[0]


def test_a_pod_that_is_not_running_is_named(cluster: Cluster, ns: str) -> None:
    pending = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pending"},
        "spec": {
            "nodeSelector": {"no-such-label": "x"},
            "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
        },
    }
    cluster.apply([pending], ns)
    try:
        proc = kx(cluster, ns, "pending", "true")
        assert proc.returncode == 255
        assert proc.stderr.decode().splitlines() == [
            f"kubexec: pod {ns}/pending (pending) is not Running (phase Pending)"
        ]
    finally:
        cluster.kubectl("delete", "pod", "pending", "-n", ns, "--wait=false")


# -- host forms -------------------------------------------------------------------------------


def test_host_forms(cluster: Cluster, ns: str) -> None:
    domain = cluster.state.get("cluster_domain", "cluster.local")
    ip = cluster.get("pod", "w-2", "-n", ns)["status"]["podIP"]
    forms = {
        "w-1": "w-1",
        "w-1.hpc": "w-1",
        f"w-1.hpc.{ns}": "w-1",
        f"w-1.hpc.{ns}.svc": "w-1",
        f"w-1.hpc.{ns}.svc.{domain}": "w-1",
        f"w-1.hpc.{ns}.svc.{domain}.": "w-1",
        "root@w-3.hpc": "w-3",
        ip: "w-2",
        "ij-1.jsvc": "ij-1",  # an Indexed Job pod: its hostname is not its name
        f"ij-0.jsvc.{ns}.svc.{domain}": "ij-0",
    }
    for host, hostname in forms.items():
        proc = kx(cluster, ns, host, "hostname")
        assert (proc.returncode, proc.stdout.decode().strip()) == (0, hostname), (
            f"{host}: {proc.stderr.decode()}"
        )


def test_namespace_from_the_fqdn_beats_the_flag(cluster: Cluster, ns: str) -> None:
    proc = run_kubexec(cluster, "--namespace", "default", f"w-0.hpc.{ns}.svc", "hostname")
    assert proc.stdout == b"w-0\n", proc.stderr
    proc = run_kubexec(cluster, "w-0", "true", env={"KUBEXEC_NAMESPACE": ns})
    assert proc.returncode == 0, proc.stderr


# -- RBAC -------------------------------------------------------------------------------------


def test_missing_permissions_are_named_one_by_one(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "serviceaccount", "launcher", "-n", ns)
    token = cluster.kubectl("create", "token", "launcher", "-n", ns).stdout.decode().strip()
    kubeconfig = cluster.token_kubeconfig(token, ns)
    who = f"service account {ns}/launcher"

    def attempt() -> list[str]:
        proc = run_kubexec(cluster, "w-0", "echo ok", env={"KUBECONFIG": str(kubeconfig)})
        return [str(proc.returncode), *proc.stderr.decode().splitlines(), proc.stdout.decode()]

    start = time.monotonic()
    rc, line, _ = attempt()
    assert time.monotonic() - start < 5
    assert rc == "255"
    assert line.startswith(f"kubexec: {who} may not get pods in namespace {ns}")
    rules = [("pods", "get,list")]
    for resource, verbs, missing in (
        ("pods/exec", "get", f"{who} may not get pods/exec in namespace {ns}"),
        ("pods/exec", "create", f"{who} may not create pods/exec in namespace {ns}"),
    ):
        grant(cluster, ns, rules)
        rc, line, _ = wait_for(
            lambda m=missing: (a := attempt()) and m in a[1] and a,  # type: ignore[misc]
            timeout=20,
            what=f"the refusal to name {missing}",
        )
        assert rc == "255"
        rules.append((resource, verbs))
    grant(cluster, ns, rules)
    # The documented minimum is enough: pods get/list, pods/exec create/get.
    result = wait_for(
        lambda: (a := attempt()) and a[0] == "0" and a, timeout=20, what="the exec to work"
    )
    assert result == ["0", "ok\n"]


def grant(cluster: Cluster, ns: str, rules: list[tuple[str, str]]) -> None:
    role: JSON = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "launcher"},
        "rules": [],
    }
    merged: dict[str, set[str]] = {}
    for resource, verbs in rules:
        merged.setdefault(resource, set()).update(verbs.split(","))
    role["rules"] = [
        {"apiGroups": [""], "resources": [r], "verbs": sorted(v)} for r, v in merged.items()
    ]
    binding: JSON = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "launcher"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "launcher"},
        "subjects": [{"kind": "ServiceAccount", "name": "launcher", "namespace": ns}],
    }
    cluster.apply([role, binding], ns)


# -- users ------------------------------------------------------------------------------------


def test_runasuser_pod_runs_as_its_user(cluster: Cluster, ns: str) -> None:
    # kubexec as root asks for nothing: the container's user (as kubectl exec).
    proc = kx(cluster, ns, "u-0", "id -u; id -g")
    assert proc.stdout.split() == [b"1000", b"1000"], proc.stderr
    # The same uid as the container: nothing to switch.
    proc = kx(cluster, ns, "-l", "1000", "u-0", "id -u")
    assert proc.stdout == b"1000\n", proc.stderr
    # Another uid in a non-root container: impossible, and the message says how to fix it.
    proc = kx(cluster, ns, "2000@u-0", "id -u")
    assert proc.returncode == 255
    assert proc.stdout == b""
    assert b"securityContext.runAsUser=2000" in proc.stderr


def test_root_container_switches_to_the_target_user(cluster: Cluster, ns: str) -> None:
    # A uid without a passwd entry: numeric ids work, HOME=/ and USER=<uid>.
    proc = kx(cluster, ns, "-l", "4242", "w-0", 'id -u; id -g; echo "$HOME $USER $LOGNAME"')
    assert proc.stdout.decode().splitlines() == ["4242", "4242", "/ 4242 4242"], proc.stderr
    # A name from this (the launcher's) machine's passwd: its uid, gid and home.
    proc = kx(cluster, ns, "-o", "User=nobody", "w-0", "id -u; id -g; echo $HOME")
    assert proc.stdout.decode().split() == ["65534", "65534", "/nonexistent"], proc.stderr
    proc = kx(cluster, ns, "-l", "no-such-user-kx", "w-0", "true")
    assert proc.returncode == 255
    assert len(proc.stderr.splitlines()) == 1
    assert b"unknown user 'no-such-user-kx'" in proc.stderr


def test_default_identity_as_non_root_is_switched_to(cluster: Cluster, ns: str) -> None:
    """kubexec running as uid 4242 (in-process: this machine's Python lives under /root, out
    of a non-root user's reach) asks a root container for 4242 and gets it."""
    cfg = kconfig.load(kubeconfig=str(cluster.kubeconfig))
    ident = identity.Identity(uid=4242, gid=4343, groups=(4343, 4444))
    r, w = os.pipe()
    request = session.Request(
        target=resolve.Target(ns, "w-1", None),
        command="id -u; id -g; id -G",
        identity=ident,
        mode="lifeline",
    )
    try:
        code = session.run(
            cfg, request, policy=retrying.Policy(attempts=1), streams=session.Streams(stdout=w)
        )
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode().split()
    assert code == 0
    assert out[:2] == ["4242", "4343"]
    assert sorted(out[2:]) == ["4343", "4444"]


# -- no orphans -------------------------------------------------------------------------------


def start_kubexec(
    cluster: Cluster,
    ns: str,
    host: str,
    command: str,
    *,
    forward: bool,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(KUBEXEC), "--namespace", ns, *extra, host, command],
        stdin=subprocess.PIPE if forward else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=kubexec_env(cluster),
    )


def orphan_command(token: str, *, ignore_term: bool = False) -> str:
    """A foreground command, a background child and one that called setsid, all marked."""
    trap = "trap '' TERM; " if ignore_term else ""
    return (
        f"{trap}KXT={token} sleep 600 & KXT={token} setsid sleep 601 & KXT={token} exec sleep 602"
    )


def test_kill_9_of_kubexec_leaves_nothing_20_trials(cluster: Cluster, ns: str) -> None:
    failures: list[str] = []
    took: list[float] = []
    for trial in range(20):
        token = f"kx{secrets.token_hex(6)}"
        forward = trial % 2 == 1  # odd trials forward stdin (framed, on the same exec)
        ignore_term = trial in (7, 14)  # TERM ignored: KILL after --grace
        proc = start_kubexec(
            cluster,
            ns,
            f"w-{trial % 4}",
            orphan_command(token, ignore_term=ignore_term),
            forward=forward,
            # --reattach 0: today's lifeline, at once. With a window the pod first waits for a
            # re-attach (tests/e2e/test_real_node_reattach.py checks that bound).
            extra=("--grace", "1", "--reattach", "0"),
        )
        try:
            wait_for(
                lambda t=token, p=proc: len(processes_with(t)) >= 3 or p.poll() is not None,  # type: ignore[misc]
                timeout=20,
                what=f"trial {trial}: 3 marked processes",
            )
            assert proc.poll() is None, (
                f"trial {trial}: kubexec exited {proc.returncode}: {proc.communicate()[1]!r}"
            )
        finally:
            proc.kill()
            proc.wait(timeout=10)
        start = time.monotonic()
        left = wait_gone(token, CLEANUP_S)
        took.append(time.monotonic() - start)
        if left:
            failures.append(f"trial {trial} (forward={forward}): {left}")
            for entry in left:
                os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)
    assert not failures, failures
    print(f"cleanup after kill -9: max {max(took):.2f}s, median {sorted(took)[10]:.2f}s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_exit_255_fast_and_clean_up(
    cluster: Cluster, ns: str, signum: signal.Signals
) -> None:
    token = f"kx{secrets.token_hex(6)}"
    proc = start_kubexec(cluster, ns, "w-3", orphan_command(token), forward=False)
    try:
        wait_for(lambda: len(processes_with(token)) >= 3, timeout=20, what="marked processes")
        start = time.monotonic()
        proc.send_signal(signum)
        rc = proc.wait(timeout=5)
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    assert rc == 255
    assert elapsed < 2, f"kubexec took {elapsed:.2f}s to leave"
    assert proc.stderr is not None
    assert proc.stderr.read() == b""
    assert wait_gone(token, CLEANUP_S) == []


def test_daemonized_processes_are_left_alone(cluster: Cluster, ns: str) -> None:
    """``orted --daemonize`` (tree spawn off) must survive its agent: the command ended
    normally, so the lifeline stands down and what it detached on purpose stays."""
    token = f"kx{secrets.token_hex(6)}"
    proc = kx(
        cluster,
        ns,
        "w-0",
        f"KXT={token} setsid sleep 30 </dev/null >/dev/null 2>&1 &",
    )
    assert proc.returncode == 0, proc.stderr
    time.sleep(1.5)
    left = processes_with(token)
    assert left, "the detached daemon did not survive kubexec's exit"
    for entry in left:
        os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)


# -- tty --------------------------------------------------------------------------------------


def test_interactive_shell_with_a_tty_and_window_size(cluster: Cluster, ns: str) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
    proc = subprocess.Popen(
        [str(KUBEXEC), "--namespace", ns, "w-2"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=kubexec_env(cluster),
        start_new_session=True,
    )
    os.close(follower)
    out = b""
    try:
        # kubexec puts the local terminal in raw mode, then the remote shell prompts.
        wait_for(
            lambda: not termios.tcgetattr(leader)[3] & termios.ECHO,
            timeout=20,
            what="kubexec to put the terminal in raw mode",
        )
        out = read_until(leader, b"# ", 20)
        # Arithmetic, so the markers come from the remote shell, not from echoed input.
        os.write(leader, b"stty size; tty >/dev/null && echo $((40+2))tty\n")
        out += read_until(leader, b"42tty\r\n", 20)
        fcntl.ioctl(leader, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(leader, b"stty size; exit 7\n")
        out += read_until(leader, b"40 100\r\n", 20)
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.wait()
        os.close(leader)
    assert b"33 77\r\n42tty\r\n" in out, out
    assert b"40 100\r\n" in out, out
    assert rc == 7


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


# -- the v4 fallback --------------------------------------------------------------------------


def test_v4_lifeline_exit_codes_and_cleanup(cluster: Cluster, ns: str) -> None:
    """An API server that speaks only v4.channel.k8s.io: the lifeline needs no half-close."""
    cfg = kconfig.load(kubeconfig=str(cluster.kubeconfig))
    for command, expected in (("exit 42", 42), ("echo hi", 0)):
        request = session.Request(
            target=resolve.Target(ns, "w-0", None),
            command=command,
            identity=identity.Identity(),
            mode="lifeline",
        )
        r, w = os.pipe()
        try:
            code = session.run(
                cfg,
                request,
                policy=retrying.Policy(attempts=1),
                streams=session.Streams(stdout=w),
                subprotocols=(kexec.V4,),
            )
        finally:
            os.close(w)
        os.close(r)
        assert code == expected


def run_v4_forward(cluster: Cluster, ns: str, command: str, data: bytes, *, close: bool = True
                   ) -> tuple[int, bytes]:  # fmt: skip
    """``command`` in w-1 over v4 only, local stdin forwarded from ``data`` (then EOF if
    ``close``); the exit code and stdout."""
    cfg = kconfig.load(kubeconfig=str(cluster.kubeconfig))
    request = session.Request(
        target=resolve.Target(ns, "w-1", None),
        command=command,
        identity=identity.Identity(),
        mode="forward",
    )
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    out: list[bytes] = []

    def feed() -> None:
        with os.fdopen(in_w, "wb") as f:
            try:
                f.write(data)
            except BrokenPipeError:
                return
            if not close:
                time.sleep(30)

    def drain() -> None:
        with os.fdopen(out_r, "rb") as f:
            out.append(f.read())

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    try:
        code = session.run(
            cfg,
            request,
            policy=retrying.Policy(attempts=1),
            streams=session.Streams(stdin=in_r, stdout=out_w),
            subprotocols=(kexec.V4,),
        )
    finally:
        os.close(out_w)
        os.close(in_r)
    threads[1].join(10)
    return code, b"".join(out)


def test_v4_forwarded_stdin_is_framed_and_ends(cluster: Cluster, ns: str) -> None:
    """v4 cannot half-close stdin: kubexec frames it, and the command still sees EOF."""
    data = os.urandom(1024 * 1024 + 17)
    assert run_v4_forward(cluster, ns, "cat", data) == (0, data)
    assert run_v4_forward(cluster, ns, "wc -c; exit 3", b"x" * 70_000) == (3, b"70000\n")
    # A command that stops reading early finishes although local stdin stays open.
    start = time.monotonic()
    code, out = run_v4_forward(cluster, ns, "head -c 5", b"abcdefgh" * 1000, close=False)
    assert (code, out) == (0, b"abcde")
    assert time.monotonic() - start < 10


def test_closed_local_stdout_ends_the_remote(cluster: Cluster, ns: str) -> None:
    """``kubexec pod yes | head -1``: kubexec leaves (255) and the remote ``yes`` is gone."""
    token = f"kx{secrets.token_hex(6)}"
    proc = subprocess.Popen(
        [str(KUBEXEC), "--namespace", ns, "w-2", f"KXT={token} yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kubexec_env(cluster),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()
    try:
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
    assert rc == 255
    assert proc.stderr is not None
    assert proc.stderr.read().decode().startswith("kubexec: local stdout was closed")
    assert wait_gone(token, CLEANUP_S) == []
