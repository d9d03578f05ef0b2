"""Parameters held in C++ (``torch.classes.fastclip.ParamList``), so that a clip reads their
grads there instead of walking ``p.grad`` in Python.

On long lists of small parameters (MoE, LoRA), reading ``.grad`` from Python, checking it for
None and converting the list into the op's argument is most of a clip. The C++ read gives the
grads as a held list (:func:`fastclip.ops.held_list`), passed to the ``held_<op>`` form of an op.
Nothing about the grads is kept between calls: they are read afresh at every call, so a grad
replaced, resized, set to None or given another dtype is seen, and none is kept alive.
"""

import torch

__all__ = ["HeldParams", "grads_read_in_cpp"]

# The parameter types whose ``.grad`` in Python is the grad in C++ (a subclass may override it).
_PLAIN_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})


def _plain(params):
    return set(map(type, params)) <= _PLAIN_TYPES


def grads_read_in_cpp(params: list) -> torch.ScriptObject | None:
    """The grads of the parameters of ``params`` that have one, as a held list, or None (read them
    in Python) when ``params`` holds anything but tensors and Parameters, a grad is a tensor
    subclass such as a DTensor, or under ``torch.compile``."""
    if torch.compiler.is_compiling() or not params or not _plain(params):
        return None
    return torch.classes.fastclip.ParamList(params).grads(True)


class HeldParams:
    """``params`` as a ParamList, made at the first :meth:`grads` (not copied or pickled with the
    clipper: a copy makes its own)."""

    def __init__(self, params: list[torch.Tensor]):
        self._params = params
        self._plain = bool(params) and _plain(params)
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
        return self._held.grads(False)
