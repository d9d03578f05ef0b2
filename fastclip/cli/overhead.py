"""``fastclip bench --suite many-tiny``: host time per call on long lists of one-element grads,
where the kernels have nothing to do and every microsecond is overhead (MoE and LoRA models hold
tens of thousands of parameters).

Each call is reported as a ratio to the Python walk every clipper must do at least once,
``[p.grad for p in params if p.grad is not None]`` (for DTensor grads, also taking each
``._local_tensor``), timed in the same interleaved rounds, on one CPU thread. On CUDA the
times are host times (the clock stops when the call returns, before the GPU finishes).
"""

import contextlib

import torch

import fastclip

from .timing import Timer, time_methods

__all__ = ["COUNTS", "many_tiny"]

COUNTS = (10_000, 50_000)
MAX_NORM = 1.0  # below the norm of the random grads: every call really scales them

CLIPPERS = {
    "fastclip.ZClip.step": lambda p: fastclip.ZClip(p, warmup_steps=5),
    "fastclip.AutoClip.step": lambda p: fastclip.AutoClip(p, percentile=10.0, history_size=64),
    "fastclip.AutoClip(tensor).step": lambda p: fastclip.AutoClip(p, percentile=10.0, history_size=8, scope="tensor"),
    "fastclip.AdaGC.step": lambda p: fastclip.AdaGC(p, warmup_steps=5),
    "fastclip.NormClip.step": lambda p: fastclip.NormClip(p, MAX_NORM),
}


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _plain_params(count, device, generator):
    params = [torch.nn.Parameter(torch.zeros(1, device=device)) for _ in range(count)]
    for p, g in zip(params, torch.randn(count, generator=generator).to(device).split(1)):
        p.grad = g.clone()
    return params


@contextlib.contextmanager
def _single_rank_mesh():
    """A one-rank gloo group and device mesh, or None where torch.distributed cannot start one
    (or a group already exists: a benchmark must not replace the caller's)."""
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        yield None
        return
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _dtensor_params(count, mesh, generator):
    from torch.distributed.tensor import DTensor, Shard

    params = []
    for g in torch.randn(count, generator=generator).split(1):
        p = torch.nn.Parameter(DTensor.from_local(torch.zeros(1), mesh, [Shard(0)], run_check=False))
        p.grad = DTensor.from_local(g.clone(), mesh, [Shard(0)], run_check=False)
        params.append(p)
    return params


def _methods(params, walk, with_torch):
    methods = {"walk": walk, "fastclip.clip_grad_norm_": lambda: fastclip.clip_grad_norm_(params, MAX_NORM)}
    if with_torch:
        methods["torch.clip_grad_norm_"] = lambda: torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)
    for name, make in CLIPPERS.items():
        methods[name] = make(params).step
    return methods


def many_tiny(device: torch.device, repeat: int, progress=None, counts=None) -> list[dict]:
    """One case per list (plain grads at each count, default :data:`COUNTS`; DTensor grads at each
    count on the CPU): ``{"tensors", "grads", "methods": {name: {"median_ms", "vs_walk"}}}``, and
    ``"skipped"`` (name -> why) when a method failed in its warm-up. The host's time per call
    (:class:`~fastclip.cli.timing.Timer` with ``host=True``), in the same interleaved rounds as
    every benchmark (:func:`~fastclip.cli.timing.time_methods`); on CUDA the device is synchronized,
    untimed, before every call."""
    counts = COUNTS if counts is None else counts
    generator = torch.Generator().manual_seed(0)
    timer = Timer(device, host=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    cases = []

    def run(kind, count, params, walk):
        # torch's clip on 10,000 DTensors takes about a minute per call here (a DTensor op per grad)
        timed = time_methods(_methods(params, walk, with_torch=kind == "plain"), timer, repeat, setup=sync)
        medians = {name: r["median_s"] for name, r in timed["methods"].items()}
        cases.append(
            {
                "tensors": count,
                "grads": kind,
                "methods": {
                    name: {"median_ms": t * 1e3, "vs_walk": t / medians["walk"]} for name, t in medians.items()
                },
            }
        )
        if timed["skipped"]:
            cases[-1]["skipped"] = timed["skipped"]
        if progress:
            progress(f"many-tiny {kind} {count}")

    with _one_thread():
        for count in counts:
            params = _plain_params(count, device, generator)
            run("plain", count, params, lambda: [p.grad for p in params if p.grad is not None])
        if device.type == "cpu":
            with _single_rank_mesh() as mesh:
                for count in counts if mesh is not None else ():
                    params = _dtensor_params(count, mesh, generator)
                    run("DTensor", count, params, lambda: [p.grad._local_tensor for p in params if p.grad is not None])
    return cases


def table_rows(cases):
    """One flat record per case and method: ``tensors``, ``grads``, ``method``, ``median_ms``, ``vs_walk``."""
    for case in cases:
        for method, m in case["methods"].items():
            yield {"tensors": case["tensors"], "grads": case["grads"], "method": method, **m}
