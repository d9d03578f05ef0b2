"""Parity of the stateful clippers with their references, step for step, through warm-up and spikes."""

import copy

import autoclip.torch as autoclip_torch  # the peers themselves: installed by the README's test command
import numpy as np
import pytest
import timm.utils.agc as timm_agc
import torch
import zclip
from clipper_refs import SHAPES, AdaGCReference, paper_autoclip, set_grads, spiky_grads, twin_models
from clippers_table import CLIPPERS
from conftest import make_params

import fastclip
from fastclip._layouts import (
    AUTOCLIP_COUNTERS,
    RESULT_SLOTS,
    ZCLIP_HEADER,
    AutoClipCounter,
    AutoClipStopped,
    ZClipState,
)

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

# Clipped grads and reported norms agree within float32 rounding of the norm (the peers and
# fastclip sum in different orders), over hundreds of steps.
RTOL_PARITY = 2e-5
SPIKES = (30, 31, 57, 90, 91, 92, 150)


def assert_grads_match(ours, theirs, rtol=RTOL_PARITY, step=None):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(
            a.grad, b.grad, rtol=rtol, atol=1e-7, equal_nan=True, msg=lambda m: f"step {step}, parameter {i}: {m}"
        )


ZCLIP_VARIANTS = [
    dict(mode="zscore", clip_option="adaptive_scaling"),
    dict(mode="zscore", clip_option="mean"),
    dict(mode="percentile"),
    dict(mode="zscore", clip_option="adaptive_scaling", clip_factor=0.7),
    dict(mode="zscore", clip_option="adaptive_scaling", skip_update_on_spike=True),
    dict(mode="percentile", skip_update_on_spike=True),
    dict(mode="zscore", clip_option="mean", max_grad_norm=None),
    dict(mode="zscore", clip_option="adaptive_scaling", max_grad_norm=None, warmup_steps=1),
]


@pytest.mark.parametrize("variant", ZCLIP_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_zclip_matches_package(variant, gen):
    # max_grad_norm=1.5 sits inside the norms' range, so warm-up clipping and the cap both bite.
    kwargs = dict(alpha=0.9, z_thresh=2.0, warmup_steps=10, max_grad_norm=1.5)
    kwargs.update(variant)
    ours_model, peer_model = twin_models()
    peer = zclip.ZClip(**kwargs)
    ours = fastclip.ZClip(ours_model.parameters(), **kwargs)
    steps = spiky_grads(gen, SHAPES, 200, SPIKES, base=0.12)
    clipped_steps = 0
    for step, grads in enumerate(steps):
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        peer_norm = peer.step(peer_model)
        result = ours.step()
        np.testing.assert_allclose(float(result.norm), peer_norm, rtol=RTOL_PARITY)
        assert_grads_match(list(ours_model.parameters()), list(peer_model.parameters()), step=step)
        clipped_steps += bool(result.clipped)
    assert clipped_steps > 0  # the spikes (and the cap) were really clipped
    stats = ours.state_dict()["state"]["stats"]
    np.testing.assert_allclose([float(stats[0]), float(stats[1])], [peer.mean, peer.var], rtol=1e-4)


def test_zclip_result_statistics(gen):
    (model,) = twin_models(n=1)
    clipper = fastclip.ZClip(model.parameters(), warmup_steps=5, max_grad_norm=None)
    for grads in spiky_grads(gen, SHAPES, 5):
        set_grads(model.parameters(), grads)
        result = clipper.step()
        assert torch.isnan(result.mean) and torch.isnan(result.zscore)
    grads = spiky_grads(gen, SHAPES, 1, spikes=(0,))[0]
    set_grads(model.parameters(), grads)
    state = clipper.state_dict()["state"]["stats"]
    result = clipper.step()
    mean, std = float(state[ZClipState.MEAN]), float(state[ZClipState.VAR]) ** 0.5
    np.testing.assert_allclose(float(result.mean), mean, rtol=1e-6)
    np.testing.assert_allclose(float(result.std), std, rtol=1e-6)
    np.testing.assert_allclose(float(result.zscore), (float(result.norm) - mean) / (std + 1e-6), rtol=1e-5)
    assert bool(result.clipped) and float(result.coef) < 1


@pytest.mark.parametrize("percentile", [10.0, 50.0, 95.0])
def test_autoclip_matches_paper(percentile, gen):
    ours_model, peer_model = twin_models()
    ours = fastclip.AutoClip(ours_model.parameters(), percentile=percentile)
    peer = paper_autoclip(percentile)
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 150, SPIKES)):
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        norm, threshold = peer(list(peer_model.parameters()))
        result = ours.step()
        np.testing.assert_allclose(float(result.norm), norm, rtol=RTOL_PARITY)
        np.testing.assert_allclose(float(result.threshold), threshold, rtol=RTOL_PARITY)
        assert_grads_match(list(ours_model.parameters()), list(peer_model.parameters()), step=step)


@pytest.mark.parametrize("global_threshold", [True, False])
@pytest.mark.parametrize("history_length", [7, 1000])
def test_autoclip_lag1_matches_quantileclip(global_threshold, history_length, gen):
    ours_model, peer_model = twin_models()
    peer = autoclip_torch.QuantileClip(
        peer_model.parameters(), quantile=0.8, history_length=history_length, global_threshold=global_threshold
    )
    ours = fastclip.AutoClip(
        ours_model.parameters(),
        percentile=80.0,
        history_size=history_length,
        lag=1,
        scope="global" if global_threshold else "tensor",
    )
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 120, SPIKES)):
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        peer.step()
        result = ours.step()
        if step == 0:
            assert not bool(result.clipped)  # lag=1: nothing to compare the first norm against
        assert_grads_match(list(ours_model.parameters()), list(peer_model.parameters()), step=step)


def test_autoclip_tensor_scope_with_missing_grads(gen):
    """A parameter whose grad is None keeps its history: compared with QuantileClip, which skips it too."""
    ours_model, peer_model = twin_models()
    peer = autoclip_torch.QuantileClip(peer_model.parameters(), quantile=0.5, history_length=5)
    ours = fastclip.AutoClip(ours_model.parameters(), percentile=50.0, history_size=5, lag=1, scope="tensor")
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 60, SPIKES)):
        grads = [None if (i + step) % 3 == 0 else g for i, g in enumerate(grads)]
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        peer.step()
        result = ours.step()
        assert result.coef.shape == (sum(g is not None for g in grads),)
        assert_grads_match(list(ours_model.parameters()), list(peer_model.parameters()), step=step)


def _quantile_op_run(norms, percentile, window, lag):
    """Drives autoclip_update_ directly with a stream of norms; returns the thresholds."""
    counters = torch.zeros(1, AUTOCLIP_COUNTERS, dtype=torch.int64)
    n = len(norms)
    lower = torch.empty(1, n + 1)
    upper = torch.empty(1, n + 1)
    ring = torch.zeros(1, window)
    rows = torch.zeros(1, dtype=torch.int64)
    out = []
    for x in norms:
        total = torch.tensor(x, dtype=torch.float32)
        values, coef, thr = torch.empty(RESULT_SLOTS), torch.empty(1), torch.empty(1)
        fastclip._ops.autoclip_update_(
            total,
            total.reshape(1),
            rows,
            lower,
            upper,
            ring,
            counters,
            values,
            coef,
            thr,
            percentile,
            lag,
            "skip",
            False,
        )
        out.append(float(thr))
    return out


@pytest.mark.parametrize("percentile", [0.0, 10.0, 37.5, 50.0, 90.0, 100.0])
def test_whole_history_quantile_exact(percentile, gen):
    # Ties included: norms drawn from a small set, then a continuous range.
    norms = torch.randint(0, 20, (400,), generator=gen).float().div(4).tolist()
    norms += torch.rand(600, generator=gen).mul(10).tolist()
    norms = [float(np.float32(x)) for x in norms]
    thresholds = _quantile_op_run(norms, percentile, 0, lag=False)
    for t in range(len(norms)):
        expected = np.percentile(np.array(norms[: t + 1], dtype=np.float64), percentile)
        np.testing.assert_allclose(thresholds[t], expected, rtol=1e-6, err_msg=f"step {t}")


@pytest.mark.parametrize("window", [1, 5, 64])
def test_window_quantile_exact(window, gen):
    norms = torch.rand(300, generator=gen).mul(3).tolist() + [1.5] * 20 + torch.rand(50, generator=gen).tolist()
    norms = [float(np.float32(x)) for x in norms]
    thresholds = _quantile_op_run(norms, 75.0, window, lag=True)
    assert thresholds[0] == float("inf")
    for t in range(1, len(norms)):
        expected = torch.quantile(torch.tensor(norms[max(0, t - window) : t]), 0.75).item()
        np.testing.assert_allclose(thresholds[t], expected, rtol=1e-6, err_msg=f"step {t}")


@pytest.mark.parametrize("warmup_steps", [0, 20])
def test_adagc_matches_equations(warmup_steps, gen):
    (model,) = twin_models(n=1)
    params = list(model.parameters())
    kwargs = dict(lambda_abs=1.2, lambda_rel=1.05, beta=0.9, warmup_steps=warmup_steps)
    ours = fastclip.AdaGC(params, **kwargs)
    ref = AdaGCReference(len(params), **kwargs)
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 150, SPIKES)):
        grads = [None if (i == 1 and step % 4 == 0) else g for i, g in enumerate(grads)]
        set_grads(params, grads)
        expected = [None if g is None else g.double() for g in grads]
        norm, coefs = ref.step(expected)
        result = ours.step()
        np.testing.assert_allclose(float(result.norm), norm, rtol=RTOL_PARITY)
        np.testing.assert_allclose(result.coef.double().numpy(), coefs, rtol=RTOL_PARITY)
        for i, (p, e) in enumerate(zip(params, expected)):
            if e is not None:
                torch.testing.assert_close(
                    p.grad.double(), e, rtol=RTOL_PARITY, atol=1e-7, msg=lambda m: f"step {step}, tensor {i}: {m}"
                )


AGC_SHAPES = [(16, 8), (24,), (), (8, 4, 3, 3), (5, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_agc_matches_timm(dtype, gen):
    def build():
        return make_params(AGC_SHAPES, dtype, generator=torch.Generator().manual_seed(7), scale=0.05)

    ours, peers = build(), build()
    for step in range(5):
        grads = [
            (torch.randn(s, generator=gen, dtype=torch.float64) * (0.001 * 10**step)).to(dtype) for s in AGC_SHAPES
        ]
        set_grads(ours, grads)
        set_grads(peers, grads)
        fastclip.AGC(ours, clip_factor=0.02, eps=1e-3).step()
        timm_agc.adaptive_clip_grad(peers, clip_factor=0.02, eps=1e-3)
        # timm rounds the unit norms, the bound and the factor to bf16 (four roundings); we round once.
        rtol = {torch.float32: 1e-5, torch.bfloat16: 2**-6, torch.float64: 1e-10}[dtype]
        for a, b in zip(ours, peers):
            torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=0.0)


def test_agc_views_and_layouts(gen):
    """Non-contiguous grads, channels_last weights, and grads whose layout differs from the param's."""
    weight = torch.nn.Parameter(torch.randn(6, 4, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last))
    (linear,) = make_params([(10, 7)], generator=gen)
    big_grad = torch.randn(7, 10, generator=gen) * 5
    grads = [torch.randn(6, 4, 3, 3, generator=gen) * 5, big_grad.t()]  # the second is a transposed view
    params = [weight, linear]
    peers = copy.deepcopy(params)
    set_grads(params, grads)
    set_grads(peers, grads)
    linear.grad = big_grad.t()  # keep the non-contiguous view itself
    fastclip.adaptive_clip_grad_(params, clip_factor=0.01)
    timm_agc.adaptive_clip_grad(peers, clip_factor=0.01)
    for a, b in zip(params, peers):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(big_grad.t(), peers[1].grad, rtol=1e-5, atol=0.0)  # written through the view


def test_normclip_matches_clip_grad_norm(gen):
    ours_model, peer_model = twin_models()
    clipper = fastclip.NormClip(ours_model.parameters(), max_norm=1.0)
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 20, (3, 4))):
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        expected = torch.nn.utils.clip_grad_norm_(peer_model.parameters(), 1.0)
        result = clipper.step()
        np.testing.assert_allclose(float(result.norm), float(expected), rtol=RTOL_PARITY)
        assert_grads_match(list(ours_model.parameters()), list(peer_model.parameters()), step=step)


def test_agc_long_rows_and_empty(gen):
    """Rows longer than the CPU's in-cache limit take the chunked path; empty tensors have no rows."""
    shapes = [(300_001,), (2, 270_000), (0, 4), (3, 5)]
    params = make_params(shapes, generator=gen, scale=0.01)
    peers = copy.deepcopy(params)
    grads = [torch.randn(s, generator=gen) for s in shapes]
    set_grads(params, grads)
    set_grads(peers, grads)
    fastclip.adaptive_clip_grad_(params, clip_factor=0.01)
    timm_agc.adaptive_clip_grad(peers, clip_factor=0.01)
    for a, b in zip(params, peers):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=0.0)
    assert not torch.equal(params[0].grad, grads[0])  # really clipped


def test_full_history_drops_norms_without_overflow():
    """Heaps sized for 4 norms and fed 10 (a loaded or reserved state too small): nothing is
    written past the buffers, the history stops growing, the flag says so."""
    counters = torch.zeros(1, AUTOCLIP_COUNTERS, dtype=torch.int64)
    lower, upper = torch.zeros(1, 2), torch.zeros(1, 2)
    guard_lower, guard_upper = torch.full((1, 8), 7.0), torch.full((1, 8), 7.0)
    guard_lower[:, :2], guard_upper[:, :2] = lower, upper
    rows = torch.zeros(1, dtype=torch.int64)
    for x in range(1, 11):
        total = torch.tensor(float(x))
        fastclip._ops.autoclip_update_(
            total,
            total.reshape(1),
            rows,
            guard_lower[:, :2],
            guard_upper[:, :2],
            torch.zeros(1, 0),
            counters,
            torch.empty(RESULT_SLOTS),
            torch.empty(1),
            torch.empty(1),
            50.0,
            False,
            "skip",
            False,
        )
    assert counters[0, AutoClipCounter.LOWER_SIZE] <= 2 and counters[0, AutoClipCounter.UPPER_SIZE] <= 2
    assert counters[0, AutoClipCounter.STOPPED] == AutoClipStopped.FULL
    assert (guard_lower[:, 2:] == 7).all() and (guard_upper[:, 2:] == 7).all()


def test_poisoned_history_stays_poisoned_when_full():
    """reference mode: after a NaN, thresholds stay NaN even once the heaps are full."""
    counters = torch.zeros(1, AUTOCLIP_COUNTERS, dtype=torch.int64)
    lower, upper, rows = torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64)
    thresholds = []
    for x in [1.0, float("nan"), 2.0, 3.0, 4.0, 5.0, 6.0]:
        total, thr = torch.tensor(x), torch.empty(1)
        fastclip._ops.autoclip_update_(
            total,
            total.reshape(1),
            rows,
            lower,
            upper,
            torch.zeros(1, 0),
            counters,
            torch.empty(RESULT_SLOTS),
            torch.empty(1),
            thr,
            50.0,
            False,
            "propagate",
            True,
        )
        thresholds.append(float(thr))
    assert thresholds[0] == 1.0 and all(t != t for t in thresholds[1:])


def test_autoclip_op_refuses_duplicate_rows():
    """Two entries naming one history row would update it from two threads at once."""
    lower, upper = torch.zeros(2, 4), torch.zeros(2, 4)
    counters = torch.zeros(2, AUTOCLIP_COUNTERS, dtype=torch.int64)
    norms = torch.rand(2) + 0.5
    with pytest.raises(RuntimeError, match="rows must be distinct"):
        fastclip._ops.autoclip_update_(
            norms.norm(),
            norms,
            torch.tensor([1, 1]),
            lower,
            upper,
            torch.zeros(2, 0),
            counters,
            torch.empty(RESULT_SLOTS),
            torch.empty(2),
            torch.empty(2),
            50.0,
            False,
            "skip",
            False,
        )


@pytest.mark.parametrize("collected", [1e9, -3.0, float("nan")])
def test_zclip_corrupt_warmup_count_never_indexes_out_of_bounds(collected):
    state = torch.zeros(ZCLIP_HEADER + 3, dtype=torch.float64)
    state[ZClipState.COLLECTED] = collected
    result = torch.empty(RESULT_SLOTS)
    fastclip._ops.zclip_update_(
        torch.tensor(2.0), state, result, 0.9, 2.5, 1.0, 1e-6, 3, "zscore", "mean", 1.0, False, "skip", False
    )
    assert state[ZClipState.COLLECTED] == 1 and state[ZCLIP_HEADER] == 2.0  # restarted the warm-up at the first slot


@pytest.mark.parametrize("name", ["autoclip-tensor", "adagc", "stable-spam"])
def test_state_rows_are_checked_distinct_where_built(name, gen):
    """The stats ops check their rows on the CPU only (on CUDA it would sync, and two entries of one
    row race): the clippers check the rows they build, once per change, on any device."""
    params = make_params([(3,), (4,)], generator=gen)
    clipper = CLIPPERS[name](params)
    assert torch.equal(clipper._rows_tensor([0, 1], torch.device("cpu")), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="state rows must be distinct"):
        clipper._rows_tensor([1, 1], torch.device("cpu"))
