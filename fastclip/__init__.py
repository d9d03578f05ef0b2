"""fastclip: fused gradient clipping for PyTorch.

Drop-in replacements for ``torch.nn.utils.clip_grad_norm_`` and friends, backed by multi-tensor
ops (``torch.ops.fastclip.*``) with CPU and CUDA kernels: one pass for the norm, one for the
scale, no host sync, any mix of float32/float16/bfloat16/float64 tensors in one call.

Layers, from the bottom: :mod:`fastclip.ops` (typed wrappers of the list ops),
:mod:`fastclip.clip_grad` (the functions: torch's mirrors and ``adaptive_clip_grad_``), the
clippers (:class:`Clipper` in :mod:`fastclip.clipper`, and ZClip, AutoClip, AdaGC, AGC, NormClip,
StableSPAM), :mod:`fastclip.distributed` (norms across ranks) and :mod:`fastclip.integrations`;
beside the clippers, :class:`StepSkipper` (:mod:`fastclip.step_skip`) skips the steps whose loss
or norm spikes.
"""

from . import ops
from ._library import build_info
from .adagc import AdaGC
from .agc import AGC
from .autoclip import AutoClip
from .clip_grad import adaptive_clip_grad_, clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from .clipper import Clipper, ClipResult, NormClip
from .stable_spam import StableSPAM
from .step_skip import SkipResult, StepSkipper
from .zclip import ZClip

__version__ = "0.1.0"

__all__ = [
    "AGC",
    "AdaGC",
    "AutoClip",
    "ClipResult",
    "Clipper",
    "NormClip",
    "StableSPAM",
    "SkipResult",
    "StepSkipper",
    "ZClip",
    "adaptive_clip_grad_",
    "build_info",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "ops",
]
