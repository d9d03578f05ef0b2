"""Independent references for the Stable-SPAM tests: float64 implementations of the equations of
the authors' optimizer (TianjinYellow/StableSPAM, galore_torch/stablespam.py; REFERENCE.md section
"Stable-SPAM"), written from those equations, one tensor at a time, in the reference's order.

``StableSPAMReference`` is the clipper (AdaClip, then AdaGN), in two modes:

* ``reference=True``, the authors' code: one step counter per tensor, shared with the momentum
  reset (reset to 1 after the clipping of every step k with k % reset_every == 0, for the tensors
  that have a grad at that step); NaN and inf enter the EMAs and stay there, with IEEE semantics
  (a comparison with NaN is false, so a NaN max clips nothing and a NaN norm scales nothing).
* the default, fastclip's clean mode: each tensor's counter counts its finite steps only and is
  never reset; a step where any tensor's max or norm is non-finite changes no statistic and no
  counter, and its grads follow ``on_nonfinite`` ("skip": untouched).

``StableSPAMAdamWReference`` adds the optimizer's AdamW part, for the tests of ``attach``.

Checked once against the authors' StableSPAM optimizer itself (reference mode, float64 params on
the CPU, 120 to 150 steps with spikes of x50 to x1000, a 0-d tensor, missing grads, one of them at
a reset step, with and without total_T and the reset, both presets; and a run with a NaN, an inf
and all-zero grads): the same parameters, EMAs, counters and Adam moments, bit for bit, NaN
pattern included.
"""

import math
from dataclasses import dataclass, field

import torch


def cosine_scale(k, total_steps, eta_min):
    """The factor s of gamma1 and beta1 at optimizer step k = 1, 2, ...: the reference's
    CosineDecay(1.0, total_T, eta_min).get_dr(k), i.e. CosineAnnealingLR's closed form with
    T_max = total_T + 1 (no guard past total_T: it rises again). 1 without total_T."""
    if total_steps is None:
        return 1.0
    return eta_min + (1.0 - eta_min) * (1 + math.cos(math.pi * k / (total_steps + 1))) / 2


@dataclass
class TensorState:
    t: int = 0  # the tensor's step counter (the reference's state['step'])
    m_max: float = 0.0  # AdaClip's EMA of max|g|
    m_norm: float = 0.0  # AdaGN's EMAs of the norm and of its square
    v_norm: float = 0.0


@dataclass
class StepOutcome:
    """One step of the reference clipper. Per-tensor lists hold one entry per tensor that had a
    grad, in order. ``coef`` is the AdaGN factor c/n (1.0 where n == 0; NaN where n is NaN, where
    the reference scales nothing), ``threshold`` the AdaClip bound m_max_hat, ``norms`` the
    post-AdaClip norms n. ``marginal``: some element lay within ``margin`` (relative) of its
    bound (on a tensor's first step the bound is its max, up to rounding), so an implementation
    that rounds the bound differently may decide ``clipped`` the other way."""

    norm: float
    coef: list = field(default_factory=list)
    threshold: list = field(default_factory=list)
    norms: list = field(default_factory=list)
    clipped: bool = False
    nonfinite: bool = False
    marginal: bool = False


class StableSPAMReference:
    """The Stable-SPAM clipper, float64. ``step(grads)`` takes a list of float64 tensors (None for
    a missing grad), clips them in place (g <- AdaGN(AdaClip(g))) and returns a StepOutcome."""

    def __init__(
        self,
        num_tensors,
        gamma1=0.7,
        gamma2=0.9,
        gamma3=0.999,
        eps=1e-8,
        total_steps=None,
        eta_min=0.5,
        reset_every=None,
        reference=False,
        on_nonfinite="skip",
        margin=1e-6,
    ):
        self.gamma1, self.gamma2, self.gamma3, self.eps = gamma1, gamma2, gamma3, eps
        self.total_steps, self.eta_min, self.reset_every = total_steps, eta_min, reset_every
        self.reference, self.on_nonfinite, self.margin = reference, on_nonfinite, margin
        self.state = [TensorState() for _ in range(num_tensors)]
        self.k = 0  # calls to step(): the optimizer step that follows

    def scale(self, k=None):
        return cosine_scale(self.k if k is None else k, self.total_steps, self.eta_min)

    def resets_now(self):
        """Whether the momentum reset falls on the current step k."""
        return self.reset_every is not None and self.k % self.reset_every == 0

    def step(self, grads):
        self.k += 1
        s = self.scale()
        present = [i for i, g in enumerate(grads) if g is not None]
        total = math.sqrt(sum(float(grads[i].pow(2).sum()) for i in present))
        out = StepOutcome(norm=total)
        if not self.reference:
            return self._clean_step(grads, present, s, out)
        for i in present:
            self._tensor_step(self.state[i], grads[i], s, out)
        out.nonfinite = not math.isfinite(total)
        if self.resets_now():  # the shared counter: reset after this step's clipping
            for i in present:
                self.state[i].t = 1
        return out

    def _clean_step(self, grads, present, s, out):
        # Computed on copies first: one non-finite max or norm anywhere and the step changes
        # nothing (the statistics are committed only if every tensor's are finite).
        trial = [TensorState(**vars(self.state[i])) for i in present]
        clipped = [grads[i].clone() for i in present]
        maxima = [self._tensor_step(state, g, s, out) for state, g in zip(trial, clipped)]
        if all(math.isfinite(x) for x in maxima + out.norms):
            for i, state, g in zip(present, trial, clipped):
                self.state[i] = state
                grads[i].copy_(g)
            return out
        out = StepOutcome(norm=out.norm, nonfinite=True)
        if self.on_nonfinite == "zero":
            for i in present:
                grads[i].zero_()
        elif self.on_nonfinite == "propagate":  # torch's rule: a NaN norm makes NaN grads, an inf one zeroes them
            factor = math.nan if math.isnan(out.norm) else 0.0
            for i in present:
                grads[i].mul_(factor)
        return out

    def _tensor_step(self, st, g, s, out):
        """One tensor, in the reference's order; ``g`` is scaled in place. Returns max|g|."""
        st.t += 1
        t = st.t
        a = g.abs()
        mx = float(a.max()) if g.numel() else 0.0  # NaN if any element is NaN, as torch.max
        # AdaClip: the elements above the bound are rescaled (not clamped).
        st.m_max = self.gamma3 * st.m_max + (1 - self.gamma3) * mx
        hat = _div(st.m_max, 1 - self.gamma3**t)
        mask = a > hat  # False wherever hat or |g| is NaN
        if bool(mask.any()):
            out.clipped = True
            g[mask] = g[mask] / mx * hat
        if math.isfinite(hat) and bool(((a - hat).abs() <= self.margin * hat).any()):
            out.marginal = True
        # AdaGN: the tensor is rescaled to norm c (the EMAs move even when n == 0).
        n = float(torch.linalg.vector_norm(g))
        g1s = self.gamma1 * s
        st.m_norm = g1s * st.m_norm + (1 - g1s) * n
        st.v_norm = self.gamma2 * st.v_norm + (1 - self.gamma2) * (n * n)
        m_hat = _div(st.m_norm, 1 - g1s**t)
        v_hat = _div(st.v_norm, 1 - self.gamma2**t)
        c = _div(m_hat, _sqrt(v_hat) + self.eps)
        if n > 0:  # False for NaN: the reference leaves a NaN-norm tensor as it is
            g.div_(n).mul_(c)
            coef = c / n
        else:
            coef = 1.0 if n == 0 else math.nan
        out.coef.append(coef)
        out.threshold.append(hat)
        out.norms.append(n)
        return mx


def _sqrt(x):
    """torch.sqrt of a float64 0-d tensor, as the reference computes it (on the CPU it is not always
    correctly rounded, unlike math.sqrt: one ulp apart in about 1% of cases)."""
    return float(torch.sqrt(torch.tensor(x, dtype=torch.float64)))


def _div(a, b):
    """a / b with IEEE semantics (Python floats raise on a zero divisor)."""
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)


class StableSPAMAdamWReference:
    """The reference optimizer, float64: StableSPAMReference on the grads, then AdamW (weight
    decay ``p *= 1 - lr*wd``, beta1 scaled by s(k)) on the clipped grads.

    ``reference=True``: Adam's step counter is the clipper's (shared); at a reset step it is 1,
    so this step's update uses step-1 bias corrections on the old moments, and the moments are
    replaced by zeros after the update. Default (clean): at a reset step the moments are zeroed
    and Adam's own counter restarted before the update, so that step is Adam's first step; the
    clipper's statistics and counters are not reset."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **clipper_kwargs):
        self.params = params  # float64 tensors, updated in place
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.clipper = StableSPAMReference(len(params), eps=clipper_kwargs.pop("eps", eps), **clipper_kwargs)
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.adam_step = [0] * len(params)  # clean mode only

    def step(self, grads):
        """grads: float64 tensors (None: the parameter is skipped), not modified."""
        grads = [None if g is None else g.clone() for g in grads]
        outcome = self.clipper.step(grads)
        reset = self.clipper.resets_now()
        reference = self.clipper.reference
        beta1, beta2 = self.betas
        beta1 = beta1 * self.clipper.scale()
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            p.mul_(1 - self.lr * self.weight_decay)
            if reference:
                step = self.clipper.state[i].t  # shared, already reset to 1 at a reset step
            else:
                if reset:
                    self.exp_avg[i].zero_()
                    self.exp_avg_sq[i].zero_()
                    self.adam_step[i] = 0
                self.adam_step[i] += 1
                step = self.adam_step[i]
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
            p.add_(m / denom, alpha=-self.lr / bias_correction1)
            if reference and reset:  # the reference fetched the moments before replacing them
                self.exp_avg[i] = torch.zeros_like(p)
                self.exp_avg_sq[i] = torch.zeros_like(p)
        return outcome
