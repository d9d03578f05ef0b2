"""Typed wrappers of fastclip's list ops (``torch.ops.fastclip.*``), each with CPU and CUDA
kernels and a fake kernel for ``torch.compile``.

They check nothing the op does not: every tensor list must be on one device, hold float32, float16,
bfloat16 or float64 dense tensors, and (for the in-place ops) share no memory. For torch's
signatures, argument checks and error messages naming the bad entry, use the functions in
:mod:`fastclip.clip_grad`.

:func:`multi_tensor_norm`, :func:`multi_tensor_scale_`, :func:`multi_tensor_clip_by_norm_` and
:func:`multi_tensor_clip_grad_norm_` also take a :func:`held_list`: a list converted once, for
lists of thousands of tensors passed again and again (converting such a list costs more than the
op on it).
"""

from collections.abc import Sequence

import torch

from . import _ops  # noqa: F401  (loads the library and registers the fake kernels)

__all__ = [
    "agc_clip_",
    "held_list",
    "multi_tensor_clamp_",
    "multi_tensor_clip_by_norm_",
    "multi_tensor_clip_grad_norm_",
    "multi_tensor_norm",
    "multi_tensor_scale_",
]

_lib = torch.ops.fastclip


def held_list(tensors: Sequence[torch.Tensor]) -> torch.ScriptObject:
    """``tensors`` converted to the ops' C++ list once (a ``torch.classes.fastclip.TensorList``),
    to pass instead of the list to the ops that take one: the same checks and results, without
    the per-tensor cost of converting the list at every call. It holds its tensors alive for as
    long as it lives. Eager mode only (the ops' schemas cannot say that it holds tensors they write).
    The ops check and plan its tensors at every call, so a tensor resized in place is seen."""
    return torch.classes.fastclip.TensorList(list(tensors))


def _is_held(tensors):
    return isinstance(tensors, torch.ScriptObject)


def multi_tensor_norm(
    tensors: Sequence[torch.Tensor], norm_type: float = 2.0, per_tensor: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, per_tensor_norms)`` of a non-empty list of tensors on one device.

    ``total`` is the ``norm_type`` norm of all elements (p >= 0 or inf), a 0-d tensor in the
    tensors' promoted dtype; ``per_tensor_norms`` holds each tensor's norm in the accumulation
    dtype (float64 if the list holds a float64 tensor, else float32) when ``per_tensor``, and is
    empty otherwise.
    """
    if _is_held(tensors):
        return _lib.held_multi_tensor_norm(tensors, float(norm_type), per_tensor)
    return _lib.multi_tensor_norm(tensors, float(norm_type), per_tensor)


def multi_tensor_scale_(tensors: Sequence[torch.Tensor], scale: torch.Tensor, clear_on_zero: bool = False) -> None:
    """``tensors[i] *= scale`` in place: ``scale`` is a float32 0-d tensor, or one factor per tensor.

    With ``clear_on_zero``, a factor of exactly 0 stores zeros (NaN and inf included).
    """
    if _is_held(tensors):
        _lib.held_multi_tensor_scale_(tensors, scale, clear_on_zero)
    else:
        _lib.multi_tensor_scale_(tensors, scale, clear_on_zero)


def multi_tensor_clip_by_norm_(tensors: Sequence[torch.Tensor], total_norm: torch.Tensor, max_norm: float) -> None:
    """``tensors *= min(max_norm / (total_norm + 1e-6), 1)`` in place, computed on the device from
    the 0-d ``total_norm``: no host sync."""
    if _is_held(tensors):
        _lib.held_multi_tensor_clip_by_norm_(tensors, total_norm, float(max_norm))
    else:
        _lib.multi_tensor_clip_by_norm_(tensors, total_norm, float(max_norm))


def multi_tensor_clip_grad_norm_(
    tensors: Sequence[torch.Tensor], max_norm: float, norm_type: float = 2.0
) -> torch.Tensor:
    """The total norm of a non-empty list, and the list clipped in place to ``max_norm`` by it,
    in one call. Returns the pre-clip total norm (0-d, the tensors' promoted dtype)."""
    if _is_held(tensors):
        return _lib.held_multi_tensor_clip_grad_norm_(tensors, float(max_norm), float(norm_type))
    return _lib.multi_tensor_clip_grad_norm_(tensors, float(max_norm), float(norm_type))


def multi_tensor_clamp_(tensors: Sequence[torch.Tensor], clip_value: float) -> None:
    """Clamps every element to ``[-clip_value, clip_value]`` in place (NaN stays NaN)."""
    _lib.multi_tensor_clamp_(tensors, float(clip_value))


def agc_clip_(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor], clip_factor: float, eps: float) -> None:
    """NFNets unit-wise clipping of ``grads`` in place, one pass: each output row of ``grads[i]``
    (dim 0; a 0-d or 1-d tensor is one unit) is scaled so its L2 norm is at most
    ``clip_factor * max(||row of params[i]||, eps)``. ``params[i]`` has ``grads[i]``'s shape."""
    _lib.agc_clip_(grads, params, float(clip_factor), float(eps))
