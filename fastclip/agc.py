"""NFNets adaptive gradient clipping (Brock et al., "High-Performance Large-Scale Image Recognition
Without Normalization"): unit-wise, against the parameters' own norms."""

import torch

from . import _ops
from .clipper import Clipper, ClipResult, _check_number, _idle_result
from .distributed import split_dtensors

__all__ = ["AGC", "adaptive_clip_grad_"]


def adaptive_clip_grad_(parameters, clip_factor=0.01, eps=1e-3):
    """Unit-wise clipping in place, as ``timm.utils.adaptive_clip_grad``: each output row of a
    grad (dim 0 of a 2-d+ tensor; a 0-d/1-d tensor is one unit) is scaled so its L2 norm is at
    most ``clip_factor * max(||param row||, eps)``. One pass over params and grads."""
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    _agc(params, clip_factor, eps)


def _agc(params, clip_factor, eps):
    with_grads = [p for p in params if p.grad is not None]
    if with_grads:
        # DTensors: each rank clips its local rows. Row-sharded weights (Shard(0), FSDP2) hold
        # whole rows, so this is exact and needs no communication; a weight sharded along another
        # dim is clipped by the norms of its local pieces of each row.
        grads, _ = split_dtensors([p.grad for p in with_grads], "grads")
        values, _ = split_dtensors([p.detach() for p in with_grads], "params")
        _ops.agc_clip_(grads, values, clip_factor, eps)


class AGC(Clipper):
    """:func:`adaptive_clip_grad_` as a clipper (stateless; shares the clippers' interface).

    The paper leaves the final classifier layer unclipped: build the clipper without it, e.g.
    ``AGC([p for n, p in model.named_parameters() if not n.startswith("fc.")])``.
    AGC needs no total norm and has no threshold of its own: ``step()``'s ``norm`` and
    ``threshold`` are NaN and ``coef`` is 1 (the per-row factors are not kept).
    """

    folds_into_optimizer = False

    def __init__(self, parameters, clip_factor=0.01, eps=1e-3):
        super().__init__(parameters, "propagate")
        self.clip_factor = _check_number(clip_factor, "clip_factor", "AGC", 0.0, float("inf"), low_open=True,
                                         high_open=True)
        self.eps = _check_number(eps, "eps", "AGC", 0.0, float("inf"), high_open=True)

    def _config(self):
        return {"clip_factor": self.clip_factor, "eps": self.eps}

    @torch.no_grad()
    def step(self):
        _agc(self._params, self.clip_factor, self.eps)
        device = self._params[0].device
        return ClipResult(_idle_result(device, float("nan")))
