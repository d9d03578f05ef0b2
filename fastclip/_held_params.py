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
that Python sees as a tensor subclass (DTensor, or one with ``__torch_function__``), a grad that
requires grad (``create_graph=True``), a missing grad of a tensor that is not a leaf (Python warns),
an active ``TorchFunctionMode`` (other than ``torch.set_default_device``'s) or
``TorchDispatchMode``, ``torch.jit.trace``, ``torch.compile``.
"""

import torch
from torch.utils._device import DeviceContext

from ._library import _C

__all__ = ["HeldParams", "grads_read_in_cpp"]


def _modes_would_see_the_read():
    """Whether a mode or a tracer would see Python read the grads, or the ops on them: a
    TorchFunctionMode other than torch.set_default_device's (which sees neither), any
    TorchDispatchMode (the held ops take no tensor), torch.jit.trace, torch.compile."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._len_torch_dispatch_stack():
        return True
    return torch._C._is_torch_function_mode_enabled() and not all(
        isinstance(mode, DeviceContext) for mode in torch.overrides._get_current_function_mode_stack()
    )


def _read(params, skip_missing):
    """``_C.grads_of``, or None where Python must read (see the module's docstring)."""
    return None if _modes_would_see_the_read() else _C.grads_of(params, skip_missing)


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
