"""fastclip: fused gradient clipping for PyTorch.

Drop-in replacements for ``torch.nn.utils.clip_grad_norm_`` and friends, backed by multi-tensor
ops (``torch.ops.fastclip.*``) with CPU and CUDA kernels: one pass for the norm, one for the
scale, no host sync, any mix of float32/float16/bfloat16/float64 tensors in one call.
"""

from . import _ops as ops
from .clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

__version__ = "0.1.0"

__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "ops",
]
