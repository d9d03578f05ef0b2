"""Drop-in replacements for ``torch.nn.utils.clip_grad_norm_``, ``get_total_norm``,
``clip_grads_with_norm_`` and ``clip_grad_value_``.

Same signatures, defaults, accepted inputs and results as torch (2.6+), computed by fused
multi-tensor kernels. Where fastclip deliberately differs:

* Every element is accumulated in float32 (float64 for float64 tensors) and only the final total
  is rounded to the promoted dtype of the grads. torch rounds each per-tensor norm to its grad's
  dtype first, so an fp16 tensor whose own norm exceeds 65504 makes torch's total ``inf`` (and
  zeroes every grad), while fastclip returns the finite total. Elsewhere results agree within
  rounding.
* Invalid arguments raise instead of being silently accepted: a negative or NaN ``max_norm``,
  ``norm_type`` or ``clip_value``; grads on different devices; sparse grads; unsupported dtypes.
* ``foreach`` is accepted for compatibility and ignored: there is one fused path.
"""

import math
import types
import warnings

import torch

from . import _ops
from .distributed import as_groups, reduce_norms, split_dtensors

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _as_list(tensors, arg):
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    try:
        return list(tensors)
    except TypeError:
        raise TypeError(f"{arg} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}") from None


def _grads_of(parameters):
    try:
        return [p.grad for p in parameters if p.grad is not None]
    except AttributeError:
        _diagnose(parameters, "parameters", grads=True)
        raise


def _parameters_and_grads(parameters):
    if isinstance(parameters, torch.Tensor):
        params = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        params = _as_list(parameters, "parameters")
        if is_generator and not params:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return params, _grads_of(params)


def _nonnegative(value, arg):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a number, got {value!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"{arg} must be >= 0, got {value}")
    return value


def _diagnose(items, arg, grads=False):
    """Raises the precise error for the first bad entry of ``items`` (parameters whose ``.grad``
    is checked when ``grads``). Runs only after an op has rejected the list, so the checks cost
    nothing on the hot path."""
    first_device = None
    for i, item in enumerate(items):
        where = f"{arg}[{i}]"
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{where} is a {type(item).__name__}, expected a torch.Tensor")
        t = item.grad if grads else item
        if grads:
            if t is None:
                continue
            where += ".grad"
        if t.layout != torch.strided:
            raise RuntimeError(f"{where} has layout {t.layout}: sparse tensors are not supported")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise RuntimeError(f"{where} has dtype {t.dtype}; supported: float32, float16, bfloat16, float64")
        if first_device is None:
            first_device = t.device
        elif t.device != first_device:
            raise RuntimeError(f"{where} is on {t.device} but the first one is on {first_device}; "
                               "all tensors must be on one device")


def _raise_if_nonfinite(total_norm, norm_type):
    if torch.logical_or(total_norm.isnan(), total_norm.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")


def _checked(op, *args, items, arg, grads):
    """op(*args); if the op rejects its list, re-raise naming the bad entry of ``items``."""
    try:
        return op(*args)
    except (RuntimeError, TypeError):
        _diagnose(items, arg, grads=grads)
        raise


def _distributed_total(tensors, norm_type, groups, items, arg, grads, device, keys=None):
    """The norm of the whole model: this rank's per-tensor norms, one all-reduce per group."""
    if tensors:
        local_total, per = _checked(_ops.multi_tensor_norm, tensors, norm_type, True, items=items, arg=arg,
                                    grads=grads)
        dtype = local_total.dtype
    else:  # nothing here, but this rank still takes part in the all-reduce
        per, dtype = torch.zeros(0, dtype=torch.float32, device=device), torch.float32
    return reduce_norms(per, norm_type, groups, dtype, keys=keys)[0]


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None, process_group=None):
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
    """
    tensors = _as_list(tensors, "tensors")
    norm_type = _nonnegative(norm_type, "norm_type")
    groups = as_groups(process_group)
    local, keys = split_dtensors(tensors)
    if groups or keys is not None:
        total = _distributed_total(local, norm_type, groups, tensors, "tensors", False,
                                   local[0].device if local else "cpu", keys)
        if error_if_nonfinite:
            _raise_if_nonfinite(total, norm_type)
        return total
    if not tensors:
        return torch.tensor(0.0)
    total, _ = _checked(_ops.multi_tensor_norm, tensors, norm_type, items=tensors, arg="tensors", grads=False)
    if error_if_nonfinite:
        _raise_if_nonfinite(total, norm_type)
    return total


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scales the grads of ``parameters`` in place by ``min(max_norm / (total_norm + 1e-6), 1)``.

    Same as :func:`torch.nn.utils.clip_grads_with_norm_`. The coefficient is computed on the
    device from ``total_norm`` (a tensor or a number): no host sync.
    """
    params, grads = _parameters_and_grads(parameters)
    max_norm = _nonnegative(max_norm, "max_norm")
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
    _checked(_ops.multi_tensor_clip_by_norm_, grads, total_norm, max_norm, items=params, arg="parameters", grads=True)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None, process_group=None):
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
    Returns:
        The total norm of the grads before clipping (0-d tensor).
    """
    params, grads = _parameters_and_grads(parameters)
    max_norm = _nonnegative(max_norm, "max_norm")
    norm_type = _nonnegative(norm_type, "norm_type")
    groups = as_groups(process_group)
    local, keys = split_dtensors(grads, "grads")
    if groups or keys is not None:
        device = local[0].device if local else (params[0].device if params else "cpu")
        total = _distributed_total(local, norm_type, groups, params, "parameters", True, device, keys)
        if error_if_nonfinite:
            _raise_if_nonfinite(total, norm_type)
        if local:
            _ops.multi_tensor_clip_by_norm_(local, total, max_norm)
        return total
    if not grads:
        return torch.tensor(0.0)
    if error_if_nonfinite:  # the norm must be seen on the host before any grad is touched
        total, _ = _checked(_ops.multi_tensor_norm, grads, norm_type, items=params, arg="parameters", grads=True)
        _raise_if_nonfinite(total, norm_type)
        _ops.multi_tensor_clip_by_norm_(grads, total, max_norm)
        return total
    return _checked(_ops.multi_tensor_clip_grad_norm_, grads, max_norm, norm_type, items=params, arg="parameters",
                    grads=True)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamps the grads of ``parameters`` in place to ``[-clip_value, clip_value]``.

    Same as :func:`torch.nn.utils.clip_grad_value_` (NaN stays NaN); ``clip_value`` must be >= 0.
    """
    params, grads = _parameters_and_grads(parameters)
    clip_value = _nonnegative(clip_value, "clip_value")
    if not grads:
        return
    grads, _ = split_dtensors(grads, "grads")
    _checked(_ops.multi_tensor_clamp_, grads, clip_value, items=params, arg="parameters", grads=True)
