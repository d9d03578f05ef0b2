"""The machine's memory ceilings and each case's memory floor.

:func:`ceiling_probes` (a large read-only reduction and a large in-place multiply) are timed in
the same rounds as a case's methods (:func:`fastclip.cli.timing.time_methods`), so the host's
drift touches them alike; :func:`add_floors` turns each case's ceilings into its memory floor,
``B / read_ceiling + 2 B / in_place_ceiling`` for B bytes of grads (one read pass for the norm,
one read-write pass for the scale), and each method's fraction of it.
"""

import statistics
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

__all__ = ["CEILING_BYTES", "Probe", "add_floor", "add_floors", "ceiling_probes", "ceilings_from"]

CEILING_BYTES = 1 << 30  # large enough to stream from memory, not from cache


class Probe(NamedTuple):
    """One memory-ceiling measurement: a call, the ceiling it measures, the bytes it moves."""

    call: Callable[[], Any]
    ceiling: str
    bytes_moved: int


def ceiling_probes(device: torch.device) -> dict[str, Probe]:
    """The ceiling measurements as calls on one buffer of :data:`CEILING_BYTES`, warmed up, to
    pass to :func:`~fastclip.cli.timing.time_methods`. The read ceiling is the faster of torch's sum and a BLAS dot
    product: on some CPUs torch's sum streams measurably slower than the memory allows."""
    buf = torch.empty(CEILING_BYTES // 4, dtype=torch.float32, device=device).normal_()
    probes = {
        "read_sum": Probe(lambda: buf.sum(), "read_bytes_per_s", CEILING_BYTES),
        "read_dot": Probe(lambda: torch.dot(buf, buf), "read_bytes_per_s", CEILING_BYTES),
        "in_place_mul": Probe(lambda: buf.mul_(0.999), "in_place_bytes_per_s", 2 * CEILING_BYTES),
    }
    for probe in probes.values():
        probe.call()
        probe.call()
    return probes


def ceilings_from(probes: Mapping[str, Probe], samples: Mapping[str, list[float]]) -> dict[str, float]:
    """Bytes/s per ceiling: the best median over the probes that measure it."""
    ceilings = {}
    for name, (_, ceiling, moved) in probes.items():
        ceilings[ceiling] = max(ceilings.get(ceiling, 0.0), moved / statistics.median(samples[name]))
    return ceilings


def add_floor(case: dict, ceilings: Mapping[str, float]) -> None:
    """Adds the memory floor of a case (``floor_s``) and each method's ``fraction_of_floor``."""
    b = case["grad_bytes"]
    case["floor_s"] = b / ceilings["read_bytes_per_s"] + 2 * b / ceilings["in_place_bytes_per_s"]
    for r in case["methods"].values():
        # A norm-only method's floor is one read pass over what it reads.
        floor = case.get("float32_bytes", b) / ceilings["read_bytes_per_s"] if r.get("norm_only") else case["floor_s"]
        r["fraction_of_floor"] = floor / r["median_s"]


def add_floors(cases: list[dict]) -> dict[str, float]:
    """Adds each case's floor from the ceilings timed in its own rounds; returns the best of
    each ceiling over the cases."""
    for case in cases:
        add_floor(case, case["ceilings"])
    return {key: max(case["ceilings"][key] for case in cases) for key in cases[0]["ceilings"]}
