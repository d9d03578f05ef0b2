"""Stable-SPAM's gradient stabilisers, AdaClip and AdaGN (Huang et al., "Stable-SPAM: How to Train
in 4-Bit More Stably than 16-Bit Adam", arXiv 2502.17055), on the device, and its momentum reset
and cosine-scaled beta1 for torch's Adam and AdamW through :meth:`StableSPAM.attach`."""

import math

import torch
import torch.distributed as dist

from . import _ops, ops
from ._layouts import STABLE_SPAM_ROW, entry_outputs
from ._types import Params
from ._validation import check_int, check_number
from .clipper import Clipper, ClipResult
from .distributed import check_same_lists_per_key, reduce_per_tensor_

__all__ = ["StableSPAM"]


class StableSPAM(Clipper):
    """Per-tensor AdaClip then AdaGN, as Stable-SPAM's reference code applies them, in place.

    For each tensor with a grad g, at its t-th step and the clipper's k-th call:

    * AdaClip: ``m_max = gamma3 * m_max + (1 - gamma3) * max|g|``; the elements with
      ``|g| > m_max / (1 - gamma3**t)`` (the threshold) are multiplied by threshold / max|g|.
    * AdaGN, with n the norm after AdaClip and ``g1 = gamma1 * s(k)``:
      ``m_norm = g1 * m_norm + (1 - g1) * n``, ``v_norm = gamma2 * v_norm + (1 - gamma2) * n**2``,
      and g is scaled to ``m_hat / (sqrt(v_hat) + eps)`` over n, the hats bias-corrected at t
      (a zero norm leaves g as it is; its EMAs still move).
    * ``s(k) = eta_min + (1 - eta_min) * (1 + cos(pi * k / (total_steps + 1))) / 2`` with
      ``total_steps``, else 1 (the paper's CosineDecay, which also scales Adam's beta1: see attach).

    Defaults are the paper's 4-bit preset (its BF16 preset: ``gamma1=0.85, gamma2=0.99999``);
    ``eps`` is Adam's. ``step()`` returns a :class:`ClipResult` whose ``norm`` is the pre-clip
    total L2 norm, ``coef`` the AdaGN factor and ``threshold`` the AdaClip threshold of each tensor
    that had a grad (parameter order), and ``clipped`` whether AdaClip rescaled any element.

    Cost: the grads are read twice and written once (a pass for each tensor's max and norm, a pass
    for the norm after AdaClip over the tensors it rescales, a pass that rescales and scales), in
    four kernel launches on CUDA and no host sync; the reference makes about five passes and
    three host syncs per tensor. With ``process_group`` or DTensor grads (FSDP2, tensor parallel)
    each tensor's max and norms are reduced across the ranks (three all-reduces), so every rank
    computes the same statistics from whole tensors.

    Differences from the reference, on purpose: each tensor's step counter counts its own finite
    steps (the reference shares it with Adam's, which its momentum reset restarts, so the bias
    corrections restart on EMAs that ran for thousands of steps), and a non-finite step (any
    NaN or inf in the grads) leaves every statistic alone (``on_nonfinite``: "skip" leaves the
    grads and an attached fused optimizer skips the step, "zero" zeroes them, "propagate" makes
    them NaN or zero, "error" raises and syncs every step). ``.grad`` holds the AdaGN output
    (the reference's ``.grad`` keeps only AdaClip's rescale). ``reference=True`` reproduces the
    reference: the shared counter, restarted at 1 after every ``reset_every``-th call, and NaN
    poisoning the statistics.
    """

    per_tensor = True
    folds_into_optimizer = False
    takes_held_lists = False  # its ops take lists: grads read in Python, DTensor shards kept as a list
    steps_without_grads = False  # a rank without grads returns at once (its statistics are per tensor)

    def __init__(
        self,
        parameters: Params,
        gamma1: float = 0.7,
        gamma2: float = 0.9,
        gamma3: float = 0.999,
        eps: float = 1e-8,
        total_steps: int | None = None,
        eta_min: float = 0.5,
        reset_every: int | None = None,
        on_nonfinite: str = "skip",
        reference: bool = False,
        **options,
    ):
        super().__init__(parameters, on_nonfinite, reference, **options)
        name, inf = "StableSPAM", float("inf")
        self.gamma1 = check_number(gamma1, "gamma1", name, 0.0, 1.0, high_open=True)
        self.gamma2 = check_number(gamma2, "gamma2", name, 0.0, 1.0, low_open=True, high_open=True)
        self.gamma3 = check_number(gamma3, "gamma3", name, 0.0, 1.0, low_open=True, high_open=True)
        self.eps = check_number(eps, "eps", name, 0.0, inf, high_open=True)
        self.total_steps = None if total_steps is None else check_int(total_steps, "total_steps", name, low=1)
        self.eta_min = check_number(eta_min, "eta_min", name, 0.0, 1.0)
        self.reset_every = None if reset_every is None else check_int(reset_every, "reset_every", name, low=1)
        self._calls = 0  # the host's count of step() calls: the device's state["steps"], without a read
        self._adam_hooks = []

    def _config(self):
        return {
            "gamma1": self.gamma1,
            "gamma2": self.gamma2,
            "gamma3": self.gamma3,
            "eps": self.eps,
            "total_steps": self.total_steps,
            "eta_min": self.eta_min,
            "reset_every": self.reset_every,
            "reference": self.reference,
        }

    def _check_loaded_state(self, state):
        if set(state) != {"rows", "steps"} or state["rows"].shape != (len(self._params), STABLE_SPAM_ROW):
            raise ValueError(
                f"StableSPAM: the checkpoint's state does not match this clipper's {len(self._params)} parameters"
            )

    def _host_state(self):
        return {"calls": self._calls}

    def _load_host_state(self, host):
        self._calls = int(host.get("calls", 0))

    @torch.no_grad()
    def step(self) -> ClipResult:
        """AdaClip and AdaGN on every grad, in place; returns a :class:`ClipResult` (device tensors).

        No host sync, except with ``on_nonfinite="error"``, which reads the norm to raise.
        """
        return self._step()  # a grad the ops refuse is reported by the ops themselves

    def _clip(self, step):
        grads, keys, order, device = step.grads, step.keys, step.order, step.device
        if "rows" not in self._state:
            self._state["rows"] = torch.zeros(len(self._params), STABLE_SPAM_ROW, dtype=torch.float64, device=device)
            self._state["steps"] = torch.zeros(1, dtype=torch.float64, device=device)
        rows, state = self._rows_tensor(step.present, device), self._state["rows"]
        across_ranks = bool(self._groups) or keys is not None
        if across_ranks and not self._lists_checked:  # once: a length mismatch would garble the vectors
            check_same_lists_per_key(len(grads), self._groups, keys, order, "grads")
            self._lists_checked = True
        stats = _ops.stable_spam_norms(grads, None, rows, state, self.gamma3)
        if across_ranks:
            reduce_per_tensor_(stats[0], dist.ReduceOp.MAX, self._groups, keys, order)
            reduce_per_tensor_(stats[1], dist.ReduceOp.SUM, self._groups, keys, order)
        split = _ops.stable_spam_norms(grads, stats[0], rows, state, self.gamma3)
        if across_ranks:
            reduce_per_tensor_(split, dist.ReduceOp.SUM, self._groups, keys, order)
        if self.on_nonfinite == "error":
            self._raise_if_nonfinite(stats[1].sum().sqrt())
        values, coef, threshold = entry_outputs(len(step.present), device)
        _ops.stable_spam_update_(
            grads,
            stats,
            split,
            rows,
            state,
            self._state["steps"],
            values,
            coef,
            threshold,
            self.gamma1,
            self.gamma2,
            self.gamma3,
            self.eps,
            self.total_steps,
            self.eta_min,
            self.reset_every,
            self._op_policy(),
            self.reference,
        )
        self._calls += 1
        return values, coef, threshold

    def reset(self) -> None:
        super().reset()
        self._calls = 0

    # -- the rest of Stable-SPAM, in torch's Adam and AdamW ----------------------------------

    def attach(self, optimizer: torch.optim.Optimizer) -> "StableSPAM":
        """Hands each step to ``optimizer`` (torch's Adam or AdamW, any implementation): a non-finite
        step reaches a fused one as ``found_inf`` (see :meth:`Clipper.attach`), and the rest of
        Stable-SPAM happens around its ``step()``:

        * ``reset_every``: at every ``reset_every``-th call the first and second moments are zeroed
          and Adam's step counter restarted, before the update, so that step is Adam's first from
          zero moments. ``reference=True`` keeps the reference's order: that step still updates
          the old moments, with step-1 bias corrections, and the zeros take effect after it.
        * ``total_steps``: beta1 is multiplied by s(k) for the step (the group's betas are restored
          after it).

        Call ``clipper.step()`` before each ``optimizer.step()``. Nothing syncs the host. Under
        CUDA graph capture (Adam with ``capturable=True`` or ``fused=True``) every decision is
        made on the device; pass ``betas`` as tensors there so that beta1 can change between
        replays. Returns ``self``.
        """
        if self.reset_every is not None or self.total_steps is not None:
            if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
                raise TypeError(
                    f"StableSPAM.attach: reset_every and total_steps act on torch.optim.Adam or AdamW, "
                    f"not {type(optimizer).__name__}"
                )
            if self._adam_hooks:
                raise RuntimeError("StableSPAM is already attached to an optimizer")
        super().attach(optimizer)
        if self.reset_every is not None or self.total_steps is not None:
            self._adam_hooks = [
                optimizer.register_step_pre_hook(self._before_adam_step),
                optimizer.register_step_post_hook(self._after_adam_step),
            ]
        return self

    def detach(self) -> None:
        super().detach()
        for hook in self._adam_hooks:
            hook.remove()
        self._adam_hooks = []

    def _reset_now(self, device):
        """Whether this step resets the moments: a float32 0-d tensor on ``device`` (1 keeps, 0
        resets) when the clipper's step counter lives there, else a Python bool from the host's
        count (the same number)."""
        steps = self._state["steps"]
        if steps.device == torch.device(device):
            return torch.fmod(steps, self.reset_every).ne(0).to(torch.float32).reshape(())
        return self._calls % self.reset_every != 0

    def _zero_where_reset(self, tensors):
        by_device = {}
        for t in tensors:
            by_device.setdefault(t.device, []).append(t)
        for device, group in by_device.items():
            keep = self._reset_now(device)
            if isinstance(keep, torch.Tensor):
                ops.multi_tensor_scale_(group, keep, clear_on_zero=True)  # a factor of 1 writes nothing
            elif not keep:
                torch._foreach_zero_(group)

    @staticmethod
    def _adam_state(optimizer):
        moments, steps = [], []
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p)
                if state:
                    moments += [state["exp_avg"], state["exp_avg_sq"]]
                    steps.append(state["step"])
        return moments, steps

    @torch.no_grad()
    def _before_adam_step(self, optimizer, args, kwargs):
        if "steps" not in self._state:
            return  # no clipper step yet
        if self.reset_every is not None:
            moments, steps = self._adam_state(optimizer)
            self._zero_where_reset(steps if self.reference else moments + steps)
        if self.total_steps is not None:
            self._saved_betas = []
            for group in optimizer.param_groups:
                betas = group["betas"]
                beta1 = betas[0]
                if isinstance(beta1, torch.Tensor):  # scaled on the device, so graph replays see each step's
                    self._saved_betas.append((group, betas, beta1.clone()))
                    beta1.mul_(self._decay_on(self._state["steps"]).to(beta1.dtype).reshape(beta1.shape))
                else:
                    self._saved_betas.append((group, betas, None))
                    group["betas"] = (beta1 * self._decay(self._calls), betas[1])

    @torch.no_grad()
    def _after_adam_step(self, optimizer, args, kwargs):
        if "steps" not in self._state:
            return
        if self.reset_every is not None and self.reference:
            moments, _ = self._adam_state(optimizer)
            self._zero_where_reset(moments)
        if self.total_steps is not None:
            for group, betas, beta1 in self._saved_betas:
                if beta1 is not None:
                    betas[0].copy_(beta1)
                group["betas"] = betas
            self._saved_betas = []

    def _decay(self, k):
        return self.eta_min + (1.0 - self.eta_min) * (1.0 + math.cos(math.pi * k / (self.total_steps + 1))) / 2.0

    def _decay_on(self, k):
        return self.eta_min + (1.0 - self.eta_min) * (1.0 + torch.cos(k * (math.pi / (self.total_steps + 1)))) / 2.0
