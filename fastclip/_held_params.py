"""Parameters' grads read in C++ (``fastclip._C.grads_of``) instead of walking ``p.grad`` in Python.

On long lists of small parameters (MoE, LoRA), reading ``.grad`` from Python, checking it for
None and converting the list of grads into the op's argument is most of a clip. ``grads_of``
reads each grad from its parameter's Python object in C++ (with the GIL held, as Python does) and
gives the grads as a held list (:func:`fastclip.ops.held_list`), passed to the ``held_<op>`` form
of an op. Nothing is kept between calls: a grad replaced, resized, set to None or given another
dtype is seen, none is kept alive, and the parameters are not held (``torch.utils.swap_tensors``
works on them).

The grads are read in Python whenever C++ cannot see what Python sees: an entry that is not
exactly a ``torch.Tensor`` or ``torch.nn.Parameter`` (a subclass may override ``.grad``), a grad
that Python sees as a tensor subclass (DTensor, or one with ``__torch_function__``), a missing grad
of a tensor that is not a leaf (Python warns), a ``TorchFunctionMode`` active, ``torch.compile``.
"""

import torch

from ._library import _C

__all__ = ["HeldParams", "grads_read_in_cpp"]


def _read(params, skip_missing):
    """``_C.grads_of``, or None where Python must read (see the module's docstring)."""
    if torch.compiler.is_compiling() or torch._C._is_torch_function_mode_enabled():
        return None
    return _C.grads_of(params, skip_missing)


def grads_read_in_cpp(params: list) -> torch.ScriptObject | None:
    """The grads of the parameters of ``params`` that have one, as a held list, or None (read them
    in Python; see the module's docstring)."""
    return _read(params, True) if params else None


class HeldParams:
    """A clipper's parameters, whose grads :meth:`grads` reads in C++."""

    def __init__(self, params: list[torch.Tensor]):
        self._params = params

    def grads(self) -> torch.ScriptObject | None:
        """Every parameter's ``.grad`` as a held list, or None (read them in Python) when one has
        none, or C++ cannot see what Python sees (see the module's docstring)."""
        return _read(self._params, False) if self._params else None
