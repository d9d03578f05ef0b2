"""ZClip: z-score based adaptive clipping (Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM
Pre-Training"), the same names, defaults and results as the ``zclip`` package (1.0.0), with the
statistics kept on the device."""

import torch

from . import _ops
from ._layouts import ZCLIP_HEADER, empty_result
from ._types import Params
from ._validation import check_choice, check_int, check_number
from .clipper import Clipper

__all__ = ["ZClip"]


class ZClip(Clipper):
    """Adaptive clipping from an EMA of the total norm's mean and variance.

    For the first ``warmup_steps`` steps the norms are collected and, if ``max_grad_norm`` is set,
    clipped as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` would; then mean and
    (population) variance initialise the EMA. Afterwards, with ``z = (norm - mean) / (std + eps)``:

    * ``mode="zscore"``: a spike is ``z > z_thresh``; the clip value is
      ``(mean + z_thresh * std / (z / z_thresh)) * clip_factor`` (``clip_option="adaptive_scaling"``)
      or ``mean`` (``clip_option="mean"``).
    * ``mode="percentile"``: a spike is ``norm > mean + z_thresh * std``, clipped to that bound.

    The clip value is capped at ``max_grad_norm`` (None: no cap), grads are scaled by
    ``clip / (norm + 1e-6)`` when the norm exceeds it, and the EMA is updated with the clip value on
    a spike (unless ``skip_update_on_spike``) or with the norm otherwise, exactly as zclip does,
    including its use of the updated mean in the variance update.

    Differences from the package, on purpose: statistics stay on the device (no ``.item()`` per
    step), ``state_dict()`` resumes exactly, and a non-finite norm never reaches the statistics
    (``on_nonfinite``: "skip" leaves the grads and an attached optimizer skips the step, "zero"
    zeroes them, "propagate" scales them as torch would, "error" raises and syncs every step).
    ``reference=True`` reproduces the package, NaN poisoning included.
    """

    def __init__(
        self,
        parameters: Params,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        max_grad_norm: float | None = 1.0,
        eps: float = 1e-6,
        warmup_steps: int = 25,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
        clip_factor: float = 1.0,
        skip_update_on_spike: bool = False,
        on_nonfinite: str = "skip",
        reference: bool = False,
        **options,
    ):
        super().__init__(parameters, on_nonfinite, reference, **options)
        self.alpha = check_number(alpha, "alpha", "ZClip", 0.0, 1.0, low_open=True, high_open=True)
        self.z_thresh = check_number(z_thresh, "z_thresh", "ZClip", 0.0, float("inf"), low_open=True, high_open=True)
        self.max_grad_norm = check_number(max_grad_norm, "max_grad_norm", "ZClip", 0.0, low_open=True, allow_none=True)
        self.eps = check_number(eps, "eps", "ZClip", 0.0, float("inf"), high_open=True)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", "ZClip")
        self.mode = check_choice(str(mode).lower(), "mode", ("zscore", "percentile"), "ZClip")
        self.clip_option = check_choice(str(clip_option).lower(), "clip_option", ("adaptive_scaling", "mean"), "ZClip")
        self.clip_factor = check_number(
            clip_factor, "clip_factor", "ZClip", 0.0, float("inf"), low_open=True, high_open=True
        )
        self.skip_update_on_spike = bool(skip_update_on_spike)

    def _config(self):
        return {
            "alpha": self.alpha,
            "z_thresh": self.z_thresh,
            "max_grad_norm": self.max_grad_norm,
            "eps": self.eps,
            "warmup_steps": self.warmup_steps,
            "mode": self.mode,
            "clip_option": self.clip_option,
            "clip_factor": self.clip_factor,
            "skip_update_on_spike": self.skip_update_on_spike,
            "reference": self.reference,
        }

    def _state_size(self):
        return ZCLIP_HEADER + max(1, self.warmup_steps)  # the header, then the warm-up norms

    def _check_loaded_state(self, state):
        if set(state) != {"stats"} or state["stats"].shape != (self._state_size(),):
            raise ValueError(
                f"ZClip: the checkpoint's state does not match this clipper (expected 'stats' of "
                f"{self._state_size()} elements)"
            )

    def _update(self, grads, norms, present, device, policy, scale_grads):
        if "stats" not in self._state:
            self._state["stats"] = torch.zeros(self._state_size(), dtype=torch.float64, device=device)
        values = empty_result(device)
        _ops.zclip_update_(
            None if norms is None else norms[0],
            self._state["stats"],
            values,
            self.alpha,
            self.z_thresh,
            self.max_grad_norm,
            self.eps,
            self.warmup_steps,
            self.mode,
            self.clip_option,
            self.clip_factor,
            self.skip_update_on_spike,
            policy,
            self.reference,
            grads,
            scale_grads,
        )
        return values, None, None
