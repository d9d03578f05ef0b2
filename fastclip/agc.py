"""NFNets adaptive gradient clipping (Brock et al., "High-Performance Large-Scale Image Recognition
Without Normalization"): unit-wise, against the parameters' own norms. The function,
:func:`adaptive_clip_grad_`, lives with the other functions in :mod:`fastclip.clip_grad`."""

import torch

from ._layouts import idle_result
from ._types import Params
from ._validation import check_number
from .clip_grad import adaptive_clip_grad_, clip_rows_
from .clipper import Clipper, ClipResult

__all__ = ["AGC", "adaptive_clip_grad_"]


class AGC(Clipper):
    """:func:`adaptive_clip_grad_` as a clipper (stateless; shares the clippers' interface).

    The paper leaves the final classifier layer unclipped: build the clipper without it, e.g.
    ``AGC([p for n, p in model.named_parameters() if not n.startswith("fc.")])``.
    AGC needs no total norm and has no threshold of its own: ``step()``'s ``norm`` and
    ``threshold`` are NaN and ``coef`` is 1 (the per-row factors are not kept).
    """

    folds_into_optimizer = False
    takes_held_lists = False  # its op takes lists: grads read in Python, DTensor shards kept as a list
    steps_without_grads = False  # nothing is reduced across ranks
    feeds_found_inf = False  # no non-finite check: an attached optimizer is handed nothing
    idle_norm = float("nan")  # no total norm is taken

    def __init__(self, parameters: Params, clip_factor: float = 0.01, eps: float = 1e-3):
        super().__init__(parameters, "propagate")
        self.clip_factor = check_number(
            clip_factor, "clip_factor", "AGC", 0.0, float("inf"), low_open=True, high_open=True
        )
        self.eps = check_number(eps, "eps", "AGC", 0.0, float("inf"), high_open=True)

    def _config(self):
        return {"clip_factor": self.clip_factor, "eps": self.eps}

    @torch.no_grad()
    def step(self) -> ClipResult:
        """Clips each output row of every grad in place; returns a :class:`ClipResult` whose norm and
        threshold are NaN and coef is 1 (no total norm is taken)."""
        return self._step()  # a grad the op refuses is reported by the op itself

    def _clip(self, step):
        params = self._params if type(step.present) is range else [self._params[i] for i in step.present]
        clip_rows_(step.grads, params, self.clip_factor, self.eps)
        return idle_result(self._params[0].device, float("nan")), None, None
