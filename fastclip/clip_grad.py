"""The functions: drop-in replacements for ``torch.nn.utils.clip_grad_norm_``, ``get_total_norm``,
``clip_grads_with_norm_`` and ``clip_grad_value_``, and :func:`adaptive_clip_grad_` (``timm``'s
unit-wise clipping). The stateful clippers are in :mod:`fastclip.clipper` and its neighbours.

Same signatures, defaults, accepted inputs and results as torch (2.6+), computed by fused
multi-tensor kernels. Where fastclip deliberately differs:

* Every element is accumulated in float32 (float64 for float64 tensors) and only the final total
  is rounded to the promoted dtype of the grads. torch rounds each per-tensor norm to its grad's
  dtype first, so in a list that mixes fp16 and fp32 grads, an fp16 tensor whose own norm exceeds
  65504 makes torch's total ``inf`` (and zeroes every grad), while fastclip returns the finite
  float32 total. In an all-fp16 list both totals are fp16, and both overflow to ``inf`` above
  65504; torch's coefficient is then 0 and zeroes every grad, while fastclip computes the
  coefficient from the accumulated (float32) total, so the grads are clipped to ``max_norm`` as
  they should be (``error_if_nonfinite=True`` still raises on the ``inf`` total, as torch does).
  Elsewhere results agree within rounding.
* Invalid arguments raise instead of being silently accepted: a negative or NaN ``max_norm``,
  ``norm_type`` or ``clip_value``; grads on different devices; sparse grads; unsupported dtypes.
* ``foreach`` is accepted for compatibility and ignored: there is one fused path.
"""

import itertools
import types
import warnings

import torch

from . import ops
from ._grads import DTensorShardCache, grads_in_cpp, grads_with_groups, present_and_grads
from ._types import ProcessGroups, Tensors
from ._validation import as_list, checked, flatten_groups, nonnegative
from .distributed import as_groups, merge_keys, norms_across_ranks, param_group_keys, split_dtensors

__all__ = ["adaptive_clip_grad_", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _has_groups(entries):
    return any(map(isinstance, entries, itertools.repeat(dict)))


def _parameter_list(parameters, stacklevel):
    """``parameters`` (a Tensor or an iterable) as a list; warns, as torch does, on an empty
    generator (``stacklevel``: of the public function's caller, seen from here)."""
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    params = as_list(parameters, "parameters")
    if is_generator and not params:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=stacklevel)
    return params


def _parameters_and_grads(parameters):
    """``(params, grads, groups)``: the parameters (param groups flattened), the grads present, and
    None, or for param groups ``(spans, positions of the parameters that have grads or None for
    all)`` (see :func:`_group_keys` and :func:`fastclip._grads.grads_with_groups`)."""
    return grads_with_groups(_parameter_list(parameters, stacklevel=4))


def _group_keys(params, groups_info, groups):
    """``(keys, order)`` for the grads of ``params`` that are present, from their param groups'
    ``process_group`` (see :func:`fastclip.distributed.param_group_keys`)."""
    if groups_info is None:
        return None, ()
    spans, present = groups_info
    keys, order = param_group_keys(len(params), spans, groups)
    if keys is not None and present is not None:
        keys = [keys[i] for i in present]
    return keys, order


def _raise_if_nonfinite(total_norm, norm_type):
    if torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )


def _total_across_ranks(tensors, norm_type, groups, keys, order, device, items, arg, grads):
    """The norm of the whole model (``device``: where a rank with no tensors makes its empty
    partial); an op's rejection of ``tensors`` is re-raised naming the bad entry of ``items``."""
    return checked(
        norms_across_ranks,
        tensors,
        norm_type,
        groups,
        keys,
        device=device,
        items=items,
        arg=arg,
        grads=grads,
        order=order,
    )[0]


def _coefficient_total(total, exact):
    """What the clip coefficient is computed from (as the kernels do, norm_math.h's
    coefficient_total): ``total`` (the grads' dtype), or the float64 ``exact`` where rounding it
    to that dtype overflowed; in float32 unless the total is float64, as torch computes it."""
    chosen = torch.where(torch.isinf(total) & torch.isfinite(exact), exact, total)
    return chosen if total.dtype == torch.float64 else chosen.float()


def get_total_norm(
    tensors: Tensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    process_group: ProcessGroups = None,
) -> torch.Tensor:
    """Norm of all elements of ``tensors``, as if they were concatenated into one vector.

    Same as :func:`torch.nn.utils.get_total_norm`: ``norm_type`` may be any p >= 0 or ``inf``
    (p = 0 counts the tensors that have a nonzero element); the result is a 0-d tensor on the
    tensors' device in their promoted dtype (``tensor(0.)`` on the CPU for no tensors).

    ``error_if_nonfinite=True`` raises RuntimeError on a NaN or infinite total; this reads the
    total on the host, a device sync. Otherwise nothing syncs.

    ``process_group`` (a group or a list of groups, reduced in turn): the tensors are this rank's
    part of the model (whole tensors or shards) and the result is the norm of all of it, the same
    on every rank. A rank with no tensors takes part with an empty partial (a CPU tensor: pass
    at least one, possibly empty, tensor on the backend's device for NCCL).

    ``tensors`` may also hold param groups, dicts whose ``"params"`` are tensors (whose norm is
    taken), each with its own ``"process_group"`` optionally: see :func:`clip_grad_norm_`.
    """
    tensors = as_list(tensors, "tensors")
    norm_type = nonnegative(norm_type, "norm_type")
    groups = as_groups(process_group)
    group_keys, order = None, ()
    if _has_groups(tensors):
        tensors, spans = flatten_groups(tensors, "tensors: ")
        group_keys, order = param_group_keys(len(tensors), spans, groups)
    local, keys = split_dtensors(tensors)
    keys = merge_keys(keys, group_keys)
    if groups or keys is not None:
        total = _total_across_ranks(local, norm_type, groups, keys, order, "cpu", tensors, "tensors", False)
        if error_if_nonfinite:
            _raise_if_nonfinite(total, norm_type)
        return total
    if not tensors:
        return torch.tensor(0.0)
    total, _ = checked(ops.multi_tensor_norm, tensors, norm_type, items=tensors, arg="tensors", grads=False)
    if error_if_nonfinite:
        _raise_if_nonfinite(total, norm_type)
    return total


def clip_grads_with_norm_(
    parameters: Tensors, max_norm: float, total_norm: torch.Tensor | float, foreach: bool | None = None
) -> None:
    """Scales the grads of ``parameters`` in place by ``min(max_norm / (total_norm + 1e-6), 1)``.

    Same as :func:`torch.nn.utils.clip_grads_with_norm_`. The coefficient is computed on the
    device from ``total_norm`` (a tensor or a number): no host sync. ``parameters`` may also be
    param groups (dicts with ``"params"``).
    """
    params, grads, _ = _parameters_and_grads(parameters)
    max_norm = nonnegative(max_norm, "max_norm")
    if not grads:
        return
    grads, _ = split_dtensors(grads, "grads")  # every rank scales its own shards
    if hasattr(total_norm, "full_tensor"):  # torch's DTensor norm (a partial or replicated DTensor)
        total_norm = total_norm.full_tensor()
    device = grads[0].device
    if not isinstance(total_norm, torch.Tensor):
        total_norm = torch.full((), float(total_norm), dtype=torch.float32, device=device)  # a fill, no copy
    elif total_norm.device != device:
        total_norm = total_norm.to(device, non_blocking=True)
    checked(ops.multi_tensor_clip_by_norm_, grads, total_norm, max_norm, items=params, arg="parameters", grads=True)


# The DTensor grads of the last call, split and held for the next (FSDP2 keeps its grads between steps).
_SHARD_CACHE = DTensorShardCache()


def clip_grad_norm_(
    parameters: Tensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    process_group: ProcessGroups = None,
) -> torch.Tensor:
    """Clips the gradient norm of ``parameters`` in place and returns the total norm.

    A drop-in replacement for :func:`torch.nn.utils.clip_grad_norm_`, with the same arguments,
    result and coefficient ``min(max_norm / (total + 1e-6), 1)``. One fused pass computes the norm
    of every grad (any mix of dtypes), a second scales them; nothing syncs the host unless
    ``error_if_nonfinite=True``, which reads the norm on the host (a device sync) and raises
    RuntimeError before touching the grads if it is NaN or infinite.

    Args:
        parameters: a Tensor or an iterable of Tensors whose ``.grad`` is clipped.
        max_norm: the largest allowed total norm (>= 0).
        norm_type: p >= 0 or ``inf``.
        error_if_nonfinite: raise on a NaN/inf total (syncs).
        foreach: accepted for compatibility; ignored.
        process_group: None, a group or a list of groups: the grads are this rank's part of the
            model (whole tensors or shards); the norm is that of the whole model, the same on
            every rank, and every rank scales its own grads by the same coefficient. One
            all-reduce of one float64 per group, on the current stream.

    Param groups (dicts with ``"params"``, e.g. ``optimizer.param_groups``; other keys ignored)
    may carry their own ``"process_group"`` (a group, a list of groups, or None), which replaces
    the call's ``process_group`` for that group's grads; groups without the key use the call's.
    None there means the group's grads are whole and the same on every rank: nothing is reduced.
    This is expert parallelism (MoE): dense grads reduced over the data-parallel or
    distributed-optimizer group, expert grads over the expert-parallel and expert-data-parallel
    groups. Each set of groups gets one all-reduce of its grads' partial (groups sharing the same
    groups share it), the partials are summed, and the norm is the whole model's, the same on every
    rank, with one coefficient for every grad. Every rank must list the same param groups, in the
    same order. A DTensor grad in a group carrying ``process_group`` is reduced over its mesh's
    sharded dims, then over the group's (a group in both counted once).
    Returns:
        The total norm of the grads before clipping (0-d tensor).
    """
    parameters = _parameter_list(parameters, stacklevel=3)
    held = grads_in_cpp(parameters, skip_missing=True) if process_group is None and not error_if_nonfinite else None
    if held is not None:  # one rank, the grads read in C++ (fastclip._grads)
        max_norm = nonnegative(max_norm, "max_norm")
        norm_type = nonnegative(norm_type, "norm_type")
        if len(held) == 0:
            return torch.tensor(0.0)
        return checked(
            ops.multi_tensor_clip_grad_norm_, held, max_norm, norm_type, items=parameters, arg="parameters", grads=True
        )
    params, grads, groups_info = _parameters_and_grads(parameters)
    max_norm = nonnegative(max_norm, "max_norm")
    norm_type = nonnegative(norm_type, "norm_type")
    groups = as_groups(process_group)
    group_keys, order = _group_keys(params, groups_info, groups)
    local, keys, held = _SHARD_CACHE.split(grads, "grads")
    keys = merge_keys(keys, group_keys)
    if groups or keys is not None:
        device = params[0].device if params else "cpu"  # for a rank with no grads
        exact, _, dtype = checked(
            norms_across_ranks,
            local,
            norm_type,
            groups,
            keys,
            device=device,
            items=params,
            arg="parameters",
            grads=True,
            total_dtype=torch.float64,
            with_local_dtype=True,
            order=order,
            held=held,
        )
        total = exact.to(dtype)
        if error_if_nonfinite:
            _raise_if_nonfinite(total, norm_type)
        if local:
            ops.multi_tensor_clip_by_norm_(local if held is None else held, _coefficient_total(total, exact), max_norm)
        return total
    if not grads:
        return torch.tensor(0.0)
    if error_if_nonfinite:  # the norm must be seen on the host before any grad is touched
        total, _ = checked(ops.multi_tensor_norm, grads, norm_type, items=params, arg="parameters", grads=True)
        _raise_if_nonfinite(total, norm_type)
        ops.multi_tensor_clip_by_norm_(grads, total, max_norm)
        return total
    return checked(
        ops.multi_tensor_clip_grad_norm_, grads, max_norm, norm_type, items=params, arg="parameters", grads=True
    )


def clip_grad_value_(parameters: Tensors, clip_value: float, foreach: bool | None = None) -> None:
    """Clamps the grads of ``parameters`` in place to ``[-clip_value, clip_value]``.

    Same as :func:`torch.nn.utils.clip_grad_value_` (NaN stays NaN); ``clip_value`` must be >= 0.
    ``parameters`` may also be param groups (dicts with ``"params"``).
    """
    params, grads, _ = _parameters_and_grads(parameters)
    clip_value = nonnegative(clip_value, "clip_value")
    if not grads:
        return
    grads, _ = split_dtensors(grads, "grads")
    checked(ops.multi_tensor_clamp_, grads, clip_value, items=params, arg="parameters", grads=True)


def adaptive_clip_grad_(parameters: Tensors, clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """Unit-wise clipping in place, as ``timm.utils.adaptive_clip_grad``: each output row of a
    grad (dim 0 of a 2-d+ tensor; a 0-d/1-d tensor is one unit) is scaled so its L2 norm is at
    most ``clip_factor * max(||param row||, eps)``. One pass over params and grads."""
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    if _has_groups(params):  # param groups: their parameters (a process_group key changes nothing: no reduction)
        params, _ = flatten_groups(params, "parameters: ")
    present, grads = present_and_grads(params, missing_attr_ok=False)
    if grads:
        with_grads = params if type(present) is range else [params[i] for i in present]
        clip_rows_(split_dtensors(grads, "grads")[0], with_grads, clip_factor, eps)


def clip_rows_(grads, params, clip_factor, eps):
    """:func:`adaptive_clip_grad_` of the grads present (DTensors' local shards) and their
    parameters (shared with the ``AGC`` clipper, whose step reads the grads).

    DTensors: each rank clips its local rows. Row-sharded weights (Shard(0), FSDP2) hold whole
    rows, so this is exact and needs no communication; a weight sharded along another dim is
    clipped by the norms of its local pieces of each row."""
    if grads:
        values, _ = split_dtensors([p.detach() for p in params], "params")
        ops.agc_clip_(grads, values, clip_factor, eps)
