"""The wrapper's session (a re-attach window > 0), run for real with the local /bin/sh.

Each exec is a process with pipes for its streams (tests/unit/wrapperkit.Exec). A lost stream
is stdin's end (what the runtime does when the exec's connection drops) with everything the
exec writes afterwards dropped on the floor, as bytes in flight are; a re-attach is a second
exec in ``attach`` mode from the offsets the first one delivered. The real path (API server
killed, containerd, kubexec) is in tests/e2e/test_real_node_reattach.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from k8smpi_runtime.kubexec import remote
from tests.unit.wrapperkit import (
    Exec,
    claims,
    kill_all,
    marked_pids,
    wait_for,
    wrapper_pids,
)

pytestmark = pytest.mark.usefixtures("no_claims_left")


GRACE = 0.3
WINDOW = 2.0
TICK = "0.3"
"""The test commands' pace (seconds between lines)."""


@pytest.fixture(autouse=True)
def _no_window_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pod's margin beyond the window (5 s) would only make these tests slower.
    monkeypatch.setattr(remote, "WINDOW_MARGIN", 0.0)


def start(command: str | None, session_id: str, *, stalled: bool = False, **kwargs: Any) -> Exec:
    options: dict[str, Any] = {
        "grace": GRACE, "uid": None, "gid": None, "groups": (), "window": WINDOW,
    }  # fmt: skip
    options.update(kwargs)
    launch = remote.build(command=command, session_id=session_id, **options)
    return Exec(launch, stalled=stalled)


def attach(session_id: str, offsets: tuple[int, int], **kwargs: Any) -> Exec:
    options: dict[str, Any] = {
        "grace": GRACE, "uid": None, "gid": None, "groups": (), "window": WINDOW,
    }  # fmt: skip
    options.update(kwargs)
    return Exec(remote.attach(session_id=session_id, offsets=offsets, **options), base=offsets)


def folder(session_id: str) -> Path:
    """The session's folder (where the wrapper claims it: /dev/shm, else /tmp)."""
    paths = [Path(d) / f".kubexec-{session_id}" for d in ("/dev/shm", "/tmp")]
    return next((p for p in paths if p.exists()), paths[0])


def commands(session_id: str) -> list[int]:
    """The command's processes: marked, but not the wrapper's relays (dd, marked too so that a
    teardown finds them)."""
    return [p for p in marked_pids(session_id) if not is_relay(p)]


def is_relay(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"dd\0bs=65536\0")
    except OSError:
        return False


def left_over(session_id: str) -> list[int]:
    """The session's processes still alive: the command's and the wrapper's."""
    return marked_pids(session_id) + list(wrapper_pids(session_id))


def lines(n: int, prefix: str = "", *, err: bool = False) -> str:
    """A command printing ``n`` numbered lines, TICK seconds apart."""
    to = " >&2" if err else ""
    return f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo {prefix}$i{to}; sleep {TICK}; done"


def expected(n: int, prefix: str = "") -> bytes:
    return b"".join(f"{prefix}{i}\n".encode() for i in range(1, n + 1))


# --- attached all along: as the direct path --------------------------------------------------


def test_streams_status_and_record_as_without_a_window(session_id: str, tmp_path: Path) -> None:
    out_bytes, err_bytes = bytes(range(256)) * 1200, os.urandom(70_000)
    (tmp_path / "out").write_bytes(out_bytes)
    (tmp_path / "err").write_bytes(err_bytes)
    ex = start(f"cat {tmp_path}/out; cat {tmp_path}/err >&2; exit 3", session_id)
    assert ex.finish() == 3
    assert (bytes(ex.out), bytes(ex.err)) == (out_bytes, err_bytes)
    assert ex.records.code == 3
    assert ex.records.lengths == (len(out_bytes), len(err_bytes))
    # The exec ended on kubexec's goodbye (said once it had all): nothing stays, but the
    # claim, which says so.
    assert ex.said_bye
    assert wait_for(lambda: not left_over(session_id), 5)
    assert [p.name for p in folder(session_id).iterdir()] == ["gone"]


def test_a_replayed_start_is_refused(session_id: str, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    first = start(f"echo run >> {log}", session_id)
    assert first.finish() == 0
    again = start(f"echo run >> {log}", session_id)
    assert again.finish() == 255
    assert again.records.code is None
    assert b"was started before in this container; not running it twice" in again.err
    assert log.read_text() == "run\n"


def test_the_command_keeps_its_default_signals(session_id: str) -> None:
    # The command runs in the wrapper's foreground: an asynchronous list would ignore SIGINT.
    ex = start("while read -r k v; do [ $k = SigIgn: ] && echo $v; done </proc/self/status; true",
               session_id)  # fmt: skip
    assert ex.finish() == 0
    assert int(ex.out.decode(), 16) & 0b110 == 0


# --- a lost stream, a re-attach ----------------------------------------------------------------


def test_a_reattach_resumes_at_the_offsets_received(session_id: str) -> None:
    first = start(f"{lines(8, 'o')} & {lines(8, 'e', err=True)}; wait; exit 7", session_id)
    assert first.wait_output(lambda e: e.out.count(b"\n") >= 3 and e.err.count(b"\n") >= 2, 10)
    offsets = first.lose()
    time.sleep(4 * float(TICK))  # the command writes on while nobody reads
    second = attach(session_id, offsets)
    assert second.finish() == 7
    assert second.records.attached == remote.Attached(0, False)
    assert second.records.code == 7
    assert bytes(first.out) + bytes(second.out) == expected(8, "o")
    assert bytes(first.err) + bytes(second.err) == expected(8, "e")
    assert first.finish() == 255  # its process ends with the session, reaped, status unused
    second.bye()
    assert wait_for(lambda: not left_over(session_id), 5)


def test_an_attach_after_the_command_ended_gets_its_status(session_id: str) -> None:
    first = start(f"{lines(2)}; echo last; exit 42", session_id)
    assert first.wait_output(lambda e: b"1\n" in e.out, 5)
    offsets = first.lose()
    assert wait_for((folder(session_id) / "done").exists, 5)
    assert not commands(session_id)  # ended while detached
    second = attach(session_id, offsets)
    assert second.finish() == 42
    assert bytes(first.out) + bytes(second.out) == b"1\n2\nlast\n"
    second.bye()
    assert wait_for(lambda: not left_over(session_id), 5)
    assert first.finish() == 255


def test_the_status_outlives_the_exec_process_the_runtime_kills(session_id: str) -> None:
    # containerd SIGKILLs an exec's own process when its stream is cut (its stream idle
    # timeout) and leaves the exec's stdin open: the command runs on, and its status and
    # output still come after a re-attach. A stream cut before the command wrote anything:
    # nothing may leak from the attach (its shell's own errors included).
    first = start(f"sleep {TICK}; {lines(3)}; exit 6", session_id)
    assert first.wait_output(lambda e: e.records.started, 5)
    first.lost = True
    offsets = first.offsets
    first.proc.kill()
    assert first.finish() == -signal.SIGKILL
    assert wait_for((folder(session_id) / "done").exists, 10)
    second = attach(session_id, offsets)
    assert second.finish() == 6
    assert (bytes(second.out), bytes(second.err)) == (expected(3), b"")
    second.bye()
    assert wait_for(lambda: not left_over(session_id), 5)


@pytest.mark.parametrize("attached", [False, True])
def test_a_killed_exec_process_starts_the_window(session_id: str, attached: bool) -> None:
    # The same kill (stdin left open, so the exec's own watcher never sees an end) and no
    # re-attach: the window runs from the kill, then the session goes, the watcher with it.
    # Also for an exec that had attached.
    ex = start("sleep 1000", session_id)
    assert ex.wait_output(lambda e: e.records.started, 5)
    if attached:
        first = ex
        first.lost = True
        ex = attach(session_id, (0, 0))
        assert ex.wait_output(lambda e: e.records.attached is not None, 5)
        first.close_stdin()  # the stream it lost ends (the attach took over before)
    ex.lost = True
    killed = time.monotonic()
    ex.proc.kill()
    assert wait_for(lambda: not left_over(session_id), WINDOW + GRACE + 5)
    assert time.monotonic() - killed >= WINDOW
    assert [p.name for p in folder(session_id).iterdir()] == ["gone"]


def test_a_status_lost_in_flight_is_sent_again(session_id: str) -> None:
    # The stream breaks after the command ended and before kubexec had the record: the
    # session keeps it for a re-attach, and the output kubexec missed with it.
    first = start("echo out; echo err >&2; exit 5", session_id, stalled=True)  # nothing arrives
    assert wait_for((folder(session_id) / "done").exists, 5)
    offsets = first.lose()
    assert offsets == (0, 0)
    second = attach(session_id, offsets)
    assert second.finish() == 5
    assert (bytes(second.out), bytes(second.err)) == (b"out\n", b"err\n")
    second.bye()
    assert wait_for(lambda: not left_over(session_id), 5)


def test_reattach_again_and_again(session_id: str) -> None:
    ex = start(lines(12), session_id)
    got = b""
    for _ in range(3):
        assert ex.wait_output(lambda e: e.out.count(b"\n") >= 1, 10)
        offsets = ex.lose()
        got += bytes(ex.out)
        ex = attach(session_id, (len(got), offsets[1]))
    assert ex.finish() == 0
    assert got + bytes(ex.out) == expected(12)


def test_an_attach_takes_over_a_stream_that_never_ended(session_id: str) -> None:
    # The old exec's stdin never ends (its runtime missed the loss): the attach still takes
    # over, and the old exec stops sending.
    first = start(lines(10), session_id)
    assert first.wait_output(lambda e: e.out.count(b"\n") >= 2, 10)
    first.lost = True  # what it sends from now on never arrives; its stdin stays open
    offsets = (len(first.out), len(first.err))
    second = attach(session_id, offsets)
    assert second.finish() == 0
    assert bytes(first.out[: offsets[0]]) + bytes(second.out) == expected(10)
    assert first.finish() == 255
    second.bye()
    first.close_stdin()
    assert wait_for(lambda: not left_over(session_id), 5)


def test_a_stalled_stream_never_blocks_the_command(session_id: str) -> None:
    # The old exec's stdout is full and never read again (the runtime stopped reading it):
    # its relay is stopped when its stdin ends; the command wrote on into the session.
    first = start("head -c 300000 /dev/zero; echo done >&2", session_id)
    first.stall()
    assert wait_for((folder(session_id) / "done").exists, 10)
    first.close_stdin()
    second = attach(session_id, (0, 0))
    assert second.finish() == 0
    assert (bytes(second.out), bytes(second.err)) == (bytes(300000), b"done\n")
    assert first.finish() == 255


# --- the window and goodbye ----------------------------------------------------------------------


def test_the_pod_waits_the_window_and_a_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "WINDOW_MARGIN", 5.0)
    sid = remote.new_session_id()
    common: dict[str, Any] = {"grace": 5, "uid": None, "gid": None, "groups": ()}
    started = remote.build(command="true", session_id=sid, window=45, **common)
    assert started.argv[-2:] == ["50000", ""]
    again = remote.attach(session_id=sid, offsets=(3, 4), window=45, **common)
    assert again.argv[-2:] == ["50000", "3,4"]
    # 0 stays 0: no session, a lost stream ends the command as before.
    assert remote.build(command="true", session_id=sid, window=0, **common).argv[-2] == "0"


def test_without_a_reattach_the_session_goes_after_the_window(session_id: str) -> None:
    ex = start("setsid sleep 1000 & exec sleep 1000", session_id)
    assert wait_for(lambda: len(commands(session_id)) == 2, 5)
    lost = time.monotonic()
    ex.lose()
    time.sleep(WINDOW - 0.5)
    assert len(commands(session_id)) == 2  # the window: it runs on
    assert wait_for(lambda: not left_over(session_id), 1 + GRACE + 3)
    took = time.monotonic() - lost
    assert took < WINDOW + 1 + GRACE + 3
    assert ex.finish() == 255
    assert [p.name for p in folder(session_id).iterdir()] == ["gone"]
    late = attach(session_id, (0, 0))
    assert late.finish() == 255
    assert late.records.attached is None
    assert b"is not in this container" in late.err


def test_goodbye_ends_the_session_at_once(session_id: str) -> None:
    window = 60.0  # far beyond a teardown's time even on a loaded machine
    ex = start("trap '' TERM; setsid sleep 1000 & exec sleep 1000", session_id, window=window)
    assert wait_for(lambda: len(commands(session_id)) == 2, 5)
    said = time.monotonic()
    ex.bye()  # kubexec went away on purpose (a signal): no window
    assert wait_for(lambda: not left_over(session_id), 20)
    assert time.monotonic() - said < window / 2
    assert ex.finish() == 255


def test_an_attach_to_a_session_that_never_was_runs_nothing(session_id: str) -> None:
    ex = attach(session_id, (0, 0))
    assert ex.finish() == 255
    assert ex.records.attached is None
    assert ex.err.decode().startswith(f"kubexec: session {session_id} is not in this container")
    assert not claims() & {Path(f"/dev/shm/.kubexec-{session_id}")}  # nor claims it


def test_the_window_restarts_when_an_attach_is_lost_again(session_id: str) -> None:
    ex = start(lines(int(3 * WINDOW / float(TICK))), session_id)
    for _ in range(2):
        assert ex.wait_output(lambda e: len(e.out) > 0, 10)
        offsets = ex.lose()
        time.sleep(WINDOW - 0.7)  # within the window each time
        ex = attach(session_id, offsets)
    assert ex.wait_output(lambda e: len(e.out) > 0, 10)
    assert commands(session_id)


# --- the buffer ---------------------------------------------------------------------------------


def test_acknowledged_output_is_dropped(session_id: str) -> None:
    burst = "head -c 3000000 /dev/zero"
    ex = start(f"{burst}; sleep 1; head -c 600000 /dev/zero; exec sleep 30", session_id)
    assert ex.wait_output(lambda e: len(e.out) == 3_000_000, 20)

    def segments() -> list[str]:
        return sorted(p.name for p in folder(session_id).glob("1.*"))

    assert len(segments()) >= 5  # all kept: nothing acknowledged
    ex.ack()
    # The pump drops acknowledged segments when it next looks (after 8 more reads).
    assert ex.wait_output(lambda e: len(e.out) == 3_600_000, 20)

    def first_kept() -> int:
        return min(int(name.split(".")[2]) for name in segments())

    # What kubexec has is gone but the segment that holds byte 3,000,000 (they end where
    # a look finds them over SEGMENT bytes: at most 8 reads of 64 KiB later).
    assert wait_for(lambda: first_kept() > 3_000_000 - remote.SEGMENT - 8 * 65536, 5), segments()
    # Only the command's `exec sleep` once the shell has replaced itself and a relay just
    # forked has become dd (until then either one counts as a command process too).
    assert wait_for(lambda: len(commands(session_id)) == 1, 5), commands(session_id)
    [sleeping] = commands(session_id)
    os.kill(sleeping, signal.SIGKILL)
    assert ex.finish() == 137


def test_a_full_buffer_blocks_the_command_until_acknowledged(session_id: str) -> None:
    size = remote.BUFFER + 4 * 1024 * 1024
    ex = start(f"head -c {size} /dev/zero; echo written >&2", session_id)
    assert ex.wait_output(lambda e: len(e.out) >= remote.BUFFER, 20)
    time.sleep(1.5)
    # Without acknowledgements the session keeps at most BUFFER (+ 8 reads of 64 KiB) and
    # the command waits: nothing is dropped.
    assert len(ex.out) < remote.BUFFER + 9 * 65536
    assert ex.err == b""
    offsets = ex.lose()
    time.sleep(0.5)
    resumed = attach(session_id, offsets)
    while resumed.proc.poll() is None:  # kubexec acknowledges as it receives
        resumed.ack()
        time.sleep(0.1)
    assert resumed.finish() == 0
    assert bytes(ex.out) + bytes(resumed.out) == bytes(size)
    assert resumed.err == b"written\n"


# --- forwarded input across a re-attach -------------------------------------------------------


def test_forwarded_input_is_neither_lost_nor_doubled(session_id: str) -> None:
    ex = start("cat", session_id, mode="forward")
    sent = os.urandom(200_000)
    ex.send(sent[:100_000])
    ex.write(remote.frame(sent[100_000:150_000])[:20_000])  # the stream breaks mid-frame
    assert ex.wait_output(lambda e: len(e.out) >= 100_000, 10)
    offsets = ex.lose()
    resumed = attach(session_id, offsets)
    assert resumed.wait_output(lambda e: e.records.attached is not None, 5)
    position, ended = resumed.records.attached  # type: ignore[misc]
    assert (position, ended) == (100_000, False)  # whole frames only
    resumed.send(sent[position:])
    resumed.end_input()
    assert resumed.finish() == 0
    assert bytes(ex.out[: offsets[0]]) + bytes(resumed.out) == sent


def test_the_end_of_input_is_kept_across_a_reattach(session_id: str) -> None:
    ex = start(f"cat; {lines(3, 'after')}", session_id, mode="forward")
    ex.send(b"in\n")
    ex.end_input()
    assert ex.wait_output(lambda e: b"after1" in e.out, 10)
    offsets = ex.lose()
    resumed = attach(session_id, offsets)
    assert resumed.finish() == 0
    assert resumed.records.attached == remote.Attached(3, True)
    assert bytes(ex.out[: offsets[0]]) + bytes(resumed.out) == b"in\n" + expected(3, "after")


def test_input_for_a_command_that_is_gone_is_dropped(session_id: str) -> None:
    ex = start("head -c 3; exit 4", session_id, mode="forward")
    ex.send(b"0123456789" * 20_000)  # more than any pipe holds; nothing blocks on it
    assert ex.finish() == 4
    assert bytes(ex.out) == b"012"
    ex.bye()
    assert wait_for(lambda: not left_over(session_id), 5)


def test_the_command_gets_no_descriptor_of_the_session(session_id: str) -> None:
    ex = start("ls /proc/$$/fd", session_id)
    assert ex.finish() == 0
    assert ex.out.decode().split() == ["0", "1", "2"]


def test_a_command_that_ends_at_once_still_ends_the_exec() -> None:
    # The keeper holds the events FIFO from its birth. It used to open it itself: a command
    # that died at once could tell its end before that open, the event was lost with the
    # FIFO's last close, and the exec never ended (about 1 exec in 120 under this load, so
    # 384 of them find it nearly always; with the fix none may hang).
    for _ in range(8):
        ids = [remote.new_session_id() for _ in range(48)]
        try:
            execs = [start("kill -KILL $$", sid) for sid in ids]
            codes = [ex.finish(timeout=15) for ex in execs]
            assert codes == [128 + signal.SIGKILL] * len(ids)
        finally:
            for sid in ids:
                kill_all(sid)
