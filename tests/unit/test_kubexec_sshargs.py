"""kubexec's ssh grammar: every option form, and the exact argv each MPI launcher passes."""

from __future__ import annotations

import subprocess

import pytest

from k8smpi_runtime.kubexec.sshargs import (
    SSH_OPTSTRING,
    Invocation,
    UsageError,
    parse,
)


def p(*argv: str, env: dict[str, str] | None = None) -> Invocation:
    return parse(list(argv), env or {})


# --- the launchers' argv (../shared/notes/launchers-and-exec.md, ompi41-agent-argv.txt) -----

# Open MPI 4.1.4, verbatim from ompi41-agent-argv.txt (argv[0], the agent path, left off).
_URI = '"546111488.0;tcp://192.0.2.2:57441;tcp6://[fd00::2]:46301"'
ORTED_ARGS = [
    "-mca", "ess", '"env"',
    "-mca", "ess_base_jobid", '"546111488"',
    "-mca", "ess_base_vpid", "1",
    "-mca", "ess_base_num_procs", '"3"',
    "-mca", "orte_node_regex", '"vm,fakehost[1:1-2]@0(3)"',
    "-mca", "orte_hnp_uri", _URI,
    "-mca", "plm", '"rsh"',
    "--tree-spawn",
    "-mca", "routed", '"radix"',
    "-mca", "orte_parent_uri", _URI,
    "-mca", "plm_rsh_agent", '"/path/to/agent.sh"',
    "-mca", "pmix", '"^s1,s2,cray,isolated"',
]  # fmt: skip
OMPI41_DEFAULT = ["fakehost1", " orted", *ORTED_ARGS]

# Agent named ssh (ORTE adds -x), plm_rsh_args="-q -o StrictHostKeyChecking=no", hostfile
# "alice@fakehost1 port=2222": ORTE puts -p after the host.
OMPI41_SSH_NAMED = [
    "-x", "-q", "-o", "StrictHostKeyChecking=no", "alice@fakehost1", "-p", "2222",
    " orted", *ORTED_ARGS,
]  # fmt: skip

# The launching user's shell is sh/ksh: ORTE wraps the command in ( ... .profile ... ).
OMPI41_PROFILE = [
    "fakehost1", "(", "test", "!", "-r", "./.profile", "||", ".", "./.profile;",
    " orted", *ORTED_ARGS, ")",
]  # fmt: skip

# --prefix /usr: ORTE's format "%s%s%s PATH=%s/%s:$PATH ; ... ; %s %s/%s/%s" with no
# OPAL_PREFIX and no orted prefix, as one word.
OMPI41_PREFIX_WORD = (
    "    PATH=/usr/bin:$PATH ; export PATH ; "
    "LD_LIBRARY_PATH=/usr/lib:${LD_LIBRARY_PATH:-} ; export LD_LIBRARY_PATH ; "
    "DYLD_LIBRARY_PATH=/usr/lib:${DYLD_LIBRARY_PATH:-} ; export DYLD_LIBRARY_PATH ;   "
    "/usr/bin/orted"
)
OMPI41_PREFIX = ["fakehost1", OMPI41_PREFIX_WORD, *ORTED_ARGS]

# Open MPI 5 / PRRTE: the environment setup and prted in one word; FQDN kept.
PRRTE_WORD = (
    "PRTE_PREFIX=/opt/ompi;export PRTE_PREFIX;PMIX_PREFIX=/opt/ompi;export PMIX_PREFIX;"
    "LD_LIBRARY_PATH=/opt/ompi/lib:$LD_LIBRARY_PATH;export LD_LIBRARY_PATH;"
    "DYLD_LIBRARY_PATH=/opt/ompi/lib:$DYLD_LIBRARY_PATH;export DYLD_LIBRARY_PATH;"
    "/opt/ompi/bin/prted"
)
OMPI5 = [
    "w-0.mpijob.ns1.svc.cluster.local", PRRTE_WORD,
    "--prtemca", "ess", '"env"', "--prtemca", "ess_base_nspace", '"prterun-vm-1234@0"',
    "--prtemca", "ess_base_vpid", "1", "--prtemca", "ess_base_num_procs", '"3"',
    "--prtemca", "prte_hnp_uri", '"prterun-vm-1234@0.0;tcp://192.0.2.2:43111:24"',
    "--prtemca", "plm", '"ssh"', "--tree-spawn",
    "--prtemca", "prte_parent_uri", '"prterun-vm-1234@0.0;tcp://192.0.2.2:43111:24"',
]  # fmt: skip

HYDRA_ARGS = [
    '"/usr/bin/hydra_pmi_proxy"', "--control-port", "vm:46341", "--rmk", "user",
    "--launcher", "ssh", "--launcher-exec", "/usr/local/bin/kubexec", "--demux", "poll",
    "--pgid", "0", "--retries", "10", "--usize", "-2", "--pmi-port", "0",
    "--gpus-per-proc", "-2", "--proxy-id", "0",
]  # fmt: skip
MPICH_SSH = ["-x", "w-1.mpijob", *HYDRA_ARGS]  # -launcher ssh adds -x
MPICH_RSH_USER = ["alice@w-1.mpijob", *HYDRA_ARGS]  # -launcher rsh, hostfile user=alice

INTEL_ARGS = [
    "/opt/intel/mpi/bin/hydra_bstrap_proxy", "--upstream-host", "vm", "--upstream-port",
    "40411", "--pgid", "0", "--launcher", "ssh", "--launcher-number", "0", "--base-path",
    "/opt/intel/mpi/bin/", "--tree-width", "16", "--tree-level", "1", "--time-left", "-1",
    "--launch-type", "2", "--debug", "--proxy-id", "-1", "--node-id", "1",
    "--subtree-size", "1", "--upstream-fd", "7", "--launcher-exec", "/usr/local/bin/kubexec",
    "/opt/intel/mpi/bin/hydra_pmi_proxy", "--usize", "-1", "--auto-cleanup", "1",
    "--abort-signal", "9",
]  # fmt: skip
INTEL_SSH = ["-q", "-x", "w-2", *INTEL_ARGS]  # I_MPI_HYDRA_BOOTSTRAP=ssh
INTEL_SSH_USER = ["-q", "-x", "alice@w-2", *INTEL_ARGS]  # -hosts alice@w-2


@pytest.mark.parametrize(
    ("argv", "host", "user", "first_command_word"),
    [
        (OMPI41_DEFAULT, "fakehost1", None, 1),
        (OMPI41_SSH_NAMED, "fakehost1", "alice", 7),
        (OMPI41_PROFILE, "fakehost1", None, 1),
        (OMPI41_PREFIX, "fakehost1", None, 1),
        (OMPI5, "w-0.mpijob.ns1.svc.cluster.local", None, 1),
        (MPICH_SSH, "w-1.mpijob", None, 2),
        (MPICH_RSH_USER, "w-1.mpijob", "alice", 1),
        (INTEL_SSH, "w-2", None, 3),
        (INTEL_SSH_USER, "w-2", "alice", 3),
    ],
    ids=[
        "ompi41",
        "ompi41-ssh-named-port",
        "ompi41-profile",
        "ompi41-prefix",
        "ompi5",
        "mpich-ssh",
        "mpich-rsh-user",
        "intel",
        "intel-user",
    ],
)
def test_launcher_argv(
    argv: list[str], host: str, user: str | None, first_command_word: int
) -> None:
    inv = p(*argv)
    assert inv.host == host
    assert inv.user == user
    # Exactly ssh's join: single spaces, the words' own quotes and spaces untouched.
    assert inv.command == " ".join(argv[first_command_word:])
    assert inv.stdin_null is False
    assert inv.tty is None


def test_ompi41_ssh_named_options() -> None:
    inv = p(*OMPI41_SSH_NAMED)
    assert inv.port == 2222
    assert inv.quiet is True
    assert inv.ignored == ("-x", "-o StrictHostKeyChecking=no")
    assert inv.command is not None
    assert inv.command.startswith(' orted -mca ess "env" -mca ess_base_jobid')


def test_launcher_commands_are_valid_sh() -> None:
    # The joined strings are what the remote `sh -c` parses: check they parse (sh -n).
    for argv in (OMPI41_DEFAULT, OMPI41_PROFILE, OMPI41_PREFIX, OMPI5, MPICH_SSH, INTEL_SSH):
        command = p(*argv).command
        assert command is not None
        subprocess.run(["/bin/sh", "-n", "-c", command], check=True, timeout=5)


def test_ompi41_profile_command_ends_with_paren() -> None:
    command = p(*OMPI41_PROFILE).command
    assert command is not None
    assert command.startswith("( test ! -r ./.profile || . ./.profile;  orted -mca ess")
    assert command.endswith('"^s1,s2,cray,isolated" )')


def test_ompi_shell_probe() -> None:
    # plm_rsh_assume_same_shell=0 probes with one word.
    assert p("fakehost1", "echo $SHELL").command == "echo $SHELL"


# --- ssh option forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-p2222", "h"],
        ["-p", "2222", "h"],
        ["h", "-p", "2222"],
        ["h", "-p2222"],
        ["-qp", "2222", "h"],
        ["-qp2222", "h"],
        ["-o", "Port=2222", "h"],
        ["-oPort=2222", "h"],
        ["-o", "port 2222", "h"],
        ["-o", "PORT = 2222", "h"],
        ["ssh://h:2222"],
    ],
)
def test_port_forms(argv: list[str]) -> None:
    inv = p(*argv)
    assert (inv.host, inv.port, inv.command) == ("h", 2222, None)


@pytest.mark.parametrize(
    ("argv", "user"),
    [
        (["-l", "bob", "h"], "bob"),
        (["-lbob", "h"], "bob"),
        (["h", "-l", "bob"], "bob"),
        (["bob@h"], "bob"),
        (["a@b@h"], "a@b"),  # split at the last @
        (["-o", "User=bob", "h"], "bob"),
        (["-oUser=bob", "h"], "bob"),
        (["-o", "user bob", "h"], "bob"),
        (["-o", 'User="bob"', "h"], "bob"),
        (["ssh://bob@h"], "bob"),
        (["ssh://bob;fingerprint=x@h"], "bob"),
        (["ssh://b%40b@h"], "b@b"),
        # ssh keeps the first user it sees.
        (["-l", "bob", "alice@h"], "bob"),
        (["alice@h", "-l", "bob"], "alice"),
        (["-o", "User=carol", "-l", "bob", "alice@h"], "carol"),
        (["h"], None),
    ],
)
def test_user_forms(argv: list[str], user: str | None) -> None:
    inv = p(*argv)
    assert inv.host == "h"
    assert inv.user == user


@pytest.mark.parametrize(
    ("word", "host", "port"),
    [
        ("ssh://h", "h", None),
        ("ssh://h/", "h", None),
        ("ssh://[fd00::2]:22", "fd00::2", 22),
        ("ssh://[fd00::2]", "fd00::2", None),
        ("ssh://u@w-0.job.ns.svc:2200", "w-0.job.ns.svc", 2200),
        ("w-0.job.ns.svc.cluster.local.", "w-0.job.ns.svc.cluster.local.", None),
        ("fd00::2", "fd00::2", None),
        ("10.0.0.7", "10.0.0.7", None),
    ],
)
def test_host_forms(word: str, host: str, port: int | None) -> None:
    inv = p(word, "true")
    assert (inv.host, inv.port, inv.command) == (host, port, "true")


def test_flags_and_mapped_meanings() -> None:
    inv = p("-n", "-q", "-vvv", "-E", "/tmp/log", "h", "-v", "cmd")
    assert inv.stdin_null is True
    assert inv.quiet is True
    assert inv.verbosity == 4
    assert inv.log_file == "/tmp/log"
    assert inv.command == "cmd"


@pytest.mark.parametrize(
    ("argv", "tty", "force"),
    [
        ([], None, False),
        (["-t"], True, False),
        (["-tt"], True, True),
        (["-t", "-t"], True, True),
        (["-ttt"], True, False),  # OpenSSH: a -t after "force" goes back to "yes"
        (["-T"], False, False),
        (["-tT"], False, False),
        (["-Tt"], True, False),
        (["-o", "RequestTTY=force"], True, True),
        (["-o", "RequestTTY=yes"], True, False),
        (["-o", "RequestTTY=no"], False, False),
        (["-o", "RequestTTY=auto"], None, False),
        (["-o", "RequestTTY=no", "-t"], True, False),  # -t/-T beat -o RequestTTY
        (["-t", "-o", "RequestTTY=no"], True, False),
    ],
)
def test_tty(argv: list[str], tty: bool | None, force: bool) -> None:
    inv = p(*argv, "h")
    assert (inv.tty, inv.tty_force) == (tty, force)


@pytest.mark.parametrize(
    ("option", "seconds"),
    [
        ("ConnectTimeout=5", 5.0),
        ("connecttimeout 7", 7.0),
        ("CONNECTTIMEOUT=1m30s", 90.0),
        ("ConnectTimeout=2.5", 2.5),
        ("ConnectTimeout=1h", 3600.0),
        ("ConnectTimeout=0", None),
    ],
)
def test_connect_timeout(option: str, seconds: float | None) -> None:
    assert p("-o", option, "h").connect_timeout == seconds


def test_connection_attempts_and_first_value_wins() -> None:
    inv = p("-o", "ConnectionAttempts=3", "-o", "ConnectionAttempts=9", "h")
    assert inv.connection_attempts == 3
    assert p("h").connection_attempts is None
    assert p("-o", "ConnectTimeout=4", "-o", "ConnectTimeout=8", "h").connect_timeout == 4.0
    assert p("-p", "22", "-p", "2222", "h").port == 22


def test_every_ssh_flag_is_accepted() -> None:
    flags = [c for c in SSH_OPTSTRING.replace(":", "") if f"{c}:" not in SSH_OPTSTRING]
    assert len(flags) == 26
    for flag in flags:
        if flag == "V":
            continue
        inv = p(f"-{flag}", "h", f"-{flag}", "cmd")
        assert (inv.host, inv.command) == ("h", "cmd"), flag


def test_every_ssh_option_consumes_its_argument() -> None:
    with_arg = [c for c in SSH_OPTSTRING if f"{c}:" in SSH_OPTSTRING]
    assert "".join(with_arg) == "bceilmopBDEFIJLOQRSwW"
    values = {"p": "22", "o": "Foo=bar", "l": "u", "O": "check"}
    for letter in with_arg:
        value = values.get(letter, "-x")  # even a word that looks like an option
        for argv in (
            [f"-{letter}", value, "h", "cmd"],
            [f"-{letter}{value}", "h", "cmd"],
            ["h", f"-{letter}", value, "cmd"],
        ):
            inv = p(*argv)
            assert (inv.host, inv.command) == ("h", "cmd"), argv


def test_ignored_options_are_recorded() -> None:
    inv = p("-x", "-A", "-i", "~/.ssh/id", "-o", "UserKnownHostsFile=/dev/null", "h")
    assert inv.ignored == ("-x", "-A", "-i ~/.ssh/id", "-o UserKnownHostsFile=/dev/null")


def test_unknown_o_keys_are_ignored() -> None:
    inv = p("-o", "NoSuchOption=1", "-o", "BatchMode yes", "-o", "Whatever", "h")
    assert inv.ignored == ("-o NoSuchOption=1", "-o BatchMode yes", "-o Whatever")


# --- where options stop, and the command --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "host", "command"),
    [
        (["h", "ls", "-l"], "h", "ls -l"),  # options stop at the first non-option
        (["h", "--", "-p", "22"], "h", "-p 22"),
        (["--", "h", "-p", "22"], "h", "-p 22"),  # `--` before the host: no reparse
        (["h", "-q", "--", "-l"], "h", "-l"),
        (["h", "-"], "h", "-"),
        (["h", "a", "b c", "'d'", ";", "e"], "h", "a b c 'd' ; e"),
        (["h", "a", ""], "h", "a "),
        (["h", ""], "h", None),  # ssh: an empty command string is no command
        (["h", "", ""], "h", " "),
        (["h"], "h", None),
    ],
)
def test_command_join(argv: list[str], host: str, command: str | None) -> None:
    inv = p(*argv)
    assert (inv.host, inv.command) == (host, command)


def test_program_name_is_not_part_of_argv() -> None:
    # parse() takes sys.argv[1:]; whatever the launcher calls us is irrelevant.
    assert p("/usr/local/bin/kubexec", "true").host == "/usr/local/bin/kubexec"


# --- kubexec's own long options and environment -------------------------------------------


def test_long_options_both_forms() -> None:
    inv = p(
        "--namespace", "ns1", "--container=main", "--kubeconfig", "/k", "--context=c",
        "--shell", "/bin/bash", "--grace=2.5", "-q", "h", "cmd",
    )  # fmt: skip
    assert inv.namespace == "ns1"
    assert inv.container == "main"
    assert inv.kubeconfig == "/k"
    assert inv.context == "c"
    assert inv.shell == "/bin/bash"
    assert inv.grace == 2.5
    assert inv.quiet is True


def test_defaults() -> None:
    inv = p("h")
    assert (inv.namespace, inv.container, inv.kubeconfig, inv.context) == (None,) * 4
    assert (inv.shell, inv.grace, inv.forward_stdin) == ("/bin/sh", 5.0, None)


ENV = {
    "KUBEXEC_NAMESPACE": "env-ns",
    "KUBEXEC_CONTAINER": "env-c",
    "KUBEXEC_KUBECONFIG": "/env/k",
    "KUBEXEC_CONTEXT": "env-ctx",
    "KUBEXEC_SHELL": "/bin/env-sh",
    "KUBEXEC_GRACE": "0.5",
    "KUBEXEC_FORWARD_STDIN": "no",
}


def test_environment_settings() -> None:
    inv = p("h", env=ENV)
    assert inv.namespace == "env-ns"
    assert inv.container == "env-c"
    assert inv.kubeconfig == "/env/k"
    assert inv.context == "env-ctx"
    assert inv.shell == "/bin/env-sh"
    assert inv.grace == 0.5
    assert inv.forward_stdin is False


def test_flags_beat_environment() -> None:
    inv = p("--namespace=ns", "--grace", "7", "--forward-stdin", "h", env=ENV)
    assert (inv.namespace, inv.grace, inv.forward_stdin) == ("ns", 7.0, True)
    assert inv.container == "env-c"
    # A flag makes a bad variable irrelevant.
    assert p("--grace=1", "h", env={"KUBEXEC_GRACE": "soon"}).grace == 1.0


def test_empty_environment_variables_count_as_unset() -> None:
    inv = p("h", env={k: "" for k in ENV})
    assert (inv.namespace, inv.shell, inv.grace, inv.forward_stdin) == (None, "/bin/sh", 5.0, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("off", False), ("auto", None)],
)
def test_forward_stdin_environment(value: str, expected: bool | None) -> None:
    assert p("h", env={"KUBEXEC_FORWARD_STDIN": value}).forward_stdin is expected


def test_no_forward_stdin_flag() -> None:
    assert p("--no-forward-stdin", "h").forward_stdin is False


@pytest.mark.parametrize("argv", [["--help"], ["--help", "h"], ["-q", "--help", "--bogus"]])
def test_help(argv: list[str]) -> None:
    inv = p(*argv)
    assert inv.show_help is True
    assert inv.host == ""


@pytest.mark.parametrize(
    "argv", [["--version"], ["-V"], ["-V", "h", "cmd"], ["h", "-V"], ["-qVZ"], ["h", "-V", "-Z"]]
)
def test_version(argv: list[str]) -> None:
    assert p(*argv).show_version is True


def test_invocation_is_frozen() -> None:
    inv = p("h")
    with pytest.raises(AttributeError):
        inv.host = "other"  # type: ignore[misc]


# --- errors: one line, exit 255 in the CLI ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "missing host"),
        (["-q"], {}, "missing host"),
        (["-Z", "h"], {}, "unknown option -Z"),
        (["-qZ", "h"], {}, "unknown option -Z"),
        (["h", "-Z"], {}, "unknown option -Z"),
        (["h", "-p"], {}, "option -p needs an argument"),
        (["-l"], {}, "option -l needs an argument"),
        (["-p", "0", "h"], {}, "bad port '0'"),
        (["-p", "70000", "h"], {}, "bad port '70000'"),
        (["-p", "ssh", "h"], {}, "bad port 'ssh'"),
        (["ssh://h:x"], {}, "bad port 'x'"),
        (["ssh://h/path"], {}, "cannot carry a path"),
        (["ssh://[fd00::2"], {}, "bad [address]"),
        (["@h"], {}, "empty user name"),
        (["alice@"], {}, "empty host name"),
        (["-o", "User=", "h"], {}, "-o User: missing value"),
        (["-oUser", "h"], {}, "-o User: missing value"),
        (["-o", "", "h"], {}, "expected Key=Value"),
        (["-o", "ConnectTimeout=soon", "h"], {}, "ConnectTimeout=soon"),
        (["-o", "ConnectTimeout=-1", "h"], {}, "ConnectTimeout=-1"),
        (["-o", "ConnectionAttempts=0", "h"], {}, "ConnectionAttempts=0"),
        (["-o", "RequestTTY=maybe", "h"], {}, "RequestTTY=maybe"),
        (["--bogus", "h"], {}, "unknown option --bogus"),
        (["--namespace"], {}, "option --namespace needs a value"),
        (["--namespace=", "h"], {}, "needs a non-empty value"),
        (["--grace", "-1", "h"], {}, "grace: expected a number of seconds"),
        (["--grace=nan", "h"], {}, "grace: expected a number of seconds"),
        (["--help=yes"], {}, "--help takes no value"),
        (["h", "--namespace", "ns"], {}, "--namespace: kubexec's own options must come before"),
        (["h", "--grace=1", "cmd"], {}, "--grace: kubexec's own options must come before"),
        (["h"], {"KUBEXEC_GRACE": "soon"}, "grace: expected a number of seconds"),
        (["h"], {"KUBEXEC_FORWARD_STDIN": "maybe"}, "KUBEXEC_FORWARD_STDIN=maybe"),
        (["--reattach", "soon", "h"], {}, "--reattach=soon: expected seconds"),
        (["--reattach=-1", "h"], {}, "--reattach=-1: expected seconds"),
        (["--reattach=2d", "h"], {}, "--reattach=2d: at most 86400 seconds"),
        (["--reattach=86401", "h"], {}, "--reattach=86401: at most 86400 seconds"),
        (["h"], {"KUBEXEC_REATTACH": "x"}, "--reattach=x: expected seconds"),
    ],
)
def test_usage_errors(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        parse(argv, env)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert not isinstance(info.value, ValueError)


def test_reattach_window() -> None:
    # The default sits inside the bounds: a job survives an API server back within
    # 30 s; kill -9 leaves nothing after 60 s plus the grace (window + the pod's 5 s margin).
    assert 30 <= p("h").reattach == 45.0 <= 60 - 5
    assert p("--reattach", "0", "h").reattach == 0.0  # today's behaviour
    assert p("--reattach=1m30s", "h").reattach == 90.0
    assert p("h", env={"KUBEXEC_REATTACH": "20"}).reattach == 20.0
    assert p("--reattach=5", "h", env={"KUBEXEC_REATTACH": "20"}).reattach == 5.0
