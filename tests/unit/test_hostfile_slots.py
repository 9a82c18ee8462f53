"""Slot arithmetic: quantities, limits vs requests, app vs init containers, rounding, rules."""

from __future__ import annotations

from fractions import Fraction

import pytest

from k8smpi_runtime.hostfile.slots import QuantityError, SlotRule, parse_quantity, resource_amount
from tests.unit.podfactory import container, make_pod


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", Fraction(4)),
        ("1k", Fraction(1000)),
        ("500m", Fraction(1, 2)),
        ("1500m", Fraction(3, 2)),
        ("2Gi", Fraction(2**31)),
        ("1e3", Fraction(1000)),
        ("0.5", Fraction(1, 2)),
        (".5", Fraction(1, 2)),
        ("100u", Fraction(1, 10_000)),
        (8, Fraction(8)),
    ],
)
def test_parse_quantity(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "four", "4 GPUs", "1KiB", "--1"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_limits_win_over_requests_summed_over_app_containers() -> None:
    pod = make_pod(
        "p",
        containers=[
            container("a", limits={"nvidia.com/gpu": "2"}, requests={"nvidia.com/gpu": "2"}),
            container("b", requests={"nvidia.com/gpu": "1"}),  # request only: counted
            container("c", limits={"cpu": "4"}),  # no GPU at all
        ],
        init=[container("setup", limits={"nvidia.com/gpu": "8"})],  # init: never counted
    )
    assert resource_amount(pod, "nvidia.com/gpu") == 3
    assert SlotRule().slots_for(pod) == 3


def test_limit_over_request_in_one_container() -> None:
    pod = make_pod("p", containers=[container(limits={"cpu": "3"}, requests={"cpu": "1"})])
    assert SlotRule(resource="cpu").slots_for(pod) == 3


@pytest.mark.parametrize(
    ("cpus", "slots"), [(["1500m"], 1), (["500m"], 0), (["500m", "500m"], 1), (["2", "2500m"], 4)]
)
def test_cpu_counts_whole_cores_rounded_down(cpus: list[str], slots: int) -> None:
    pod = make_pod(
        "p", containers=[container(str(i), requests={"cpu": c}) for i, c in enumerate(cpus)]
    )
    assert SlotRule(resource="cpu").slots_for(pod) == slots


def test_any_extended_resource() -> None:
    pod = make_pod(
        "p",
        containers=[
            container(limits={"amd.com/gpu": "2", "gpu.intel.com/i915": "1", "rdma/hca": "1k"})
        ],
    )
    assert SlotRule(resource="amd.com/gpu").slots_for(pod) == 2
    assert SlotRule(resource="gpu.intel.com/i915").slots_for(pod) == 1
    assert SlotRule(resource="rdma/hca").slots_for(pod) == 1000
    assert SlotRule().slots_for(pod) == 0


def test_pod_level_resources_win() -> None:
    pod = make_pod("p", containers=[container(requests={"cpu": "1"})])
    pod["spec"]["resources"] = {"limits": {"cpu": "6"}}
    assert SlotRule(resource="cpu").slots_for(pod) == 6
    assert SlotRule().slots_for(pod) == 0  # no pod-level GPU: the containers' sum


def test_fixed_min_and_max_slots() -> None:
    four, none = make_pod("a", gpus=4), make_pod("b")
    assert SlotRule(slots=2).slots_for(four) == 2
    assert SlotRule(slots=2).slots_for(none) == 2
    assert SlotRule(min_slots=1).slots_for(none) == 1
    assert SlotRule(min_slots=1).slots_for(four) == 4
    assert SlotRule(max_slots=3).slots_for(four) == 3
    assert SlotRule(max_slots=3).max_slots_for(3) == 3
    assert SlotRule(max_slots_same=True).max_slots_for(4) == 4
    assert SlotRule().max_slots_for(4) is None


@pytest.mark.parametrize(
    "kwargs", [{"slots": 0}, {"min_slots": 0}, {"max_slots": -1}, {"min_slots": 4, "max_slots": 2}]
)
def test_rule_rejects_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="slots"):
        SlotRule(**kwargs)  # type: ignore[arg-type]


def test_describe() -> None:
    assert SlotRule().describe() == (
        "nvidia.com/gpu of each pod (app containers' limits, else requests; rounded down)"
    )
    assert "whole cores" in SlotRule(resource="cpu").describe()
    assert SlotRule(slots=2, max_slots=4).describe() == "2 per pod (--slots), at most 4"
