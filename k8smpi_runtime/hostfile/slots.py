"""Slots per pod: how many ranks a pod gets, from the resources its containers ask for.

The amount of a resource a pod has is what the scheduler reserved for it:

- each app container's **limit** for the resource, else its **request** (extended resources
  such as ``nvidia.com/gpu`` have limit == request; a request alone is allowed for cpu);
- summed over the app containers (``spec.containers``); init containers, sidecars included,
  are not counted: they do not run the job's ranks;
- a pod-level ``spec.resources`` (Kubernetes >= 1.32) that names the resource wins over the
  containers' sum, as it does for the scheduler.

Slots are that amount rounded **down** to a whole number: ``cpu`` counts whole cores
(``1500m`` -> 1, ``500m`` -> 0), so a rank never gets less than what it was given. Quantities
use Kubernetes' syntax (``4``, ``1k``, ``500m``, ``2Gi``, ``1e3``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.errors import K8smpiError

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_RESOURCE = "nvidia.com/gpu"

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<dec>[numkMGTPE])|[eE](?P<exp>[+-]?\d+))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


class QuantityError(K8smpiError):
    """A resource quantity that is not in Kubernetes' syntax."""


def parse_quantity(text: str | int | float) -> Fraction:
    """A Kubernetes quantity, exactly: ``"500m"`` -> 1/2, ``"1k"`` -> 1000, ``"2Gi"`` -> 2**31."""
    if isinstance(text, int | float):
        return Fraction(text)
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise QuantityError(f"not a Kubernetes quantity: {text!r}")
    value = Fraction(m["num"])
    if m["bin"]:
        return value * _BINARY[m["bin"]]
    if m["dec"]:
        return value * _DECIMAL[m["dec"]]
    if m["exp"]:
        return value * Fraction(10) ** int(m["exp"])
    return value


def _container_amount(container: Mapping[str, Any], resource: str) -> Fraction:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    if resource in limits:
        return parse_quantity(limits[resource])
    requests = resources.get("requests") or {}
    if resource in requests:
        return parse_quantity(requests[resource])
    return Fraction(0)


def resource_amount(pod: Mapping[str, Any], resource: str) -> Fraction:
    """How much of ``resource`` the pod has (see the module docstring)."""
    spec = pod.get("spec") or {}
    pod_level = spec.get("resources")
    if pod_level:
        amount = _container_amount({"resources": pod_level}, resource)
        if amount:
            return amount
    return sum(
        (_container_amount(c, resource) for c in spec.get("containers") or []),
        start=Fraction(0),
    )


@dataclass(frozen=True)
class SlotRule:
    """How a pod's slot count is found.

    ``slots`` fixes every pod's count; otherwise the pod's amount of ``resource``, rounded down.
    ``min_slots`` raises low counts (a pod with none of the resource still gets ``min_slots``);
    ``max_slots`` caps counts and is written as ``max_slots`` where the format has it;
    ``max_slots_same`` writes each host's own slot count as its ``max_slots`` instead.
    """

    resource: str = DEFAULT_RESOURCE
    slots: int | None = None
    min_slots: int | None = None
    max_slots: int | None = None
    max_slots_same: bool = False

    def __post_init__(self) -> None:
        for name in ("slots", "min_slots", "max_slots"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if (
            self.max_slots is not None
            and self.min_slots is not None
            and self.min_slots > self.max_slots
        ):
            raise ValueError("--min-slots is larger than --max-slots")

    def slots_for(self, pod: Mapping[str, Any]) -> int:
        """The pod's slot count; 0 means the pod is left out of the hostfile."""
        if self.slots is not None:
            count = self.slots
        else:
            count = math.floor(resource_amount(pod, self.resource))
        if self.min_slots is not None:
            count = max(count, self.min_slots)
        if self.max_slots is not None:
            count = min(count, self.max_slots)
        return count

    def max_slots_for(self, slots: int) -> int | None:
        if self.max_slots_same:
            return slots
        return self.max_slots

    def describe(self) -> str:
        """For the hostfile's header, e.g. ``nvidia.com/gpu of each pod (limits, else ...)``."""
        if self.slots is not None:
            text = f"{self.slots} per pod (--slots)"
        else:
            unit = "whole cores, rounded down" if self.resource == "cpu" else "rounded down"
            text = f"{self.resource} of each pod (app containers' limits, else requests; {unit})"
        if self.min_slots is not None:
            text += f", at least {self.min_slots}"
        if self.max_slots is not None:
            text += f", at most {self.max_slots}"
        return text
