"""Megatron-core's gradient clipping, on fastclip's kernels.

``get_grad_norm_fp32`` and ``clip_grad_by_total_norm_fp32`` take Megatron-core's arguments
(``megatron/core/optimizer/clip_grads.py``) and compute the same thing: the norm of
``grads_for_norm`` reduced over the DTensor data-parallel group and then over
``grad_stats_parallel_group`` (None means the whole world, as in ``torch.distributed``), and the
scaling of every grad of ``parameters``. Differences: the norm comes back as a 0-d float32 device
tensor, so nothing syncs (``as_float=True`` returns Megatron's Python float, one sync); any
float dtype and device work (Megatron's asserts CUDA fp32); the coefficient is applied on the
device as ``min(max_norm / (norm + 1e-6), 1)`` in float32, where Megatron computes it in double
on the host and skips the pass when it is >= 1 (the results agree to float32 rounding).

:func:`patch` swaps these into Megatron-core in place, or makes every Megatron optimizer clip
with a fastclip clipper (ZClip, AutoClip, NormClip...), with the statistics on the device and
agreeing on every rank. Megatron itself is not imported by this module until :func:`patch` runs.
"""

from collections.abc import Callable

import torch
import torch.distributed as dist

from .. import ops
from .._types import ProcessGroups, Tensors
from ..distributed import as_groups, norms_across_ranks, split_dtensors

__all__ = ["clip_grad_by_total_norm_fp32", "get_grad_norm_fp32", "patch", "unpatch"]


def _stats_groups(grad_stats_parallel_group):
    if grad_stats_parallel_group is None:
        return (dist.group.WORLD,) if dist.is_available() and dist.is_initialized() else ()
    return as_groups(grad_stats_parallel_group, "grad_stats_parallel_group")


def get_grad_norm_fp32(grads_for_norm: Tensors, norm_type: float = 2, grad_stats_parallel_group: ProcessGroups = None,
                       *, as_float: bool = False) -> torch.Tensor | float:
    """The norm of ``grads_for_norm`` across the model-parallel (or distributed-optimizer) ranks.

    Every rank passes the grads it counts (shared and tensor-parallel-duplicate parameters
    excluded on all but one rank, as Megatron's ``get_main_grads_for_grad_norm`` does). DTensor
    grads are reduced over their sharded mesh dims first. Returns a 0-d float32 tensor on the
    grads' device (no sync), or a Python float with ``as_float=True`` (one sync, as Megatron).
    ``norm_type=0`` raises ValueError (Megatron-core's own function raises ZeroDivisionError).
    """
    grads = [grads_for_norm] if isinstance(grads_for_norm, torch.Tensor) else list(grads_for_norm)
    norm_type = float(norm_type)
    if norm_type == 0:  # Megatron-core's own function divides by it
        raise ValueError("fastclip.integrations.megatron.get_grad_norm_fp32: norm_type must be > 0 or inf "
                         "(Megatron-core's norm takes the 1/norm_type power), got 0")
    local, keys = split_dtensors(grads, "grads_for_norm")
    groups = _stats_groups(grad_stats_parallel_group)
    if keys is not None:  # DTensors: their mesh groups first, then the stats group, as Megatron does
        keys = [tuple(k) + groups if k is not None else groups for k in keys]
    empty_device = "cuda" if torch.cuda.is_available() else "cpu"  # for a rank with no grads
    # Per-tensor norms combined in float64 as Megatron does, across the groups if there are any.
    total, _ = norms_across_ranks(local, norm_type, groups, keys, device=empty_device, total_dtype=torch.float32)
    return float(total) if as_float else total


def _grads_of(parameters, use_decoupled_grad):
    parameters = [parameters] if isinstance(parameters, torch.Tensor) else parameters
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [getattr(p, attr, None) for p in parameters]
    return split_dtensors([g.detach() for g in grads if g is not None], attr)[0]


def clip_grad_by_total_norm_fp32(parameters: Tensors, max_norm: float, total_norm: torch.Tensor | float,
                                 use_decoupled_grad: bool = False) -> None:
    """Scales the grads (``.grad``, or ``.decoupled_grad``) of every parameter by
    ``min(max_norm / (total_norm + 1e-6), 1)``, computed on the device; ``total_norm`` may be a
    float or a tensor (e.g. from :func:`get_grad_norm_fp32`)."""
    grads = _grads_of(parameters, use_decoupled_grad)
    if not grads:
        return
    device = grads[0].device
    if isinstance(total_norm, torch.Tensor):
        total = total_norm.to(device, non_blocking=True).float().reshape(())
    else:
        total = torch.full((), float(total_norm), dtype=torch.float32, device=device)
    ops.multi_tensor_clip_by_norm_(grads, total, float(max_norm))


_PATCHED = {}


def _megatron_modules():
    import importlib

    names = ["megatron.core.optimizer.clip_grads", "megatron.core.optimizer.optimizer",
             "megatron.core.optimizer.layer_wise_optimizer"]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            if not modules:
                raise
    return modules


def _norm_parameters(megatron_optimizer):
    """The parameters whose grads Megatron counts in the norm: those whose grad is among the
    optimizer's own get_main_grads_for_grad_norm() (shared and tensor-parallel duplicates out)."""
    counted = {id(g) for g in megatron_optimizer.get_main_grads_for_grad_norm()}
    return [p for p in megatron_optimizer.get_parameters() if id(getattr(p, "grad", None)) in counted]


def patch(clipper: Callable | None = None, *, sync_free: bool = False) -> list:
    """Makes Megatron-core clip with fastclip, in place, for every optimizer it builds.

    ``clipper=None``: the fixed threshold stays Megatron's (``--clip-grad``); its
    ``get_grad_norm_fp32`` and ``clip_grad_by_total_norm_fp32`` become this module's. With
    ``sync_free=False`` (the default) the norm is still returned as a float, as Megatron's callers
    expect (one sync, like Megatron); ``sync_free=True`` hands them the device tensor.

    ``clipper``: a function ``(parameters, norm_parameters, process_group) -> fastclip clipper``,
    e.g. ``lambda params, norm_params, group: fastclip.ZClip(params, norm_parameters=norm_params,
    process_group=group)``. Each Megatron optimizer then builds one clipper (lazily, at its first
    clip) and ``clip_grad_norm`` runs it: the norm over Megatron's set of grads, reduced over the
    optimizer's grad-stats group, every grad scaled, the same statistics on every rank. It
    returns the pre-clip norm (a float unless ``sync_free``).

    Returns the patched modules; :func:`unpatch` restores Megatron. Megatron must be importable.
    """
    modules = _megatron_modules()
    optimizer = next(m for m in modules if hasattr(m, "MegatronOptimizer"))
    if _PATCHED:
        unpatch()

    def norm(grads_for_norm, norm_type=2, grad_stats_parallel_group=None):
        return get_grad_norm_fp32(grads_for_norm, norm_type, grad_stats_parallel_group, as_float=not sync_free)

    for module in modules:
        for name, new in (("get_grad_norm_fp32", norm), ("clip_grad_by_total_norm_fp32", clip_grad_by_total_norm_fp32)):
            if hasattr(module, name):
                _PATCHED[(module, name)] = getattr(module, name)
                setattr(module, name, new)
    if clipper is not None:
        cls = optimizer.MegatronOptimizer
        _PATCHED[(cls, "clip_grad_norm")] = cls.clip_grad_norm

        def clip_grad_norm(self, clip_grad):
            made = self.__dict__.get("_fastclip_clipper")
            if made is None:
                if getattr(getattr(self, "config", None), "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False):
                    raise NotImplementedError("fastclip's adaptive Megatron patch reads .grad; decoupled grads "
                                              "(precision-aware optimizer) are not supported yet")
                made = clipper(self.get_parameters(), _norm_parameters(self), self.get_grad_stats_parallel_group())
                self._fastclip_clipper = made
            result = made.step()
            return result.norm if sync_free else float(result.norm)

        cls.clip_grad_norm = clip_grad_norm
    return modules


def unpatch() -> None:
    """Restores what :func:`patch` replaced."""
    for (owner, name), original in _PATCHED.items():
        setattr(owner, name, original)
    _PATCHED.clear()
