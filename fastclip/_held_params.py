"""A clipper's parameters held in C++ (``torch.classes.fastclip.ParamList``), so that a step reads
their grads there instead of walking ``p.grad`` in Python.

On long lists of small parameters (MoE, LoRA), reading ``.grad`` from Python, checking it for
None and converting the list into the op's argument is most of a step. The C++ read gives the
grads as a held list (:func:`fastclip.ops.held_list`), passed to the ``held_<op>`` form of the
clipper's stats op. Nothing about the grads is kept between steps: they are read afresh at every
step, so a grad replaced, resized, set to None or given another dtype is seen, and none is kept
alive by the clipper.
"""

import torch

__all__ = ["HeldParams"]

# The parameter types whose ``.grad`` in Python is the grad in C++ (a subclass may override it).
_PLAIN_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})


class HeldParams:
    """``params`` as a ParamList, made at the first :meth:`grads` (not copied or pickled with the
    clipper: a copy makes its own)."""

    def __init__(self, params: list[torch.Tensor]):
        self._params = params
        self._plain = bool(params) and set(map(type, params)) <= _PLAIN_TYPES
        self._held = None

    def __getstate__(self):
        return {"params": self._params}

    def __setstate__(self, state):
        self.__init__(state["params"])

    def grads(self) -> torch.ScriptObject | None:
        """Every parameter's ``.grad`` as a held list, or None (read them in Python) when one has
        none, one is a tensor subclass such as a DTensor, a parameter is of a subclass of
        Parameter, or under ``torch.compile`` (which cannot trace a held list)."""
        if not self._plain or torch.compiler.is_compiling():
            return None
        if self._held is None:
            self._held = torch.classes.fastclip.ParamList(self._params)
        return self._held.grads()
