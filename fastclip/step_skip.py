"""Step skipping: drop an optimizer step whose loss or gradient norm is an outlier, decided on the
device (OLMo-core's ``SkipStepOptimizer.get_step_factor``, Levanter's ``skipstep``).

A step is kept when ``loss - mean <= sigma * std`` for the losses and for the norms, each over the
last ``window`` earlier values (one-sided, unbiased std), and always kept while fewer than
``max(2, window // 2)`` values are known. Every value enters the history, skipped or not, except
that by default a non-finite loss or norm skips its step without entering it.
"""

import math

import torch

from . import _ops, _optimizer_feed
from ._layouts import SKIP_STEP_COUNTERS, SKIP_STEP_RESULT_SLOTS, SkipStepCounter, SkipStepResult, SlotResult
from ._validation import check_int, check_number

__all__ = ["SkipResult", "StepSkipper"]

_SERIES = 2  # history rows: the losses, then the norms (csrc/common/skip_step.h)


class SkipResult(SlotResult):
    """One step's decision, as device tensors: reading one (``bool(r.skip)``) is when you sync.

    ``factor``: float32, 1.0 to keep the step and 0.0 to skip it (multiply an update by it, as
    OLMo-core's optimizers do). ``skip``: the same as a bool. ``nonfinite``: whether the loss or the
    norm was NaN or inf. ``loss_mean``, ``loss_std``, ``norm_mean``, ``norm_std``: the statistics
    of the earlier values the step was compared with (float32; NaN with no earlier value, a std
    with fewer than two).
    """

    _slots = {
        "factor": SkipStepResult.FACTOR,
        "loss_mean": SkipStepResult.LOSS_MEAN,
        "loss_std": SkipStepResult.LOSS_STD,
        "norm_mean": SkipStepResult.NORM_MEAN,
        "norm_std": SkipStepResult.NORM_STD,
    }
    factor: torch.Tensor
    loss_mean: torch.Tensor
    loss_std: torch.Tensor
    norm_mean: torch.Tensor
    norm_std: torch.Tensor

    def __init__(self, values: torch.Tensor):
        super().__init__(values)

    @property
    def skip(self) -> torch.Tensor:
        """Bool device tensor: whether this step is to be skipped (no sync until read)."""
        return self._flag(SkipStepResult.SKIPPED)

    @property
    def nonfinite(self) -> torch.Tensor:
        """Bool device tensor: whether the loss or the norm was NaN or inf."""
        return self._flag(SkipStepResult.NONFINITE)

    def __repr__(self):
        return (
            f"SkipResult(skip={self.skip}, factor={self.factor}, loss_mean={self.loss_mean}, "
            f"loss_std={self.loss_std}, norm_mean={self.norm_mean}, norm_std={self.norm_std})"
        )


class StepSkipper:
    """Skips a training step whose loss or gradient norm spikes, without syncing the host.

    ``step(loss, norm)`` takes this step's loss and pre-clip gradient norm (0-d tensors on any
    device, e.g. ``clipper.step().norm``, or Python numbers) and returns a :class:`SkipResult`.
    The step is kept when ``loss - mean(losses) <= sigma * std(losses)`` and the same holds for the
    norms, over the last ``window`` earlier values (one-sided: a drop never skips; unbiased std,
    as ``torch.std_mean``), and always while fewer than ``max(2, window // 2)`` values are known
    (this one included). Every value enters the history, skipped or not. The statistics are float64
    on the values' device, summed in a fixed order: the same decisions on the CPU and on CUDA.

    Default mode differs from OLMo-core's rule where it would compare with a NaN: a NaN or infinite
    loss or norm skips its step and enters no history (in OLMo-core one NaN makes every mean NaN,
    skipping every step until it leaves the window), and with fewer than two earlier values
    (windows of 5 or less) the step is kept. ``reference=True`` is OLMo-core's rule, NaN entering
    the history, for parity tests (its statistics in float64, where OLMo-core's follow the values'
    dtype: a value within rounding of the bound may be decided differently).

    ``attach(optimizer)`` makes a skipped step reach torch's fused optimizers (``fused=True``:
    Adam, AdamW, SGD, Adagrad) as ``found_inf``: the step leaves parameters and optimizer state
    untouched. It composes with a clipper attached to the same optimizer and with
    ``torch.amp.GradScaler``: the step is skipped if any of them asks.

    Example::

        clipper = fastclip.ZClip(model.parameters()).attach(optimizer)
        skipper = fastclip.StepSkipper(window=128, sigma=6.0).attach(optimizer)
        ...
        loss.backward()
        skipper.step(loss, clipper.step().norm)  # decides on the device
        optimizer.step()  # skipped, on the device, when the skipper said so

    ``state_dict()``/``load_state_dict()`` checkpoint the history exactly (the same decisions after
    a resume); ``reset()`` forgets it.
    """

    def __init__(self, window: int = 128, sigma: float = 6.0, reference: bool = False):
        self.window = check_int(window, "window", "StepSkipper", low=1)
        self.sigma = check_number(sigma, "sigma", "StepSkipper", 0.0, math.inf, low_open=True, high_open=True)
        self.reference = bool(reference)
        self._state = {}  # "history", "counters": created on the values' device at the first step
        self._feed = None  # an attached optimizer's (_optimizer_feed.FeedSource)

    # -- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, loss: torch.Tensor | float, norm: torch.Tensor | float) -> SkipResult:
        """Decides whether this step (``loss``, ``norm``) is skipped, and adds it to the history.

        ``loss`` and ``norm`` are one value each: 0-d tensors of a float dtype (on any device; a
        tensor on another device than the other is copied to its device) or Python numbers. The
        history lives on their device. No host sync. An attached optimizer's next step is skipped
        if this returns ``skip``.
        """
        loss_t, norm_t = self._values(loss, norm)
        history, counters = self._state_on(norm_t.device)
        values = torch.empty(SKIP_STEP_RESULT_SLOTS, dtype=torch.float32, device=norm_t.device)
        _ops.skip_step_update_(loss_t, norm_t, history, counters, values, self.window, self.sigma, self.reference)
        if self._feed is not None:
            self._feed.set(None, values[SkipStepResult.SKIPPED])
        return SkipResult(values)

    def _values(self, loss, norm):
        """(loss, norm) as tensors on one device: a tensor's (the norm's first), else the state's
        (else the CPU). Numbers are filled on the device (no host data is copied)."""
        for name, value in (("loss", loss), ("norm", norm)):
            if not isinstance(value, (torch.Tensor, int, float)) or isinstance(value, bool):
                raise TypeError(f"StepSkipper: {name} must be a tensor or a number, got {type(value).__name__}")
        tensors = [v for v in (norm, loss) if isinstance(v, torch.Tensor)]
        if tensors:
            device = tensors[0].device
        elif self._state:
            device = self._state["history"].device
        else:
            device = torch.device("cpu")

        def on_device(value):
            if isinstance(value, torch.Tensor):
                # Asynchronous only to a GPU: the CPU op reads a host copy at once.
                return value.detach().to(device, non_blocking=device.type != "cpu")
            return torch.full((), float(value), dtype=torch.float64, device=device)

        return on_device(loss), on_device(norm)

    def _state_on(self, device):
        if not self._state:
            self._state = {
                "history": torch.zeros(_SERIES, self.window, dtype=torch.float64, device=device),
                "counters": torch.zeros(SKIP_STEP_COUNTERS, dtype=torch.int64, device=device),
            }
        for key, t in self._state.items():
            if t.device != device:
                self._state[key] = t.to(device)
        return self._state["history"], self._state["counters"]

    @property
    def steps(self) -> torch.Tensor:
        """Steps seen so far, as an int64 0-d device tensor (no sync until read)."""
        return self._counter(SkipStepCounter.STEPS)

    @property
    def skipped_steps(self) -> torch.Tensor:
        """Steps skipped so far, as an int64 0-d device tensor (no sync until read)."""
        return self._counter(SkipStepCounter.SKIPPED)

    def _counter(self, index):
        if not self._state:
            return torch.zeros((), dtype=torch.int64)
        return self._state["counters"][index].clone()

    # -- attach to an optimizer -----------------------------------------------------------

    def attach(self, optimizer: torch.optim.Optimizer) -> "StepSkipper":
        """Makes each skipped step reach ``optimizer`` as ``found_inf``, so its next ``step()``
        leaves the parameters and its state untouched, decided on the device.

        ``optimizer`` must read ``found_inf`` (``_step_supports_amp_scaling``): torch's Adam,
        AdamW, SGD and Adagrad with ``fused=True``. Others raise ``ValueError``; for them, skip on
        the host instead (``if not result.skip: optimizer.step()``, one sync per step). Composes
        with clippers attached to the same optimizer and with ``torch.amp.GradScaler``, in any
        order: the step is skipped if any asks, the clipper's ``grad_scale`` is applied, and the
        optimizer's ``grad_scale``/``found_inf`` are as they were once the step is done.
        Returns ``self``.
        """
        if self._feed is not None:
            raise RuntimeError("StepSkipper is already attached to an optimizer")
        if not getattr(optimizer, "_step_supports_amp_scaling", False):
            raise ValueError(
                f"StepSkipper.attach: {type(optimizer).__name__} does not read found_inf, so it cannot skip a step "
                "decided on the device; build it with fused=True (torch.optim.Adam, AdamW, SGD and Adagrad then read "
                "found_inf), or skip on the host without attaching: `if not result.skip: optimizer.step()` (one "
                "host sync per step)"
            )
        self._feed = _optimizer_feed.add_source(optimizer)
        return self

    def detach(self) -> None:
        """Undoes :meth:`attach`."""
        if self._feed is not None:
            self._feed.remove()
        self._feed = None

    # -- state ----------------------------------------------------------------------------

    def _config(self):
        return {"window": self.window, "sigma": self.sigma, "reference": self.reference}

    def state_dict(self) -> dict:
        """The hyperparameters, the history of earlier losses and norms and the counters."""
        return {"config": self._config(), "state": {k: t.detach().clone() for k, t in self._state.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores :meth:`state_dict`'s output (tensors from any device): the following steps make
        the same decisions as they would have without the save and load. Refuses a checkpoint made
        with other hyperparameters. Checks the counters on the host (one sync for GPU tensors)."""
        try:
            config, state = state_dict["config"], state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError("StepSkipper: state_dict must hold 'config' and 'state'") from None
        if config != self._config():
            raise ValueError(f"StepSkipper: the checkpoint was saved with {config}, this skipper has {self._config()}")
        if state:
            history, counters = state.get("history"), state.get("counters")
            if (
                set(state) != {"history", "counters"}
                or not isinstance(history, torch.Tensor)
                or not isinstance(counters, torch.Tensor)
                or history.dtype != torch.float64
                or history.shape != (_SERIES, self.window)
                or counters.dtype != torch.int64
                or counters.shape != (SKIP_STEP_COUNTERS,)
            ):
                raise ValueError(
                    f"StepSkipper: the checkpoint's state does not hold a float64 history of shape "
                    f"({_SERIES}, {self.window}) and {SKIP_STEP_COUNTERS} int64 counters"
                )
            filled, head = (int(v) for v in counters[[SkipStepCounter.FILLED, SkipStepCounter.HEAD]].tolist())
            if not (0 <= filled <= self.window and 0 <= head < self.window):
                raise ValueError(
                    f"StepSkipper: the checkpoint's counters are out of range (filled {filled}, head "
                    f"{head}, window {self.window})"
                )
        device = self._state["history"].device if self._state else None
        self._state = {k: (t.to(device) if device is not None else t).clone() for k, t in state.items()}

    def reset(self) -> None:
        """Forgets the history and the counters: the next step is the first."""
        self._state = {}
        if self._feed is not None:
            self._feed.clear()

    def __repr__(self):
        return f"StepSkipper(window={self.window}, sigma={self.sigma}, reference={self.reference})"
