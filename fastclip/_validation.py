"""Argument checks, in one place: each raises an error that names the argument (and the clipper or
list entry) and says what was expected.

The list checks (:func:`diagnose`) run only after an op has rejected a list, so a valid call pays
nothing for them.
"""

import math

import torch

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# -- the functions' arguments (torch's messages and exception types) -------------------------


def as_list(tensors, arg):
    """``tensors`` (a Tensor or an iterable of them) as a list."""
    if isinstance(tensors, torch.Tensor):
        return [tensors]
    try:
        return list(tensors)
    except TypeError:
        raise TypeError(f"{arg} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}") from None


def nonnegative(value, arg):
    """``value`` as a float >= 0 (inf allowed), TypeError/ValueError naming ``arg`` otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a number, got {value!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"{arg} must be >= 0, got {value}")
    return value


def diagnose(items, arg, grads=False):
    """Raises the precise error for the first bad entry of ``items`` (parameters whose ``.grad``
    is checked when ``grads``); returns if it finds none."""
    first_device = None
    for i, item in enumerate(items):
        where = f"{arg}[{i}]"
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"{where} is a {type(item).__name__}, expected a torch.Tensor")
        t = item.grad if grads else item
        if grads:
            if t is None:
                continue
            where += ".grad"
        if t.layout != torch.strided:
            raise RuntimeError(f"{where} has layout {t.layout}: sparse tensors are not supported")
        if t.dtype not in _DTYPES:
            raise RuntimeError(f"{where} has dtype {t.dtype}; supported: float32, float16, bfloat16, float64")
        if first_device is None:
            first_device = t.device
        elif t.device != first_device:
            raise RuntimeError(
                f"{where} is on {t.device} but the first one is on {first_device}; all tensors must be on one device"
            )


def checked(op, *args, items, arg, grads, **kwargs):
    """``op(*args, **kwargs)``; if the op rejects its list, re-raises naming the bad entry of ``items``."""
    try:
        return op(*args, **kwargs)
    except (RuntimeError, TypeError):
        diagnose(items, arg, grads=grads)
        raise


def check_norm_type_across_ranks(norm_type):
    """Refuses p = 0, which has no sum across ranks."""
    if norm_type == 0:
        raise ValueError(
            "fastclip: norm_type=0 (the count of nonzero tensors) cannot be combined across ranks: "
            "a sharded tensor would be counted once per rank"
        )


# -- the clippers' arguments (messages start with the clipper's name) ------------------------


def flatten_groups(entries, prefix=""):
    """``(tensors, spans)`` from a list of tensors and param groups (dicts with a ``"params"`` key:
    a tensor or an iterable of them): every tensor, in order, and for each param group
    ``(its index in entries, start, stop, the dict)``, its tensors being ``tensors[start:stop]``.
    The entries themselves are not checked here."""
    params, spans = [], []
    for g, entry in enumerate(entries):
        if isinstance(entry, dict):
            if "params" not in entry:
                raise ValueError(f"{prefix}param group {g} has no 'params' key")
            group = entry["params"]
            start = len(params)
            params.extend([group] if isinstance(group, torch.Tensor) else list(group))
            spans.append((g, start, len(params), entry))
        else:
            params.append(entry)
    return params, spans


def flatten_parameters(parameters, clipper_name, spans=None):
    """A list of distinct tensors from a Tensor, an iterable of them or of param groups (dicts);
    ``spans``, a list, receives the param groups' spans (see :func:`flatten_groups`)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    try:
        entries = list(parameters)
    except TypeError:
        raise TypeError(
            f"{clipper_name}: parameters must be an iterable of Tensors or of param groups (dicts), got "
            f"{type(parameters).__name__}"
        ) from None
    params, found = flatten_groups(entries, f"{clipper_name}: ")
    if spans is not None:
        spans.extend(found)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{clipper_name}: parameters[{i}] is a {type(p).__name__}, not a Tensor")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{clipper_name}: some parameters appear more than once")
    if not params:
        raise ValueError(f"{clipper_name}: got an empty parameter list")
    return params


def check_choice(value, name, choices, clipper_name):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{clipper_name}: {name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_number(value, name, clipper_name, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    """``value`` as a float within [low, high] (open ends where asked; None where allowed)."""
    if value is None and allow_none:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{clipper_name}: {name} must be a number, got {value!r}") from None
    ok = x == x
    if low is not None:
        ok = ok and (x > low if low_open else x >= low)
    if high is not None:
        ok = ok and (x < high if high_open else x <= high)
    if not ok:
        lo = "-inf" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "inf" if high is None else f"{high}{')' if high_open else ']'}"
        raise ValueError(f"{clipper_name}: {name} must lie in {lo}, {hi}, got {value!r}")
    return x


def check_int(value, name, clipper_name, low=0, below_log2=None):
    """``value`` if it is an int (not a bool) >= ``low`` (and < 2**below_log2 where given)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{clipper_name}: {name} must be an int >= {low}, got {value!r}")
    if below_log2 is not None and value >= 2**below_log2:
        raise ValueError(f"{clipper_name}: {name} must be < 2**{below_log2}, got {value}")
    return value


def check_grad_attr(grad_attr, clipper_name):
    """``grad_attr`` if it can name an attribute."""
    if not isinstance(grad_attr, str) or not grad_attr.isidentifier():
        raise ValueError(
            f"{clipper_name}: grad_attr must be an attribute name such as 'grad' or 'main_grad', got {grad_attr!r}"
        )
    return grad_attr
