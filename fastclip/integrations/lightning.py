"""A Lightning callback that runs a fastclip clipper before every optimizer step.

Lightning calls ``on_before_optimizer_step`` after AMP unscaling, so the clipper sees the true
gradients. Leave Lightning's own ``gradient_clip_val`` unset. Importing this module needs
Lightning (``lightning`` or ``pytorch_lightning``)."""

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

__all__ = ["FastClipCallback"]


class FastClipCallback(pl.Callback):
    """``FastClipCallback(lambda params: fastclip.ZClip(params, max_grad_norm=1.0))``

    The factory receives the LightningModule's parameters at the first optimizer step; the clipper
    is kept in the callback's state (checkpointed with the trainer). Each step logs the result's
    tensors as ``<prefix>/norm``, ``<prefix>/threshold``, ``<prefix>/clipped`` and
    ``<prefix>/nonfinite`` (Lightning reads them when it logs, so nothing syncs in the step).
    """

    def __init__(self, make_clipper, log_prefix="fastclip", log=True):
        super().__init__()
        self.make_clipper = make_clipper
        self.log_prefix = log_prefix
        self.log = log
        self.clipper = None
        self.last_result = None
        self._pending_state = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
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

    def state_dict(self):
        return {} if self.clipper is None else {"clipper": self.clipper.state_dict()}

    def load_state_dict(self, state_dict):
        if "clipper" in state_dict:
            if self.clipper is None:
                self._pending_state = state_dict["clipper"]
            else:
                self.clipper.load_state_dict(state_dict["clipper"])
