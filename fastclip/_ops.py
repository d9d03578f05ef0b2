"""Loads the compiled library once and registers the fake (meta) kernels that torch.compile uses.

The functions here are thin, unchecked wrappers around ``torch.ops.fastclip.*``; the public API
with torch's signatures lives in :mod:`fastclip.clip_grad`.
"""

import functools

import torch

from . import _C  # noqa: F401  (loading the library registers torch.ops.fastclip.*)

_ops = torch.ops.fastclip


def _promoted_dtype(tensors):
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


def _accumulation_dtype(tensors):
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_one_device(tensors, *others):
    # The real kernels check this too; a fake must not accept what the kernel rejects.
    if not tensors:
        return
    device = tensors[0].device
    for i, t in enumerate(tensors):
        torch._check(t.device == device, lambda: f"fastclip: tensors[{i}] is on {t.device} but tensors[0] is on {device}")
    for name, t in others:
        torch._check(t.device == device, lambda: f"fastclip: {name} is on {t.device} but the tensors are on {device}")


@torch.library.register_fake("fastclip::multi_tensor_norm")
def _multi_tensor_norm_fake(tensors, norm_type, per_tensor):
    torch._check(len(tensors) > 0, lambda: "fastclip: tensors must not be empty")
    _check_one_device(tensors)
    first = tensors[0]
    total = first.new_empty((), dtype=_promoted_dtype(tensors))
    per = first.new_empty((len(tensors) if per_tensor else 0,), dtype=_accumulation_dtype(tensors))
    return total, per


@torch.library.register_fake("fastclip::multi_tensor_scale_")
def _multi_tensor_scale_fake(tensors, scale):
    _check_one_device(tensors, ("scale", scale))


@torch.library.register_fake("fastclip::multi_tensor_clip_by_norm_")
def _multi_tensor_clip_by_norm_fake(tensors, total_norm, max_norm):
    _check_one_device(tensors, ("total_norm", total_norm))


@torch.library.register_fake("fastclip::multi_tensor_clip_grad_norm_")
def _multi_tensor_clip_grad_norm_fake(tensors, max_norm, norm_type):
    torch._check(len(tensors) > 0, lambda: "fastclip: tensors must not be empty")
    _check_one_device(tensors)
    return tensors[0].new_empty((), dtype=_promoted_dtype(tensors))


@torch.library.register_fake("fastclip::multi_tensor_clamp_")
def _multi_tensor_clamp_fake(tensors, clip_value):
    _check_one_device(tensors)


def multi_tensor_norm(tensors, norm_type=2.0, per_tensor=False):
    """(total, per_tensor_norms) of a non-empty list of tensors on one device."""
    return _ops.multi_tensor_norm(tensors, float(norm_type), per_tensor)


def multi_tensor_scale_(tensors, scale):
    """tensors[i] *= scale (a 0-d tensor, or one value per tensor), in place."""
    _ops.multi_tensor_scale_(tensors, scale)


def multi_tensor_clip_by_norm_(tensors, total_norm, max_norm):
    """tensors *= min(max_norm / (total_norm + 1e-6), 1), in place; no host sync."""
    _ops.multi_tensor_clip_by_norm_(tensors, total_norm, float(max_norm))


def multi_tensor_clip_grad_norm_(tensors, max_norm, norm_type=2.0):
    """Total norm of a non-empty list, and the list clipped in place to max_norm by it (one call)."""
    return _ops.multi_tensor_clip_grad_norm_(tensors, float(max_norm), float(norm_type))


def multi_tensor_clamp_(tensors, clip_value):
    """Clamps every element to [-clip_value, clip_value], in place."""
    _ops.multi_tensor_clamp_(tensors, float(clip_value))
