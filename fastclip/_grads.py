"""Reading the parameters' grads: the one place the functions, the clippers and the integrations
read them.

* :func:`present_grads` and :func:`present_and_grads`: the grads present (``.grad`` or another
  attribute), gathered and checked for None in C (``map``, ``operator``) rather than by a Python
  loop, since on long lists of small tensors gathering the grads is most of a clip.
* :func:`grads_in_cpp`: the grads read in C++ (``fastclip._C.grads_of``) instead of walking
  ``p.grad`` in Python, as a held list (:func:`fastclip.ops.held_list`), passed to the
  ``held_<op>`` form of an op. On long lists of small parameters (MoE, LoRA), reading ``.grad``
  from Python, checking it for None and converting the list of grads into the op's argument is
  most of a clip. ``grads_of`` reads each grad from its parameter's Python object in C++ (with the
  GIL held, as Python does). Nothing is kept between calls: a grad replaced, resized, set to None
  or given another dtype is seen, none is kept alive, and the parameters are not held
  (``torch.utils.swap_tensors`` works on them).

  The grads are read in Python whenever C++ cannot see what Python sees: an entry that is not
  exactly a ``torch.Tensor`` or ``torch.nn.Parameter`` (a subclass may override ``.grad``), a
  grad that Python sees as a tensor subclass (DTensor, or one with ``__torch_function__``), a grad
  that requires grad (``create_graph=True``), a missing grad of a tensor that is not a leaf
  (Python warns), an active ``TorchFunctionMode`` (other than ``torch.set_default_device``'s) or
  ``TorchDispatchMode``, ``torch.jit.trace``, ``torch.compile``; and inside
  :func:`read_in_python`, the switch for tests and A/B benchmarks.
* :class:`DTensorShardCache`: DTensor grads (FSDP2, tensor parallel) split into their local
  shards (:func:`fastclip.distributed.split_dtensors`), and the shards kept as a held list while
  the same DTensors are passed call after call.
"""

import contextlib
import itertools
import operator
import weakref

import torch
from torch.utils._device import DeviceContext

from . import ops
from ._library import _C
from ._validation import diagnose, flatten_groups
from .distributed import split_dtensors, split_dtensors_and_kind

__all__ = [
    "DTensorShardCache",
    "grads_in_cpp",
    "grads_with_groups",
    "present_and_grads",
    "present_grads",
    "read_in_python",
]


# -- the grads present, read in Python ---------------------------------------------------------


def present_grads(params, grad_attr):
    """Every parameter's ``grad_attr``, or None when some parameter has none (or lacks the
    attribute): the caller then filters. Gathered and checked for None in C (map, operator.is_),
    at a fraction of the cost of a Python loop."""
    try:
        grads = list(map(operator.attrgetter(grad_attr), params))
    except AttributeError:
        return None
    return None if any(map(operator.is_, grads, itertools.repeat(None))) else grads


def present_and_grads(params, grad_attr="grad", missing_attr_ok=True):
    """``(positions, grads)``: the positions in ``params`` (a list) of the parameters whose
    ``grad_attr`` is not None, as a range when all are, and those grads. A parameter that lacks
    the attribute has none, or, unless ``missing_attr_ok``, raises AttributeError."""
    grads = present_grads(params, grad_attr)
    if grads is not None:
        return range(len(grads)), grads
    if missing_attr_ok:
        grads = [getattr(p, grad_attr, None) for p in params]
    else:
        grads = [getattr(p, grad_attr) for p in params]
    present = [i for i, g in enumerate(grads) if g is not None]
    return present, [grads[i] for i in present]


def grads_with_groups(params):
    """``(params, grads, groups)`` for the functions (``.grad``): ``params`` (a list of tensors or
    param groups) with the param groups flattened, the grads present, and None, or for param
    groups ``(spans, positions of the parameters that have grads or None for all)``. An entry
    without ``.grad`` is named (:func:`fastclip._validation.diagnose`)."""
    grads = present_grads(params, "grad")
    if grads is not None:  # every parameter has a grad (a dict has none: param groups go on)
        return params, grads, None
    spans = None
    if any(map(isinstance, params, itertools.repeat(dict))):
        params, spans = flatten_groups(params, "parameters: ")
        grads = present_grads(params, "grad")
        if grads is not None:
            return params, grads, (spans, None)
    try:
        present = [i for i, p in enumerate(params) if p.grad is not None]
    except AttributeError:
        diagnose(params, "parameters", grads=True)
        raise
    return params, [params[i].grad for i in present], (None if spans is None else (spans, present))


# -- the grads read in C++ -----------------------------------------------------------------------

_read_in_cpp = True  # False inside read_in_python()


@contextlib.contextmanager
def read_in_python():
    """Within it, :func:`grads_in_cpp` gives None: every function and clipper reads the grads in
    Python, as it does when C++ cannot see what Python sees. For tests and A/B benchmarks of the
    two reads; it switches the read for the whole process (not one thread)."""
    global _read_in_cpp
    before, _read_in_cpp = _read_in_cpp, False
    try:
        yield
    finally:
        _read_in_cpp = before


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


def grads_in_cpp(params: list, skip_missing: bool = False) -> torch.ScriptObject | None:
    """The grads of ``params`` (a list of parameters) read in C++, as a held list, or None: read
    them in Python (see the module's docstring), and with ``skip_missing=False`` also when some
    parameter has no grad. ``skip_missing``: the grads of the parameters that have one."""
    return _read(params, skip_missing) if params and _read_in_cpp else None


# -- DTensor grads: their local shards, held across calls ----------------------------------------


class DTensorShardCache:
    """:func:`fastclip.distributed.split_dtensors` for a caller that passes the same DTensor grads
    call after call (a clipper's step, FSDP2 grads kept between steps): the last list's local
    shards and keys, and the shards as a held list (:func:`fastclip.ops.held_list`), so that the
    ops are not handed a Python list of tens of thousands of tensors at every call (converting one
    costs more than the clip, and twice as much for DTensors' shards as for plain tensors).

    The last list is kept while every one of its DTensors lives (a weak reference to each): the
    next list is the same if it holds the same objects, compared by ``id`` (a live object's id is
    its own). The first of them to die (``zero_grad(set_to_none=True)``) drops the entry, and with
    it the shards it held. A DTensor's local shard and placements are taken to stay those it was
    made with (DTensors are immutable; FSDP2 accumulates into the shard in place). Only lists of
    DTensors alone are kept: a plain tensor held by the list would keep its own Python object
    alive, and its weak reference would never fire. Not under ``torch.compile``.
    """

    def __init__(self):
        self._last = None  # (ids, local, keys, held list or None, watchers, token)

    # A cache: a copy (copy.deepcopy of a clipper) or a pickle starts without it (a held list
    # cannot be copied).
    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._last = None

    def split(self, tensors: list, where: str = "tensors", hold: bool = True) -> tuple[list, list | None, object]:
        """``(local tensors, keys, held list or None)``, as :func:`split_dtensors`, with the held
        list of the local tensors when every tensor is a DTensor and ``hold`` (a caller whose op
        takes no held list passes False: the shards are kept, not converted)."""
        if torch.compiler.is_compiling():
            return (*split_dtensors(tensors, where), None)
        last = self._last
        if last is not None and len(tensors) == len(last[0]) and list(map(id, tensors)) == last[0]:
            return last[1], last[2], last[3]
        local, keys, only_dtensors = split_dtensors_and_kind(tensors, where)
        if not only_dtensors or not local:
            return local, keys, None
        self._last = None  # the previous list's shards go now, not after the next one is held
        token, this = object(), weakref.ref(self)

        def forget(_, this=this, token=token):
            cache = this()
            if cache is not None and cache._last is not None and cache._last[5] is token:
                cache._last = None

        held = None
        if hold:
            held = ops.held_list(local)
            # Checked as a list written in place now, before a step reads them: the scale at the
            # end of a step would refuse shards that share memory only after the statistics moved
            # on. A factor of exactly 1 writes nothing; the scale's own check then finds the list
            # passed.
            ops.multi_tensor_scale_(held, torch.ones((), device=local[0].device))
        watchers = [weakref.ref(t, forget) for t in tensors]
        self._last = (list(map(id, tensors)), local, keys, held, watchers, token)
        return local, keys, held
