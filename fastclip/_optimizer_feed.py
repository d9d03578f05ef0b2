"""What the clippers and the step skipper hand to an attached optimizer's next step: ``grad_scale``
and ``found_inf``, the attributes that torch's fused optimizers read (``_step_supports_amp_scaling``;
GradScaler's protocol), set just before ``optimizer.step()`` runs and restored just after.

One pair of step hooks per optimizer, whatever number of sources are attached to it: each source
(a :class:`FeedSource`, one per attached clipper or skipper) gives ``(grad_scale or None,
found_inf or None)`` for the next step; the pre-hook multiplies the scales and takes the maximum of
the ``found_inf`` flags, on top of what is already set (GradScaler's), and the post-hook restores
exactly what was there before. Two independent save/restore pairs would not compose: post hooks
run in registration order, not last-in-first-out, so the second would restore the first's value.
"""

import weakref

import torch

__all__ = ["FeedSource", "add_source"]

_KEYS = ("grad_scale", "found_inf")
_ABSENT = object()  # an optimizer attribute that was not set (GradScaler may set one to None)
_FEEDS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, _Feed]" = weakref.WeakKeyDictionary()


class FeedSource:
    """One source's slot in an optimizer's feed: :meth:`set` before each ``optimizer.step()``."""

    def __init__(self, feed: "_Feed"):
        self._feed = feed
        self.pending = None  # (grad_scale or None, found_inf or None) for the next step

    def set(self, grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> None:
        """What the next ``optimizer.step()`` applies from this source (consumed by that step)."""
        self.pending = (grad_scale, found_inf)

    def clear(self) -> None:
        """Nothing from this source for the next step."""
        self.pending = None

    def remove(self) -> None:
        """Detaches this source; the optimizer's hooks go with the last one."""
        self._feed.remove(self)


class _Feed:
    def __init__(self, optimizer):
        self._optimizer = weakref.ref(optimizer)
        self._sources = []
        self._saved = None
        self._hooks = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    def add(self):
        source = FeedSource(self)
        self._sources.append(source)
        return source

    def remove(self, source):
        if source in self._sources:
            self._sources.remove(source)
        if not self._sources:
            for hook in self._hooks:
                hook.remove()
            optimizer = self._optimizer()
            if optimizer is not None and _FEEDS.get(optimizer) is self:
                del _FEEDS[optimizer]

    def _before_step(self, optimizer, args, kwargs):
        # A step that raised never ran the post hook: put back what was there before it first,
        # or its values would be saved as the optimizer's own and applied to every later step.
        self._restore(optimizer)
        self._saved = {k: optimizer.__dict__.get(k, _ABSENT) for k in _KEYS}
        for source in self._sources:
            if source.pending is None:
                continue
            scale, flag = source.pending
            if scale is not None:
                current = getattr(optimizer, "grad_scale", None)
                optimizer.grad_scale = scale if current is None else current * scale
            if flag is not None:
                current = getattr(optimizer, "found_inf", None)
                optimizer.found_inf = flag if current is None else torch.maximum(current, flag)

    def _after_step(self, optimizer, args, kwargs):
        self._restore(optimizer)
        for source in self._sources:
            source.pending = None

    def _restore(self, optimizer):
        if self._saved is not None:
            for key, value in self._saved.items():
                if value is _ABSENT:
                    optimizer.__dict__.pop(key, None)
                else:
                    setattr(optimizer, key, value)
            self._saved = None


def add_source(optimizer: torch.optim.Optimizer) -> FeedSource:
    """A new source feeding ``optimizer``'s steps (the optimizer's hooks are registered with its first)."""
    feed = _FEEDS.get(optimizer)
    if feed is None:
        feed = _FEEDS[optimizer] = _Feed(optimizer)
    return feed.add()
