"""Grads to time on: :func:`make_grads` (normal values, one tensor per shape) and
:class:`GradHolder`, the parameters whose ``.grad`` they are, for APIs that take parameters or a
module; :func:`baseline_methods`, the clipping calls every comparison starts from."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

import fastclip

__all__ = ["GradHolder", "baseline_methods", "make_grads", "tensor_dtypes"]

Call = Callable[[], Any]
Shape = Sequence[int]


def tensor_dtypes(shapes: Sequence[Shape], dtypes: torch.dtype | Iterable[torch.dtype]) -> list[torch.dtype]:
    """One dtype per shape, cycling through ``dtypes`` (or all of one dtype)."""
    dtypes = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
    return [dtypes[i % len(dtypes)] for i in range(len(shapes))]


def make_grads(
    shapes: Sequence[Shape],
    dtypes: torch.dtype | Iterable[torch.dtype],
    device: torch.device,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Fresh normal grads, one per shape, cycling through ``dtypes`` (or all of one dtype)."""
    grads = []
    for shape, dtype in zip(shapes, tensor_dtypes(shapes, dtypes)):
        g = torch.empty(shape, dtype=torch.float32).normal_(generator=generator)
        grads.append(g.to(device=device, dtype=dtype))
    return grads


class GradHolder(torch.nn.Module):
    """Parameters whose ``.grad`` are ``grads`` (clippers take parameters, zclip a module).

    The weights are zero-stride views of one zero, costing no memory, when only ``.grad`` is
    read; ``weights=True`` gives real zero weights (AGC reads them, an optimizer writes them).
    """

    def __init__(self, grads: Sequence[torch.Tensor], weights: bool = False):
        super().__init__()
        self.grads = list(grads)
        self.params = torch.nn.ParameterList()
        for g in self.grads:
            zero = torch.zeros_like(g) if weights else torch.zeros((), device=g.device, dtype=g.dtype).expand(g.shape)
            p = torch.nn.Parameter(zero)
            p.grad = g
            self.params.append(p)

    def norm(self) -> float:
        """The grads' total 2-norm (reading it syncs)."""
        return float(fastclip.get_total_norm(self.grads))

    def scaler(self, factor: float = 4.0) -> Call:
        """A call that multiplies every grad by ``factor`` in place: the setup that makes grads
        clipped to ``max_norm`` need clipping again (a power of 2 is exact in every dtype)."""
        return lambda: torch._foreach_mul_(self.grads, factor)

    def restorer(self) -> Call:
        """Keeps a copy of the grads as they are now; the returned call puts it back (the setup
        for stateful methods, which must see the same grads at every call)."""
        saved = [g.clone() for g in self.grads]

        def restore():
            for g, s in zip(self.grads, saved):
                g.copy_(s)

        return restore


def baseline_methods(params: Sequence[torch.Tensor], max_norm: float) -> dict[str, Call]:
    """fastclip's ``clip_grad_norm_`` and torch's (foreach, and per-tensor loop) on ``params``."""
    params = list(params)
    return {
        "fastclip": lambda: fastclip.clip_grad_norm_(params, max_norm),
        "torch_foreach": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
        "torch_loop": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False),
    }
