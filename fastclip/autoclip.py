"""AutoClip: clip to a percentile of the history of gradient norms (Seetharaman et al., "AutoClip:
Adaptive Gradient Clipping for Source Separation Networks"), and the ``autoclip`` package's
``QuantileClip``, with the history on the device."""

import math

import torch

from . import _ops
from ._layouts import AUTOCLIP_COUNTERS, AutoClipCounter, entry_outputs
from ._types import Params
from ._validation import check_choice, check_int, check_number
from .clipper import Clipper

__all__ = ["AutoClip"]

_LOWER, _UPPER, _WINDOW = AutoClipCounter.LOWER_SIZE, AutoClipCounter.UPPER_SIZE, AutoClipCounter.WINDOW_COUNT
_GROWTH = 4096  # history columns added at a time


class AutoClip(Clipper):
    """Clips the grads to the ``percentile``-th percentile (0-100, linear interpolation as numpy's
    default and ``torch.quantile``) of the norms seen so far, with torch's factor
    ``min(threshold / (norm + 1e-6), 1)``.

    * ``history_size=None`` keeps the whole history (the paper). It costs O(log T) per step, not
      O(T): the history is split at the percentile's rank into two heaps on the device, so a
      history of a million steps clips as fast as a fresh one. 4 bytes per step kept.
    * ``history_size=N`` keeps the last N norms (a ring buffer; a step costs O(N) on the device).
    * ``scope="global"`` uses the total norm; ``scope="tensor"`` keeps one history and threshold per
      parameter tensor (a tensor whose grad is None in a step keeps its history unchanged).
    * ``lag=0`` puts the current norm in the history before taking the percentile (the paper);
      ``lag=1`` takes it over the previous norms only, so the first step is not clipped (the
      ``autoclip`` package's ``QuantileClip(quantile=percentile/100, history_length=N,
      global_threshold=scope == "global")``).

    The whole history's buffers grow (on the host, 4,096 steps at a time) as steps are taken.
    Inside a ``torch.compile`` region or a captured CUDA graph they cannot grow: pass
    ``reserve_steps`` (the number of steps you will take that way) to size them up front, and
    capture after a first eager step (which creates the state); a history that fills up stops
    taking norms.

    Non-finite norms never enter the history (see ``on_nonfinite``); ``reference=True``
    reproduces the peers, where one NaN makes every later threshold NaN.
    """

    def __init__(
        self,
        parameters: Params,
        percentile: float = 10.0,
        history_size: int | None = None,
        scope: str = "global",
        lag: int = 0,
        reserve_steps: int = 0,
        on_nonfinite: str = "skip",
        reference: bool = False,
        **options,
    ):
        self.scope = check_choice(scope, "scope", ("global", "tensor"), "AutoClip")
        self.per_tensor = self.scope == "tensor"
        self.folds_into_optimizer = not self.per_tensor
        super().__init__(parameters, on_nonfinite, reference, **options)
        self.reserve_steps = check_int(reserve_steps, "reserve_steps", "AutoClip")
        self._steps = 0  # steps taken, counted on the host to size the whole history's heaps
        self.percentile = check_number(percentile, "percentile", "AutoClip", 0.0, 100.0)
        if history_size is not None:
            check_int(history_size, "history_size", "AutoClip", low=1, below_log2=31)
        self.history_size = history_size
        self.lag = check_choice(lag, "lag", (0, 1), "AutoClip")

    def _config(self):
        return {
            "percentile": self.percentile,
            "history_size": self.history_size,
            "scope": self.scope,
            "lag": self.lag,
            "reference": self.reference,
        }

    def _num_histories(self):
        return len(self._params) if self.per_tensor else 1

    def _host_state(self):
        return {"steps": self._steps}

    def _load_host_state(self, host):
        self._steps = int(host.get("steps", 0))
        if "counters" in self._state:  # never plan below what the histories really hold (one sync, at load)
            counters = self._state["counters"].cpu()
            self._steps = max(self._steps, int((counters[:, _LOWER] + counters[:, _UPPER]).max()))

    def _check_loaded_state(self, state):
        h = self._num_histories()
        ok = set(state) == {"lower", "upper", "window", "counters"}
        ok = ok and state["counters"].shape == (h, AUTOCLIP_COUNTERS)
        ok = ok and all(state[k].dim() == 2 and state[k].shape[0] == h for k in ("lower", "upper", "window"))
        window = 0 if self.history_size is None else self.history_size
        if not ok or state["window"].shape[1] != window:
            raise ValueError("AutoClip: the checkpoint's state does not match this clipper's parameters and history")
        counters = state["counters"].cpu()
        sizes = counters[:, [_LOWER, _UPPER, _WINDOW]]  # each within its buffer
        capacity = torch.tensor([state["lower"].shape[1], state["upper"].shape[1], window])
        if not ((sizes >= 0) & (sizes <= capacity)).all():
            raise ValueError("AutoClip: the checkpoint's history counters exceed its buffers")

    def _lower_size(self, count):
        # The heaps' split for `count` norms: the lowest floor(q (count-1)) + 1 go below.
        return math.floor(self.percentile / 100.0 * (count - 1)) + 1 if count > 0 else 0

    def _heap_columns(self, count, key):
        need = self._lower_size(count) if key == "lower" else count - self._lower_size(count)
        return -(-need // _GROWTH) * _GROWTH

    def _ensure_capacity(self, device):
        h = self._num_histories()
        if "counters" not in self._state:
            window = 0 if self.history_size is None else self.history_size
            heap = 0 if self.history_size is not None else self.reserve_steps
            # Zeros, not garbage: a checkpoint of the same history is the same bytes.
            self._state = {
                "lower": torch.zeros(h, self._heap_columns(heap, "lower"), dtype=torch.float32, device=device),
                "upper": torch.zeros(h, self._heap_columns(heap, "upper"), dtype=torch.float32, device=device),
                "window": torch.zeros(h, window, dtype=torch.float32, device=device),
                "counters": torch.zeros(h, AUTOCLIP_COUNTERS, dtype=torch.int64, device=device),
            }
        if self.history_size is not None:
            return
        if torch.compiler.is_compiling():
            if not self.reserve_steps:
                raise RuntimeError(
                    "AutoClip(history_size=None) cannot grow its history inside torch.compile: "
                    "pass reserve_steps=<number of steps> to size it up front"
                )
            return
        # After this step a history holds at most `steps` norms; both heap sizes grow with it.
        self._steps += 1
        # reserve_steps on top: steps taken inside compiled regions or CUDA-graph replays are
        # not counted here.
        count = self._steps + self.reserve_steps
        for key in ("lower", "upper"):
            have = self._state[key].shape[1]
            if self._heap_columns(count, key) > have:
                grown = torch.zeros(h, self._heap_columns(count, key), dtype=torch.float32, device=device)
                grown[:, :have] = self._state[key]
                self._state[key] = grown

    def _update(self, grads, norms, present, device, policy, scale_grads):
        self._ensure_capacity(device)
        total = entry_norms = None
        if norms is not None:
            total = norms[0]
            entry_norms = norms[1] if self.per_tensor else total.reshape(1)
        rows = self._rows_tensor(present if self.per_tensor else range(1), device)
        values, coef, threshold = entry_outputs(len(present) if self.per_tensor else 1, device)
        s = self._state
        _ops.autoclip_update_(
            total,
            entry_norms,
            rows,
            s["lower"],
            s["upper"],
            s["window"],
            s["counters"],
            values,
            coef,
            threshold,
            self.percentile,
            self.lag == 1,
            policy,
            self.reference,
            grads,
            self.per_tensor,
            scale_grads,
        )
        if self.per_tensor:
            return values, coef, threshold
        return values, None, None

    def load_history(self, norms: torch.Tensor) -> None:
        """Seeds the history with a log of past total norms, oldest first, e.g. to resume from the
        norms a run logged, or to start with the history a long run would have built: afterwards
        the clipper steps as if its past steps had seen exactly these norms. The loaded history
        replaces the one the clipper had (an empty tensor is a fresh start).

        ``norms``: a 1-d floating-point tensor of finite norms >= 0 (kept as float32), on any
        device (the history moves to the grads' device at the next step). With
        ``history_size=N`` only the last N are kept. ``scope="global"`` only: ``scope="tensor"``
        keeps one history per tensor.

        Example: ``clipper.load_history(torch.tensor(logged_norms))``. It checks the norms on
        the host (a sync): call it before training, not in the step.
        """
        if self.per_tensor:
            raise ValueError(
                "AutoClip.load_history: norms seed the one history of scope='global'; this clipper has scope='tensor'"
            )
        if not isinstance(norms, torch.Tensor) or norms.dim() != 1 or not norms.is_floating_point():
            what = type(norms).__name__
            if isinstance(norms, torch.Tensor):
                what = f"a {norms.dim()}-d {norms.dtype} tensor"
            raise ValueError(f"AutoClip.load_history: norms must be a 1-d floating-point tensor, got {what}")
        norms = norms.detach().float()
        if not bool(torch.isfinite(norms).all()) or bool((norms < 0).any()):
            raise ValueError("AutoClip.load_history: norms must be finite and >= 0 (as float32)")
        device, count = norms.device, norms.numel()

        def history(columns):  # float32, as the norms it holds, whatever the default dtype
            return torch.zeros(1, columns, dtype=torch.float32, device=device)

        lower, upper, window = history(0), history(0), history(0)
        counters = torch.zeros(1, AUTOCLIP_COUNTERS, dtype=torch.int64, device=device)
        if self.history_size is None:
            # Sorted, split at the percentile's rank: descending is a max-heap, ascending a min-heap.
            ordered = torch.sort(norms).values
            below = self._lower_size(count)
            lower = history(self._heap_columns(count + self.reserve_steps, "lower"))
            upper = history(self._heap_columns(count + self.reserve_steps, "upper"))
            lower[0, :below] = ordered[:below].flip(0)
            upper[0, : count - below] = ordered[below:]
            counters[0, _LOWER], counters[0, _UPPER] = below, count - below
        else:
            # The last N norms, oldest first, the ring's head on the slot written next.
            kept = norms[-self.history_size :]
            window = history(self.history_size)
            window[0, : kept.numel()] = kept
            counters[0, _WINDOW] = kept.numel()
            counters[0, AutoClipCounter.WINDOW_HEAD] = kept.numel() % self.history_size
        self.reset()
        self.load_state_dict(
            {
                "config": self._config(),
                "host": {"steps": count},
                "state": {"lower": lower, "upper": upper, "window": window, "counters": counters},
            }
        )
