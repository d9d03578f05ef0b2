"""Independent references for the clipper tests: float64 implementations of the published
equations, and drivers that run the peers' own packages on the same gradients."""

import math

import numpy as np
import torch
from conftest import make_params


class TinyModel(torch.nn.Module):
    """A few tensors of awkward sizes; the peers take a module (zclip) or its parameters."""

    def __init__(self, shapes, dtype=torch.float32):
        super().__init__()
        self.weights = torch.nn.ParameterList(make_params(shapes, dtype))


SHAPES = [(17, 33), (33,), (64, 5), (1,), (7, 3, 3, 2)]


def twin_models(shapes=SHAPES, dtype=torch.float32, n=2):
    first = TinyModel(shapes, dtype)
    out = [first]
    for _ in range(n - 1):
        twin = TinyModel(shapes, dtype)
        twin.load_state_dict(first.state_dict())
        out.append(twin)
    return out


def spiky_grads(gen, shapes, steps, spikes=(), spike_scale=25.0, dtype=torch.float32, base=0.1):
    """Per step, fresh random grads whose norm drifts slowly; steps in `spikes` are scaled up."""
    out = []
    for step in range(steps):
        scale = base * (1.0 + 0.3 * math.sin(step / 9.0)) * (spike_scale if step in spikes else 1.0)
        out.append([(torch.randn(s, dtype=torch.float64, generator=gen) * scale).to(dtype) for s in shapes])
    return out


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def total_norm64(grads):
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


def paper_autoclip(percentile):
    """AutoClip's Algorithm 1: the whole history, the current norm included, numpy's percentile."""
    history = []

    def step(params):
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        history.append(norm)
        threshold = float(np.percentile(history, percentile))
        torch.nn.utils.clip_grad_norm_(params, threshold)
        return norm, threshold

    return step


class AdaGCReference:
    """The AdaGC equations (REFERENCE.md section 3) in float64, one tensor at a time."""

    def __init__(self, n, lambda_abs=1.0, lambda_rel=1.05, beta=0.98, warmup_steps=100, eps=1e-6):
        self.lambda_abs, self.lambda_rel, self.beta, self.warmup, self.eps = (
            lambda_abs,
            lambda_rel,
            beta,
            warmup_steps,
            eps,
        )
        self.gamma = [None] * n
        self.t = 0

    def step(self, grads):
        """grads: list (None for a missing grad) of float64 tensors, scaled in place."""
        self.t += 1
        n = total_norm64(grads)
        coefs = []
        if self.t <= self.warmup:
            c = self.lambda_abs / (n + self.eps)
            c = c if c < 1 else 1.0
            for i, g in enumerate(grads):
                if g is None:
                    continue
                g.mul_(c)
                m = float(g.norm())
                self.gamma[i] = m if self.gamma[i] is None else min(self.gamma[i], m)
                coefs.append(c)
            return n, coefs
        for i, g in enumerate(grads):
            if g is None:
                continue
            ni = float(g.norm())
            if self.gamma[i] is None:
                self.gamma[i] = ni
                coefs.append(1.0)
                continue
            thr = self.lambda_rel * self.gamma[i]
            c = 1.0
            if ni > thr:
                c = thr / (ni + self.eps)
                g.mul_(c)
                ni = thr
            self.gamma[i] = self.beta * self.gamma[i] + (1 - self.beta) * ni
            coefs.append(c)
        return n, coefs
