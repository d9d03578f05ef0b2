"""The op library's Python side: loads it (:mod:`fastclip._library`), registers the fake (meta)
kernels that ``torch.compile`` uses, and wraps the clippers' statistics ops.

The statistics ops (``zclip_update_``, ``normclip_update_``, ``autoclip_update_``,
``adagc_update_``, ``stable_spam_update_``, and ``skip_step_update_``) read and write the
clippers' and the step skipper's state tensors, whose layout (:mod:`fastclip._layouts`) is private:
only the clippers and :class:`fastclip.StepSkipper` call them. The list ops' public wrappers are in
:mod:`fastclip.ops`.
"""

import functools
import operator

import torch

from . import _library  # noqa: F401  (loading the library registers torch.ops.fastclip.*)

_ops = torch.ops.fastclip


def _promoted_dtype(tensors):
    """torch's type promotion over the tensors' dtypes (float32 for none), the dtypes gathered in
    C: the lists can be long."""
    dtypes = set(map(operator.attrgetter("dtype"), tensors))
    return functools.reduce(torch.promote_types, dtypes) if dtypes else torch.float32


def _accumulation_dtype(tensors):
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_one_device(tensors, *others):
    # The real kernels check this too; a fake must not accept what the kernel rejects.
    if not tensors:
        return
    device = tensors[0].device
    for i, t in enumerate(tensors):
        torch._check(
            t.device == device, lambda: f"fastclip: tensors[{i}] is on {t.device} but tensors[0] is on {device}"
        )
    for name, t in others:
        torch._check(t.device == device, lambda: f"fastclip: {name} is on {t.device} but the tensors are on {device}")


@torch.library.register_fake("fastclip::multi_tensor_norm")
def _multi_tensor_norm_fake(tensors, norm_type, per_tensor):
    torch._check(len(tensors) > 0, lambda: "fastclip: tensors must not be empty")
    _check_one_device(tensors)
    first = tensors[0]
    total = first.new_empty((), dtype=_promoted_dtype(tensors))
    per = first.new_empty((len(tensors) if per_tensor else 0,), dtype=_accumulation_dtype(tensors))
    return total, per


@torch.library.register_fake("fastclip::multi_tensor_scale_")
def _multi_tensor_scale_fake(tensors, scale, clear_on_zero=False):
    _check_one_device(tensors, ("scale", scale))


@torch.library.register_fake("fastclip::multi_tensor_clip_by_norm_")
def _multi_tensor_clip_by_norm_fake(tensors, total_norm, max_norm):
    _check_one_device(tensors, ("total_norm", total_norm))


@torch.library.register_fake("fastclip::multi_tensor_clip_grad_norm_")
def _multi_tensor_clip_grad_norm_fake(tensors, max_norm, norm_type):
    torch._check(len(tensors) > 0, lambda: "fastclip: tensors must not be empty")
    _check_one_device(tensors)
    return tensors[0].new_empty((), dtype=_promoted_dtype(tensors))


@torch.library.register_fake("fastclip::multi_tensor_clamp_")
def _multi_tensor_clamp_fake(tensors, clip_value):
    _check_one_device(tensors)


@torch.library.register_fake("fastclip::agc_clip_")
def _agc_clip_fake(grads, params, clip_factor, eps):
    torch._check(len(grads) == len(params), lambda: "fastclip: grads and params must have the same length")
    _check_one_device(grads, *[(f"params[{i}]", p) for i, p in enumerate(params)])


# The statistics ops mutate their (small) state and output tensors, and the grads in place.


def _check_step_devices(grads, norms, others):
    present = [(name, t) for name, t in norms if t is not None]
    if present:
        _check_one_device([present[0][1]], *present[1:], *others, *[(f"grads[{i}]", g) for i, g in enumerate(grads)])
    else:
        torch._check(len(grads) > 0, lambda: "fastclip: grads must not be empty when the norms are None")
        _check_one_device(grads, *others)


@torch.library.register_fake("fastclip::zclip_update_")
def _zclip_update_fake(grads, norm, state, result, *args):
    _check_step_devices(grads, [("norm", norm)], [("state", state), ("result", result)])


@torch.library.register_fake("fastclip::normclip_update_")
def _normclip_update_fake(grads, norm, result, *args):
    _check_step_devices(grads, [("norm", norm)], [("result", result)])


@torch.library.register_fake("fastclip::autoclip_update_")
def _autoclip_update_fake(
    grads, total_norm, norms, rows, lower, upper, window, counters, result, coef, threshold, *args
):
    others = [
        ("rows", rows),
        ("lower", lower),
        ("upper", upper),
        ("window", window),
        ("counters", counters),
        ("result", result),
        ("coef", coef),
        ("threshold", threshold),
    ]
    _check_step_devices(grads, [("total_norm", total_norm), ("norms", norms)], others)


@torch.library.register_fake("fastclip::adagc_update_")
def _adagc_update_fake(grads, total_norm, norms, rows, gamma, steps, result, coef, threshold, *args):
    others = [
        ("rows", rows),
        ("gamma", gamma),
        ("steps", steps),
        ("result", result),
        ("coef", coef),
        ("threshold", threshold),
    ]
    _check_step_devices(grads, [("total_norm", total_norm), ("norms", norms)], others)


@torch.library.register_fake("fastclip::stable_spam_norms")
def _stable_spam_norms_fake(grads, maxima, rows, state, gamma3):
    others = [("rows", rows)] + ([("maxima", maxima)] if maxima is not None else [])
    _check_one_device([state], *others, *[(f"grads[{i}]", g) for i, g in enumerate(grads)])
    return state.new_empty((2, len(grads)), dtype=torch.float64)


@torch.library.register_fake("fastclip::stable_spam_update_")
def _stable_spam_update_fake(grads, stats, split, rows, state, steps, result, coef, threshold, *args):
    others = [
        ("stats", stats),
        ("split", split),
        ("rows", rows),
        ("steps", steps),
        ("result", result),
        ("coef", coef),
        ("threshold", threshold),
    ]
    _check_one_device([state], *others, *[(f"grads[{i}]", g) for i, g in enumerate(grads)])


@torch.library.register_fake("fastclip::skip_step_update_")
def _skip_step_update_fake(loss, norm, history, counters, result, window, sigma, reference):
    _check_one_device([history], ("loss", loss), ("norm", norm), ("counters", counters), ("result", result))


# The wrappers take the norms first, as the clippers hold them (None: the op computes them from
# ``grads``), and the grads last: with ``scale_grads`` they are scaled by the step's factors, else
# only zeroed on a non-finite step under on_nonfinite="zero" (csrc/ops/op_library.h has the contract).
# The grads are a list, or a held list (fastclip.ops.held_list; grads read in C++ by fastclip._grads), run by the op's
# held_<op> form.


def _stats_op(name, grads):
    """``(op, grads argument)``: ``held_<name>`` and the held list, or ``name`` and a list."""
    if isinstance(grads, torch.ScriptObject):
        return getattr(_ops, "held_" + name), grads
    return getattr(_ops, name), list(grads)


def zclip_update_(
    norm,
    state,
    result,
    alpha,
    z_thresh,
    max_grad_norm,
    eps,
    warmup_steps,
    mode,
    clip_option,
    clip_factor,
    skip_update_on_spike,
    on_nonfinite,
    reference,
    grads=(),
    scale_grads=True,
):
    """One ZClip statistics step (csrc/common/zclip_step.h): updates ``state``, writes ``result``."""
    op, grads = _stats_op("zclip_update_", grads)
    op(
        grads,
        norm,
        state,
        result,
        float(alpha),
        float(z_thresh),
        None if max_grad_norm is None else float(max_grad_norm),
        float(eps),
        int(warmup_steps),
        mode,
        clip_option,
        float(clip_factor),
        bool(skip_update_on_spike),
        on_nonfinite,
        bool(reference),
        bool(scale_grads),
    )


def normclip_update_(norm, result, max_norm, norm_type, on_nonfinite, grads=(), scale_grads=True):
    """One NormClip step (csrc/common/normclip_step.h): torch's coefficient from a fixed ``max_norm``."""
    op, grads = _stats_op("normclip_update_", grads)
    op(grads, norm, result, float(max_norm), float(norm_type), on_nonfinite, bool(scale_grads))


def autoclip_update_(
    total_norm,
    norms,
    rows,
    lower,
    upper,
    window,
    counters,
    result,
    coef,
    threshold,
    percentile,
    lag,
    on_nonfinite,
    reference,
    grads=(),
    per_tensor=False,
    scale_grads=True,
):
    """One AutoClip step over the histories ``rows`` (csrc/common/autoclip_step.h): thresholds,
    factors and the histories' update. ``per_tensor``: an entry (and a factor) per grad, else
    the one entry of the total norm."""
    op, grads = _stats_op("autoclip_update_", grads)
    op(
        grads,
        total_norm,
        norms,
        rows,
        lower,
        upper,
        window,
        counters,
        result,
        coef,
        threshold,
        float(percentile),
        bool(lag),
        on_nonfinite,
        bool(reference),
        bool(per_tensor),
        bool(scale_grads),
    )


def adagc_update_(
    total_norm,
    norms,
    rows,
    gamma,
    steps,
    result,
    coef,
    threshold,
    lambda_abs,
    lambda_rel,
    beta,
    warmup_steps,
    eps,
    on_nonfinite,
    reference,
    grads=(),
    scale_grads=True,
):
    """One AdaGC step (csrc/common/adagc_step.h): per-tensor factors and thresholds, EMA update of ``gamma``."""
    op, grads = _stats_op("adagc_update_", grads)
    op(
        grads,
        total_norm,
        norms,
        rows,
        gamma,
        steps,
        result,
        coef,
        threshold,
        float(lambda_abs),
        float(lambda_rel),
        float(beta),
        int(warmup_steps),
        float(eps),
        on_nonfinite,
        bool(reference),
        bool(scale_grads),
    )


def stable_spam_norms(grads, maxima, rows, state, gamma3):
    """Stable-SPAM's per-tensor statistics, float64 [2, len(grads)] (csrc/ops/stable_spam_norms.cpp): maxima and
    sums of squares, or, given ``maxima``, the sums of squares at most and above each threshold."""
    return _ops.stable_spam_norms(list(grads), maxima, rows, state, float(gamma3))


def stable_spam_update_(
    grads,
    stats,
    split,
    rows,
    state,
    steps,
    result,
    coef,
    threshold,
    gamma1,
    gamma2,
    gamma3,
    eps,
    total_steps,
    eta_min,
    reset_every,
    on_nonfinite,
    reference,
):
    """One Stable-SPAM step (csrc/common/stable_spam_step.h) and the grads' update."""
    _ops.stable_spam_update_(
        list(grads),
        stats,
        split,
        rows,
        state,
        steps,
        result,
        coef,
        threshold,
        float(gamma1),
        float(gamma2),
        float(gamma3),
        float(eps),
        int(total_steps or 0),
        float(eta_min),
        int(reset_every or 0),
        on_nonfinite,
        bool(reference),
    )


def skip_step_update_(loss, norm, history, counters, result, window, sigma, reference):
    """One StepSkipper step (csrc/common/skip_step.h): the decision on ``loss`` and ``norm`` written to
    ``result``, then the values added to ``history`` and ``counters``."""
    _ops.skip_step_update_(loss, norm, history, counters, result, int(window), float(sigma), bool(reference))
