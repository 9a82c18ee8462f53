"""make demo's one-line failures (devcluster/demo.py), from the pod states a failed Job leaves."""

from __future__ import annotations

from devcluster import demo, flow

WAITER_MESSAGE = """\
k8s-waitfor: 10.1s ready 0/4  dns 0/4; pending: cnode-0 (Unschedulable: 0/5 nodes ...)
k8s-waitfor: timed out after 15s: 4 of 4 pods not ready (statefulset cnode in namespace ns)
  POD      PHASE    WHY
  cnode-0  Pending  Unschedulable: 0/5 nodes are available: 1 Insufficient nvidia.com/gpu
"""


def outcome(init: list[dict[str, object]], main: list[dict[str, object]]) -> flow.Outcome:
    pod = {
        "metadata": {"name": "launcher-abcde"},
        "status": {"initContainerStatuses": init, "containerStatuses": main},
    }
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "X"}]}}
    return flow.Outcome(job, [pod])


def test_a_waiter_that_gave_up_is_told_by_its_own_explanation() -> None:
    failed = outcome(
        [{"name": "waiter", "state": {"terminated": {"exitCode": 6, "message": WAITER_MESSAGE}}}],
        [{"name": "launcher", "state": {"waiting": {"reason": "PodInitializing"}}}],
    )
    line = demo.failure(failed, "ns")
    assert "\n" not in line
    assert line.startswith("the waiter gave up (k8s-waitfor exit 6): k8s-waitfor: timed out")
    assert line.endswith("`kubectl logs -n ns launcher-abcde -c waiter`")


def test_a_failed_batch_script_names_mpiruns_status_and_the_log() -> None:
    failed = outcome(
        [{"name": "waiter", "state": {"terminated": {"exitCode": 0}}}],
        [{"name": "launcher", "state": {"terminated": {"exitCode": 3}}}],
    )
    line = demo.failure(failed, "ns")
    assert line == (
        "the batch script failed (exit 3, mpirun's status); see "
        "`kubectl logs -n ns launcher-abcde -c launcher`"
    )


def test_the_waiters_explanation_skips_progress_lines() -> None:
    progress_only = "k8s-waitfor: 1.0s ready 2/4  dns 0/4; pending: cnode-3 (ContainerCreating)\n"
    assert demo.waiter_explanation(WAITER_MESSAGE).startswith("k8s-waitfor: timed out")
    assert demo.waiter_explanation(progress_only).startswith("k8s-waitfor: 1.0s ready")
    assert demo.waiter_explanation("") == "(no explanation in its log)"
