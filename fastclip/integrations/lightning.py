"""A Lightning callback that runs a fastclip clipper before every optimizer step.

Lightning calls ``on_before_optimizer_step`` after AMP unscaling, so the clipper sees the true
gradients. Leave Lightning's own ``gradient_clip_val`` unset. Importing this module needs
Lightning (``lightning`` or ``pytorch_lightning``)."""

from collections.abc import Callable, Iterable

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from ..clipper import Clipper, ClipResult

__all__ = ["FastClipCallback"]


class FastClipCallback(pl.Callback):
    """``FastClipCallback(lambda params: fastclip.ZClip(params, max_grad_norm=1.0))``

    The factory receives the LightningModule's parameters at the first optimizer step; the clipper
    is kept in the callback's state (checkpointed with the trainer). Each step logs the result's
    tensors as ``<prefix>/norm``, ``<prefix>/threshold``, ``<prefix>/clipped`` and
    ``<prefix>/nonfinite`` (Lightning reads them when it logs, so nothing syncs in the step).
    """

    def __init__(
        self,
        make_clipper: Callable[[Iterable[torch.nn.Parameter]], Clipper],
        log_prefix: str = "fastclip",
        log: bool = True,
    ):
        super().__init__()
        self.make_clipper = make_clipper
        self.log_prefix = log_prefix
        self.log = log
        self.clipper: Clipper | None = None
        self.last_result: ClipResult | None = None
        self._pending_state = None

    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        """Builds the clipper at the first step, then runs it and logs its result."""
        if self.clipper is None:
            self.clipper = self.make_clipper(pl_module.parameters())
            if self._pending_state is not None:
                self.clipper.load_state_dict(self._pending_state)
                self._pending_state = None
        result = self.clipper.step()
        self.last_result = result
        if self.log:
            for name in ("norm", "threshold", "clipped", "nonfinite"):
                value = getattr(result, name)
                if value.dim() == 0:
                    pl_module.log(f"{self.log_prefix}/{name}", value.float(), on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        """The clipper's state (empty before the first step)."""
        return {} if self.clipper is None else {"clipper": self.clipper.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores the clipper's state, now or when it is built at the first step."""
        if "clipper" in state_dict:
            if self.clipper is None:
                self._pending_state = state_dict["clipper"]
            else:
                self.clipper.load_state_dict(state_dict["clipper"])
