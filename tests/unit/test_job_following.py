"""Where a job stands, from its owner and its pods (pure), as submit and status report it."""

from __future__ import annotations

from typing import Any

from k8smpi_runtime.job import exitcodes, following, shared
from k8smpi_runtime.job.following import (
    ENDING,
    FAILED,
    PLACING,
    QUEUED,
    RUNNING,
    STARTING,
    SUCCEEDED,
)

JSON = dict[str, Any]


def pod(
    name: str,
    role: str,
    *,
    node: str | None = "n0",
    created: str = "2026-01-01T00:00:00Z",
    gated: bool = False,
    scheduled: JSON | None = None,
    init: list[JSON] | None = None,
    main: JSON | None = None,
    phase: str = "Running",
    reason: str | None = None,
) -> JSON:
    spec: JSON = {"nodeName": node} if node else {}
    if gated:
        spec["schedulingGates"] = [{"name": shared.KUEUE_GATE}]
    status: JSON = {"phase": phase, "conditions": [scheduled] if scheduled else []}
    if init is not None:
        status["initContainerStatuses"] = init
    if main is not None:
        status["containerStatuses"] = [{"name": "launcher", "state": main}]
    if reason:
        status["reason"] = reason
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {shared.JOB_LABEL: "j", shared.ROLE_LABEL: role},
        },
        "spec": spec,
        "status": status,
    }


def owner(*conditions: tuple[str, str, str], suspend: bool = False) -> JSON:
    return {
        "metadata": {"name": "j-launcher"},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions
            ]
        },
    }


UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
}


def workers(n: int, placed: int) -> list[JSON]:
    return [
        pod(
            f"j-cnode-{i}",
            "worker",
            node="n" if i < placed else None,
            scheduled=None if i < placed else UNSCHEDULABLE,
            phase="Running" if i < placed else "Pending",
        )
        for i in range(n)
    ]


def test_placing_names_the_schedulers_reason() -> None:
    state = following.assess(owner(), workers(3, 1), workers=3)
    assert state.phase == PLACING
    assert state.workers_placed == 1
    assert "1/3 workers placed" in state.detail
    assert (
        "j-cnode-1 (Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
        in state.detail
    )
    assert [r.pod for r in state.rows] == ["j-cnode-1", "j-cnode-2"]
    assert not state.over


def test_missing_workers_are_counted() -> None:
    state = following.assess(owner(), workers(1, 1), workers=3)
    assert state.phase == PLACING
    assert "(2 more)" in state.detail


def test_queued_by_kueue_gates_or_suspension() -> None:
    gated = [
        pod("j-cnode-0", "worker", node=None, gated=True, phase="Pending"),
        pod("j-launcher-x", "launcher", node=None, gated=True, phase="Pending"),
    ]
    state = following.assess(owner(), gated, workers=1, queue_name="team-a")
    assert state.phase == QUEUED
    assert "Kueue holds all 2 pods in queue team-a" in state.detail
    state = following.assess(owner(suspend=True), [], workers=4, queue_name="q")
    assert state.phase == QUEUED and "no pod is created" in state.detail


def test_starting_then_running() -> None:
    waiting = {"waiting": {"reason": "PodInitializing"}}
    launcher = pod("j-launcher-x", "launcher", main=waiting)
    state = following.assess(owner(), [*workers(2, 2), launcher], workers=2)
    assert state.phase == STARTING
    assert "the waiter checks them" in state.detail
    assert not state.output_ready
    running = pod("j-launcher-x", "launcher", main={"running": {}})
    state = following.assess(owner(), [*workers(2, 2), running], workers=2)
    assert state.phase == RUNNING and state.output_ready and state.launcher_pod == "j-launcher-x"


def test_image_trouble_is_named() -> None:
    launcher = pod(
        "j-launcher-x",
        "launcher",
        init=[
            {
                "name": "waiter",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no"}},
            }
        ],
        main={"waiting": {"reason": "PodInitializing"}},
    )
    state = following.assess(owner(), [*workers(1, 1), launcher], workers=1)
    assert state.phase == STARTING
    assert "container waiter: ImagePullBackOff: no" in state.detail


def test_succeeded_with_the_scripts_status() -> None:
    done = pod("j-launcher-x", "launcher", main={"terminated": {"exitCode": 0}}, phase="Succeeded")
    state = following.assess(owner(("Complete", "", "")), [done], workers=2)
    assert (state.phase, state.code) == (SUCCEEDED, 0)
    # A script that ended before anyone looked: its output is still to be read.
    assert state.output_ready and state.launcher_pod == "j-launcher-x"


def test_failed_with_the_scripts_status() -> None:
    done = pod("j-launcher-x", "launcher", main={"terminated": {"exitCode": 3}}, phase="Failed")
    state = following.assess(owner(("FailureTarget", "PodFailurePolicy", "")), [done], workers=2)
    assert (state.phase, state.code) == (FAILED, 3)
    assert state.detail == "the batch script exited 3"


def test_waiter_failure_is_not_run_with_its_last_lines() -> None:
    message = (
        "k8s-waitfor: 5.0s ready 2/3; pending: j-cnode-2 (Unschedulable)\n"
        "k8s-waitfor: timed out after 20s: 1 of 3 pods not ready\n"
        "  POD        PHASE    WHY\n"
        "  j-cnode-2  Pending  Unschedulable: 0/4\n"
    )
    launcher = pod(
        "j-launcher-x",
        "launcher",
        init=[
            {"name": "own-workers", "state": {"running": {}}},
            {"name": "waiter", "state": {"terminated": {"exitCode": 6, "message": message}}},
        ],
        main={"waiting": {"reason": "PodInitializing"}},
        phase="Failed",
    )
    state = following.assess(owner(("Failed", "PodFailurePolicy", "x")), [launcher], workers=3)
    assert (state.phase, state.code) == (FAILED, exitcodes.NOT_RUN)
    assert state.detail == (
        "the waiter exited 6 before the script ran: "
        "k8s-waitfor: timed out after 20s: 1 of 3 pods not ready"
    )
    assert state.more == "  POD        PHASE    WHY\n  j-cnode-2  Pending  Unschedulable: 0/4"


def _waiter_failed(message: str) -> following.State:
    launcher = pod(
        "j-launcher-x",
        "launcher",
        init=[
            {"name": "own-workers", "state": {"running": {}}},
            {"name": "waiter", "state": {"terminated": {"exitCode": 7, "message": message}}},
        ],
        main={"waiting": {"reason": "PodInitializing"}},
        phase="Failed",
    )
    return following.assess(owner(("Failed", "PodFailurePolicy", "x")), [launcher], workers=2)


def test_preflight_failure_is_one_line_then_its_table() -> None:
    """k8s-waitfor --preflight's output: the first fatal finding is the verdict."""
    message = (
        "k8s-waitfor: 2/2 pods Ready and resolvable, exec probe passed after 0.3s\n"
        "k8s-waitfor: preflight: 2 fatal finding(s)\n"
        "pod         gpu   cuda\n"
        "j-cnode-0   FAIL  absent\n"
        "j-cnode-1   FAIL  absent\n"
        "k8s-waitfor: FATAL j-cnode-0: gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)\n"
        "k8s-waitfor: FATAL j-cnode-1: gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)\n"
    )
    state = _waiter_failed(message)
    assert (state.phase, state.code) == (FAILED, exitcodes.NOT_RUN)
    assert state.detail == (
        "the waiter exited 7 before the script ran: preflight: j-cnode-0: gpu: found 0 GPUs, "
        "expected 1 (nvidia.com/gpu limit) (and 1 more)"
    )
    assert state.more.splitlines() == [
        "pod         gpu   cuda",
        "j-cnode-0   FAIL  absent",
        "j-cnode-1   FAIL  absent",
        "k8s-waitfor: FATAL j-cnode-1: gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)",
    ]


def test_preflight_missing_from_the_image_says_how_to_go_without() -> None:
    state = _waiter_failed(
        "k8s-waitfor: preflight: 1 fatal finding(s)\n"
        "k8s-waitfor: FATAL j-cnode-0: preflight: `k8smpi-preflight` not found in the pod "
        "(exit 127), expected the k8smpi tools in the image\n"
    )
    assert state.detail.endswith(
        "; for an image without the k8smpi tools, submit with --no-preflight"
    )


def test_script_or_waiter_ended_and_workers_released_is_not_placing() -> None:
    """After the script (or a failed waiter), the sidecar deletes the workers before the Job
    says it is over."""
    ended = pod("j-launcher-x", "launcher", main={"terminated": {"exitCode": 0}})
    state = following.assess(owner(), [ended], workers=2)
    assert (state.phase, state.detail) == (ENDING, "the batch script exited 0 in j-launcher-x")
    assert state.output_ready and not state.over
    waiter_failed = pod(
        "j-launcher-x",
        "launcher",
        init=[
            {"name": "own-workers", "state": {"running": {}}},
            {"name": "waiter", "state": {"terminated": {"exitCode": 7}}},
        ],
        main={"waiting": {"reason": "PodInitializing"}},
    )
    state = following.assess(owner(), [waiter_failed], workers=2)
    assert (state.phase, state.detail) == (ENDING, "the waiter exited 7 in j-launcher-x")
    assert not state.output_ready
    past_deadline = pod("j-launcher-x", "launcher", phase="Failed", reason="DeadlineExceeded")
    state = following.assess(owner(), [past_deadline], workers=2)
    assert (state.phase, state.detail) == (ENDING, "j-launcher-x failed (DeadlineExceeded)")


def test_time_limit() -> None:
    launcher = pod(
        "j-launcher-x",
        "launcher",
        main={"terminated": {"exitCode": 137}},
        phase="Failed",
        reason="DeadlineExceeded",
    )
    state = following.assess(
        owner(("Failed", "PodFailurePolicy", "")), [launcher], workers=1, time_limit="2h"
    )
    assert (state.phase, state.code) == (FAILED, exitcodes.TIME_LIMIT)
    assert "time limit (2h)" in state.detail


def test_jobset_failure_without_a_launcher_status() -> None:
    state = following.assess(
        owner(("Failed", "FailedJobs", "jobset failed due to worker job failure")), [], workers=2
    )
    assert (state.phase, state.code) == (FAILED, exitcodes.NOT_RUN)
    assert "FailedJobs: jobset failed due to worker job failure" in state.detail


def test_newest_launcher_counts() -> None:
    old = pod(
        "j-launcher-a",
        "launcher",
        created="2026-01-01T00:00:00Z",
        main={"terminated": {"exitCode": 137}},
        phase="Failed",
    )
    new = pod("j-launcher-b", "launcher", created="2026-01-01T00:05:00Z", main={"running": {}})
    state = following.assess(owner(), [*workers(1, 1), old, new], workers=1)
    assert state.phase == RUNNING and state.launcher_pod == "j-launcher-b"


def test_gone() -> None:
    state = following.assess(None, [], workers=1)
    assert state.over and state.code == exitcodes.NOT_RUN
