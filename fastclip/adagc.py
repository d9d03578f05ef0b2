"""AdaGC: per-tensor adaptive thresholds from an EMA of each tensor's clipped norm (Wang et al.,
"AdaGC: Improving Training Stability for Large Language Model Pretraining")."""

import torch

from . import _ops
from ._layouts import ADAGC_GAMMA, entry_outputs
from ._types import Params
from ._validation import check_int, check_number
from .clipper import Clipper

__all__ = ["AdaGC"]


class AdaGC(Clipper):
    """Per-tensor clipping against ``lambda_rel`` times an EMA of each tensor's own clipped norm.

    Steps ``1..warmup_steps`` clip globally: every grad is scaled by ``lambda_abs / (norm + eps)``
    when that is below 1, and each tensor's ``gamma`` starts as the running minimum of its norm
    after that scaling. Afterwards tensor i is clipped to ``lambda_rel * gamma_i`` (factor
    ``thr / (norm_i + eps)`` when ``norm_i > thr``) and ``gamma_i = beta * gamma_i + (1 - beta) *
    min(norm_i, thr)``. Defaults are the paper's (the authors' Megatron patch uses
    ``lambda_rel=1.04, beta=0.99``).

    ``step().coef`` and ``.threshold`` hold one value per tensor that had a grad, in parameter
    order. A tensor first seen after warm-up is not clipped on that step and starts its EMA there.
    Non-finite steps leave every ``gamma`` and the step count unchanged (``on_nonfinite``);
    ``reference=True`` lets NaN through, as the paper's code does.
    """

    per_tensor = True
    folds_into_optimizer = False

    def __init__(
        self,
        parameters: Params,
        lambda_abs: float = 1.0,
        lambda_rel: float = 1.05,
        beta: float = 0.98,
        warmup_steps: int = 100,
        eps: float = 1e-6,
        on_nonfinite: str = "skip",
        reference: bool = False,
        **options,
    ):
        super().__init__(parameters, on_nonfinite, reference, **options)
        inf = float("inf")
        self.lambda_abs = check_number(lambda_abs, "lambda_abs", "AdaGC", 0.0, inf, low_open=True, high_open=True)
        self.lambda_rel = check_number(lambda_rel, "lambda_rel", "AdaGC", 0.0, inf, low_open=True, high_open=True)
        self.beta = check_number(beta, "beta", "AdaGC", 0.0, 1.0, low_open=True, high_open=True)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", "AdaGC")
        self.eps = check_number(eps, "eps", "AdaGC", 0.0, inf, high_open=True)

    def _config(self):
        return {
            "lambda_abs": self.lambda_abs,
            "lambda_rel": self.lambda_rel,
            "beta": self.beta,
            "warmup_steps": self.warmup_steps,
            "eps": self.eps,
            "reference": self.reference,
        }

    def _check_loaded_state(self, state):
        if set(state) != {"gamma", "steps"} or state["gamma"].shape != (len(self._params), ADAGC_GAMMA):
            raise ValueError(
                f"AdaGC: the checkpoint's state does not match this clipper's {len(self._params)} parameters"
            )

    def _update(self, grads, norms, present, device, policy, scale_grads):
        if "gamma" not in self._state:
            self._state["gamma"] = torch.zeros(len(self._params), ADAGC_GAMMA, dtype=torch.float64, device=device)
            self._state["steps"] = torch.zeros(1, dtype=torch.float64, device=device)
        rows = self._rows_tensor(present, device)
        values, coef, threshold = entry_outputs(len(present), device)
        total, per_tensor = (None, None) if norms is None else norms
        _ops.adagc_update_(
            total,
            per_tensor,
            rows,
            self._state["gamma"],
            self._state["steps"],
            values,
            coef,
            threshold,
            self.lambda_abs,
            self.lambda_rel,
            self.beta,
            self.warmup_steps,
            self.eps,
            policy,
            self.reference,
            grads,
            scale_grads,
        )
        return values, coef, threshold
