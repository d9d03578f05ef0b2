"""The one way to time: :func:`time_methods`, every benchmark's timing loop.

It warms every method up (leaving out, with the reason, one that fails) and times the methods
in interleaved rounds: each round runs every method once, in an order rotated by one each round,
with an untimed ``setup`` (such as restoring the grads) before every call, so the host's drift
touches all methods alike; each method's result is its median (and min, max) over the rounds.
A :class:`Timer` times each call: the device's time, or with ``host=True`` the host's alone
(the many-tiny suite's host overhead). :func:`clip_case` does it for clipping calls on one grad
list, every timed call really clipping.
"""

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

import fastclip

from .ceilings import Probe, ceilings_from
from .grads import Call, GradHolder
from .progress import Progress

__all__ = ["NORM_ONLY_PREFIX", "Timer", "add_speedups", "clip_case", "kernel_launches", "time_methods"]

NORM_ONLY_PREFIX = "norm only: "  # methods that compute the norm and do not clip: floor = 1 read pass


class Timer:
    """Seconds one call takes: wall time on the CPU, CUDA events on the GPU.

    With ``host=True``, wall time on every device: on CUDA the clock stops when the call returns,
    before the GPU finishes: what the host spends on a call (give :func:`time_methods` a ``setup``
    that synchronizes, so each call starts on an idle device).
    """

    def __init__(self, device: torch.device, host: bool = False):
        self.cuda = device.type == "cuda" and not host

    def __call__(self, fn: Call) -> float:
        """Calls ``fn`` once; returns the seconds it took."""
        if self.cuda:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def time_methods(
    methods: dict[str, Call],
    timer: Timer,
    repeat: int,
    *,
    setup: Call | None = None,
    norm: Callable[[], float] | None = None,
    probes: Mapping[str, Probe] | None = None,
    warmup: int = 2,
    progress: Progress | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Times ``methods`` (name -> call) in ``repeat`` interleaved rounds.

    Each method is first called ``warmup`` times, untimed, ``setup`` before each call; given
    ``norm`` (a call returning the grads' norm), each warm-up call is checked to reduce it, and
    the method's ``clips`` says whether all did. A method that raises in its warm-up (a peer or
    ``torch.compile`` failing) is removed from ``methods`` and listed under ``skipped`` with the
    reason. Then each round times every method once (after an untimed ``setup``) and every probe
    of ``probes`` (:func:`~fastclip.cli.ceilings.ceiling_probes`), in an order rotated by one
    each round.

    Returns ``{"methods": {name: {"median_s", "min_s", "max_s"[, "clips"]}}, "skipped": {name:
    why}}``, and with probes ``"ceilings"`` (:func:`~fastclip.cli.ceilings.ceilings_from`)
    measured in those rounds.
    """
    if progress:
        progress.add(len(methods))
    clips, skipped = {}, {}
    for name, fn in list(methods.items()):
        if progress:
            progress(f"{label}: warm-up {name}")
        clips[name] = True
        try:
            for _ in range(warmup):
                if setup:
                    setup()
                before = norm() if norm else 0.0
                fn()
                clips[name] = clips[name] and (norm is None or norm() < 0.99 * before)
        except Exception as e:  # a peer or torch.compile failing here must not end the whole run
            del methods[name]
            skipped[name] = f"failed in warm-up: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    probes = probes or {}
    samples = {name: [] for name in [*methods, *probes]}
    names = list(samples)
    for r in range(repeat):
        if progress:
            progress(f"{label}: round {r + 1}/{repeat}")
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if name in probes:
                samples[name].append(timer(probes[name].call))
                continue
            if setup:
                setup()  # untimed
            samples[name].append(timer(methods[name]))
    results = {}
    for name in methods:
        results[name] = {
            "median_s": statistics.median(samples[name]),
            "min_s": min(samples[name]),
            "max_s": max(samples[name]),
        }
        if norm:
            results[name]["clips"] = clips[name]
    timed = {"methods": results, "skipped": skipped}
    if probes:
        timed["ceilings"] = ceilings_from(probes, samples)
    return timed


def add_speedups(results: dict[str, dict], reference: str, key: str) -> None:
    """Adds ``key``, the reference method's median time over each method's, to every result."""
    for r in results.values():
        r[key] = results[reference]["median_s"] / r["median_s"]


def kernel_launches(fn: Call, device: torch.device) -> int | None:
    """Kernels one call launches (CUDA only, else None; copies and memsets not counted)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(
        1
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and "emcpy" not in e.name and "emset" not in e.name
    )


def clip_case(
    grads: list[torch.Tensor],
    methods_for: Callable[[GradHolder, float], tuple[dict, dict]],
    timer: Timer,
    repeat: int,
    *,
    clips: bool = True,
    probes: Mapping[str, Probe] | None = None,
    progress: Progress | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Times clipping calls on one grad list with :func:`time_methods`.

    ``methods_for(holder, max_norm)`` returns ``(methods, skipped)``: name -> a call clipping the
    grads of ``holder`` (a :class:`GradHolder`) to ``max_norm``, and name -> why a method is left
    out. With ``clips`` every timed call really clips: the grads are clipped to norm
    ``max_norm = 0.5`` first, then scaled up by 4, untimed, before every call (clipping clipped
    grads again would change nothing). With ``clips=False`` max_norm is far above the norm and
    nothing needs scaling. A method named with :data:`NORM_ONLY_PREFIX` computes the norm only.

    Returns the case: ``tensors``, ``grad_bytes``, ``float32_bytes``, ``methods`` (name ->
    ``median_s``, ``min_s``, ``max_s``, ``gb_per_s`` (the bytes of its passes: three over the
    grads, or one read of the float32 grads for norm-only methods), ``kernel_launches`` (CUDA),
    ``clips``, ``norm_only``, ``speedup_vs_torch_foreach``), ``skipped``, and with ``probes``
    the ``ceilings`` timed in the same rounds (:func:`~fastclip.cli.ceilings.add_floors` adds the
    floors).
    """
    holder = GradHolder(grads)
    max_norm = 0.5 if clips else 1e30
    fastclip.clip_grad_norm_(list(holder.parameters()), max_norm)
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    fp32_bytes = sum(g.numel() * g.element_size() for g in grads if g.dtype == torch.float32)
    methods, skipped = methods_for(holder, max_norm)
    timed = time_methods(
        methods,
        timer,
        repeat,
        setup=holder.scaler(4.0) if clips else None,
        norm=holder.norm,
        probes=probes,
        progress=progress,
        label=label,
    )
    results = {}
    for name, r in timed["methods"].items():
        norm_only = name.startswith(NORM_ONLY_PREFIX)
        moved = fp32_bytes if norm_only else 3 * grad_bytes
        results[name] = {
            "median_s": r["median_s"],
            "min_s": r["min_s"],
            "max_s": r["max_s"],
            "gb_per_s": moved / r["median_s"] / 1e9,
            "kernel_launches": kernel_launches(methods[name], grads[0].device),
            "clips": False if norm_only else r["clips"],
            "norm_only": norm_only,
        }
    add_speedups(results, "torch_foreach", "speedup_vs_torch_foreach")
    case = {
        "tensors": len(grads),
        "grad_bytes": grad_bytes,
        "float32_bytes": fp32_bytes,
        "methods": results,
        "skipped": {**skipped, **timed["skipped"]},
    }
    if "ceilings" in timed:
        case["ceilings"] = timed["ceilings"]
    return case
