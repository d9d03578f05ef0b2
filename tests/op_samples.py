"""Sample inputs for every op of the ``fastclip`` library (extension-cpp's ``sample_inputs``): one table,
:data:`SAMPLES`, from op name to a function ``(device, gen) -> list of argument tuples``, each tuple a valid
call of ``torch.ops.fastclip.<name>`` (schemas in csrc/ops/<op>.cpp). Every call makes fresh random
tensors from the torch.Generator ``gen`` (CPU; moved to ``device``), with a few awkward cases per op:
mixed dtypes, a non-contiguous (transposed) tensor, an empty tensor where the op allows one, and for
the stateful ops a state already advanced by a few steps of the op. State tensors are built as the
clippers build them (fastclip._layouts has their sizes).

The ``held_<op>`` entries are their list op's samples with the list held (:func:`held_args`).
:func:`library_op_names` lists the ops the dispatcher knows, for tests/test_op_contract.py to check
that none lacks samples.
"""

import math

import torch

import fastclip
from fastclip._layouts import (
    ADAGC_GAMMA,
    AUTOCLIP_COUNTERS,
    RESULT_SLOTS,
    SKIP_STEP_COUNTERS,
    SKIP_STEP_RESULT_SLOTS,
    STABLE_SPAM_ROW,
    ZCLIP_HEADER,
    SkipStepCounter,
    StableSPAMRow,
)

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
_ops = torch.ops.fastclip


def library_op_names():
    """The names of the ``fastclip`` library's ops, walked from the dispatcher (overload names stripped)."""
    names = torch._C._dispatch_get_all_op_names()
    return sorted({name.split("::", 1)[1].split(".", 1)[0] for name in names if name.startswith("fastclip::")})


def randn(shape, device, gen, dtype=F32, scale=1.0):
    """Random normal values drawn in float64 from ``gen``, then rounded to ``dtype`` on ``device``."""
    return (torch.randn(shape, generator=gen, dtype=F64) * scale).to(device=device, dtype=dtype)


def rand(shape, device, gen, dtype=F32, low=0.0, high=1.0):
    """Random uniform values in [low, high)."""
    return (low + (high - low) * torch.rand(shape, generator=gen, dtype=F64)).to(device=device, dtype=dtype)


def plain_list(device, gen):
    """Three small float32 and bfloat16 tensors (the list tests/test_ops.py's opcheck used)."""
    return [randn((3, 4), device, gen), randn(17, device, gen, BF16), randn((2, 2, 2), device, gen)]


def awkward_list(device, gen):
    """Every supported dtype, a transposed (non-contiguous) tensor, an empty one, a 0-d one."""
    return [
        randn(7, device, gen, F16),
        randn((5, 3), device, gen, BF16).t(),
        randn(0, device, gen, F64),
        randn((2, 3, 4), device, gen, F32, scale=4.0),
        randn((), device, gen, F32),
    ]


def stats_grads(device, gen):
    """The clipper statistics ops' grads (tests/test_clipper_state.py's opcheck): one larger than the rest."""
    return [randn((4, 3), device, gen), randn(5, device, gen, scale=9.0), randn(2, device, gen)]


def awkward_stats_grads(device, gen):
    """Three grads: mixed dtypes, a transposed one, an empty one."""
    return [randn((3, 4), device, gen, BF16).t(), randn(0, device, gen, F64), randn(6, device, gen, F16, scale=9.0)]


# -- the list ops ------------------------------------------------------------------------------------


def multi_tensor_norm(device, gen):
    return [
        (plain_list(device, gen), 2.0, True),
        (plain_list(device, gen), math.inf, False),
        (awkward_list(device, gen), 1.0, True),
    ]


def multi_tensor_scale_(device, gen):
    return [
        (plain_list(device, gen), rand((), device, gen, low=0.25)),
        (plain_list(device, gen), rand(3, device, gen, low=0.25)),
        (awkward_list(device, gen), rand(5, device, gen, low=0.25), True),
    ]


def multi_tensor_clip_by_norm_(device, gen):
    return [
        (plain_list(device, gen), rand((), device, gen, low=5.0, high=10.0), 1.0),
        (awkward_list(device, gen), rand((), device, gen, low=5.0, high=10.0), 2.0),
    ]


def multi_tensor_clip_grad_norm_(device, gen):
    return [(plain_list(device, gen), 0.5, 2.0), (awkward_list(device, gen), 1.0, math.inf)]


def multi_tensor_clamp_(device, gen):
    return [(plain_list(device, gen), 0.25), (awkward_list(device, gen), 0.5)]


def agc_clip_(device, gen):
    grads = stats_grads(device, gen)
    params = [randn(g.shape, device, gen) for g in grads]
    # A transposed grad with its parameter, an empty one, a 0-d one, a row of one element; bfloat16.
    odd = [
        randn((3, 5), device, gen, BF16).t(),
        randn((0, 3), device, gen),
        randn((), device, gen),
        randn((4, 1), device, gen),
    ]
    odd_params = [randn(odd[0].shape, device, gen, BF16), *(randn(g.shape, device, gen) for g in odd[1:])]
    return [(grads, params, 0.01, 1e-3), (odd, odd_params, 0.05, 1e-3)]


# -- the clippers' statistics ops -----------------------------------------------------------------------
# Each has a sample with its norms given and one with them computed from the grads (the pair
# tests/test_clipper_state.py's opcheck ran), and one on awkward grads with a state that a few
# steps of the op (norms given, no grads) have advanced.


def _norms(device, gen, given, entries=3):
    """``(total norm, per-entry norms)``: random when ``given``, else None (computed by the op)."""
    if not given:
        return None, None
    return rand((), device, gen, low=0.5, high=1.5), rand(entries, device, gen)


def _zclip_args(grads, norm, state, result, warmup_steps=3):
    return (grads, norm, state, result, 0.9, 2.5, 1.0, 1e-6, warmup_steps, "zscore", "adaptive_scaling", 1.0, False)


def zclip_update_(device, gen):
    samples = []
    for given in (True, False):
        norm, _ = _norms(device, gen, given)
        state = torch.zeros(ZCLIP_HEADER + 3, dtype=F64, device=device)
        result = torch.empty(RESULT_SLOTS, device=device)
        samples.append((*_zclip_args(stats_grads(device, gen), norm, state, result), "skip", False, True))
    # Past the warm-up (4 norms, warmup_steps 3), percentile mode, mean clipping, the reference rule.
    state = torch.zeros(ZCLIP_HEADER + 3, dtype=F64, device=device)
    result = torch.empty(RESULT_SLOTS, device=device)
    for _ in range(4):
        _ops.zclip_update_(
            *_zclip_args([], rand((), device, gen, low=0.5, high=1.5), state, result), "skip", True, True
        )
    grads, z = awkward_stats_grads(device, gen), (0.8, 1.5, None, 1e-6, 3, "percentile", "mean", 1.5, True)
    samples.append((grads, None, state, result, *z, "zero", True, True))
    return samples


def normclip_update_(device, gen):
    samples = []
    for given in (True, False):
        norm, _ = _norms(device, gen, given)
        samples.append(
            (stats_grads(device, gen), norm, torch.empty(RESULT_SLOTS, device=device), 1.0, 2.0, "zero", False)
        )
    samples.append(
        (awkward_stats_grads(device, gen), None, torch.empty(RESULT_SLOTS, device=device), 0.5, math.inf, "skip", True)
    )
    return samples


def _autoclip_state(device, heap_columns, window, histories=3):
    """lower, upper, window, counters: zeros, as AutoClip makes them."""
    lower = torch.zeros(histories, heap_columns, device=device)
    upper = torch.zeros(histories, heap_columns, device=device)
    ring = torch.zeros(histories, window, device=device)
    counters = torch.zeros(histories, AUTOCLIP_COUNTERS, dtype=torch.int64, device=device)
    return lower, upper, ring, counters


def _autoclip_outputs(device, entries=3):
    """result, coef, threshold."""
    return (
        torch.empty(RESULT_SLOTS, device=device),
        torch.empty(entries, device=device),
        torch.empty(entries, device=device),
    )


def autoclip_update_(device, gen):
    samples = []
    rows = torch.arange(3, device=device)
    options = (10.0, False, "skip", False, True, True)  # percentile, lag, on_nonfinite, reference, per_tensor, scale
    for given in (True, False):
        total, norms = _norms(device, gen, given)
        history, outputs = _autoclip_state(device, 8, 0), _autoclip_outputs(device)
        samples.append((stats_grads(device, gen), total, norms, rows, *history, *outputs, *options))
    # A ring buffer (history_size 5) a few norms in, lag, rows in another order.
    rows = torch.tensor([2, 0, 1], device=device)
    history = _autoclip_state(device, 0, 5)
    options = (60.0, True, "skip", False, True, True)
    for _ in range(3):
        _ops.autoclip_update_([], *_norms(device, gen, True), rows, *history, *_autoclip_outputs(device), *options)
    outputs = _autoclip_outputs(device)
    samples.append(
        (awkward_stats_grads(device, gen), None, None, rows, *history, *outputs, 60.0, True, "zero", False, True, True)
    )
    return samples


def _adagc_state(device, entries=3):
    """gamma, steps: zeros, as AdaGC makes them."""
    return torch.zeros(entries, ADAGC_GAMMA, dtype=F64, device=device), torch.zeros(1, dtype=F64, device=device)


def adagc_update_(device, gen):
    samples = []
    rows = torch.arange(3, device=device)
    options = (1.0, 1.05, 0.98, 2, 1e-6)  # lambda_abs, lambda_rel, beta, warmup_steps, eps
    for given in (True, False):
        total, norms = _norms(device, gen, given)
        state, outputs = _adagc_state(device), _autoclip_outputs(device)
        samples.append((stats_grads(device, gen), total, norms, rows, *state, *outputs, *options, "skip", False, True))
    # Past the warm-up (3 steps, warmup_steps 2), the reference rule, rows in another order.
    rows = torch.tensor([1, 2, 0], device=device)
    state = _adagc_state(device)
    for _ in range(3):
        _ops.adagc_update_(
            [], *_norms(device, gen, True), rows, *state, *_autoclip_outputs(device), *options, "skip", True, True
        )
    outputs = _autoclip_outputs(device)
    samples.append((awkward_stats_grads(device, gen), None, None, rows, *state, *outputs, *options, "zero", True, True))
    return samples


# -- Stable-SPAM ---------------------------------------------------------------------------------------


def _stable_spam_inputs(device, gen, awkward=False):
    """Grads spanning CPU chunks (65,536 elements) and an empty one (tests/test_stable_spam.py's op_args),
    or mixed dtypes and a transposed grad; their state rows, reversed; states that make AdaClip rescale
    the large grads."""
    if awkward:
        grads = [randn((40, 30), device, gen, BF16).t(), randn(9, device, gen, F16), randn(5, device, gen, F64)]
    else:
        grads = [randn(70_000, device, gen), randn((4, 3), device, gen), randn(0, device, gen)]
    rows = torch.arange(len(grads), device=device).flip(0)
    state = rand((len(grads), STABLE_SPAM_ROW), device, gen, F64)
    state[:, StableSPAMRow.STEPS] = 10.0
    return grads, rows, state


def stable_spam_norms(device, gen):
    samples = []
    for awkward in (False, True):
        grads, rows, state = _stable_spam_inputs(device, gen, awkward)
        maxima = _ops.stable_spam_norms(grads, None, rows, state, 0.999)[0].clone()
        samples += [(grads, None, rows, state, 0.999), (grads, maxima, rows, state, 0.9)]
    return samples


def stable_spam_update_(device, gen):
    samples = []
    for awkward in (False, True):
        grads, rows, state = _stable_spam_inputs(device, gen, awkward)
        stats = _ops.stable_spam_norms(grads, None, rows, state, 0.999)
        split = _ops.stable_spam_norms(grads, stats[0].clone(), rows, state, 0.9)
        n = len(grads)
        outputs = (
            torch.zeros(1, dtype=F64, device=device),
            torch.empty(RESULT_SLOTS, device=device),
            torch.empty(n, device=device),
            torch.empty(n, device=device),
        )
        # gamma1, gamma2, gamma3, eps, total_steps, eta_min, reset_every, on_nonfinite, reference
        options = (0.7, 0.9, 0.999, 1e-8, 10, 0.5, 3, "skip", False)
        if awkward:  # no schedule, no reset (0: none), the reference rule
            options = (0.7, 0.9, 0.9, 1e-8, 0, 0.0, 0, "zero", True)
        samples.append((grads, stats, split, rows, state.clone(), *outputs, *options))
    return samples


# -- StepSkipper -------------------------------------------------------------------------------------


def skip_step_update_(device, gen):
    """A full window of 8 (tests/test_step_skip.py's opcheck), both rules; a bfloat16 loss with two
    earlier values in a window of 5."""
    samples = []
    for reference in (False, True):
        loss, norm = randn((), device, gen), rand((), device, gen, F64)
        history = randn((2, 8), device, gen, F64)
        counters = torch.tensor([5, 5, 11, 2], dtype=torch.int64, device=device)
        result = torch.empty(SKIP_STEP_RESULT_SLOTS, device=device)
        samples.append((loss, norm, history, counters, result, 8, 6.0, reference))
    counters = torch.zeros(SKIP_STEP_COUNTERS, dtype=torch.int64, device=device)
    counters[SkipStepCounter.FILLED] = counters[SkipStepCounter.HEAD] = counters[SkipStepCounter.STEPS] = 2
    history = randn((2, 5), device, gen, F64)
    result = torch.empty(SKIP_STEP_RESULT_SLOTS, device=device)
    samples.append((randn((), device, gen, BF16), rand((), device, gen, F16), history, counters, result, 5, 1.5, False))
    return samples


# -- the held forms ------------------------------------------------------------------------------------


def held_args(args):
    """A list op's arguments with its list (the first argument) held: the held_<op>'s arguments."""
    return (fastclip.ops.held_list(args[0]), *args[1:])


def _held(list_op):
    return lambda device, gen: [held_args(args) for args in SAMPLES[list_op](device, gen)]


SAMPLES = {
    "multi_tensor_norm": multi_tensor_norm,
    "multi_tensor_scale_": multi_tensor_scale_,
    "multi_tensor_clip_by_norm_": multi_tensor_clip_by_norm_,
    "multi_tensor_clip_grad_norm_": multi_tensor_clip_grad_norm_,
    "multi_tensor_clamp_": multi_tensor_clamp_,
    "agc_clip_": agc_clip_,
    "zclip_update_": zclip_update_,
    "normclip_update_": normclip_update_,
    "autoclip_update_": autoclip_update_,
    "adagc_update_": adagc_update_,
    "stable_spam_norms": stable_spam_norms,
    "stable_spam_update_": stable_spam_update_,
    "skip_step_update_": skip_step_update_,
}
SAMPLES.update(
    {
        "held_" + name: _held(name)
        for name in [
            "multi_tensor_norm",
            "multi_tensor_scale_",
            "multi_tensor_clip_by_norm_",
            "multi_tensor_clip_grad_norm_",
            "zclip_update_",
            "normclip_update_",
            "autoclip_update_",
            "adagc_update_",
        ]
    }
)
