"""The layouts shared with C++ (fastclip/_layouts.py): the Python names are exactly the exported
ones, the clippers' state tensors are sized by them, and the Python writer of the result slots
writes what C++'s write_outcome writes, bit for bit."""

import math

import pytest
import torch
from clipper_refs import SHAPES, set_grads, spiky_grads, twin_models
from conftest import DEVICES

import fastclip
from fastclip import _C, _layouts, _ops
from fastclip._layouts import RESULT_SLOTS, ZCLIP_HEADER, ResultSlot, write_outcome

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

MAX_GRAD_NORM = 1.0
NORMS = [0.0, 0.25, 1.0, 3.0, 1e30, math.inf, math.nan]


def bits(t):
    return t.view(torch.int32)


def test_python_names_are_exactly_the_exported_ones():
    assert set(_layouts.LAYOUTS) == set(_C.layouts)
    for key, enum in _layouts.LAYOUTS.items():
        assert {m.name.lower(): m.value for m in enum} == _C.layouts[key], key


def test_sizes_and_clip_eps_come_from_the_library():
    assert RESULT_SLOTS == len(_C.layouts["result_slots"])
    assert ZCLIP_HEADER == len(_C.layouts["zclip_state"])
    assert _layouts.AUTOCLIP_COUNTERS == len(_C.layouts["autoclip_counters"])
    assert _layouts.ADAGC_GAMMA == len(_C.layouts["adagc_gamma"])
    assert _layouts.CLIP_EPS == _C.clip_eps == 1e-6  # torch's epsilon in clip_grad_norm_


def test_clippers_size_their_state_by_the_layouts(gen):
    (model,) = twin_models(n=1)
    params = list(model.parameters())
    grads = spiky_grads(gen, SHAPES, 1)[0]
    zclip, autoclip = fastclip.ZClip(params, warmup_steps=5), fastclip.AutoClip(params, scope="tensor")
    adagc = fastclip.AdaGC(params)
    for clipper in (zclip, autoclip, adagc):
        set_grads(params, grads)
        clipper.step()
    assert zclip._state["stats"].shape == (ZCLIP_HEADER + 5,)
    assert autoclip._state["counters"].shape == (len(params), _layouts.AUTOCLIP_COUNTERS)
    assert adagc._state["gamma"].shape == (len(params), _layouts.ADAGC_GAMMA)
    counters = autoclip._state["counters"]
    sizes = counters[:, _layouts.AutoClipCounter.LOWER_SIZE] + counters[:, _layouts.AutoClipCounter.UPPER_SIZE]
    assert (sizes == 1).all()  # one norm in each history
    assert (counters[:, _layouts.AutoClipCounter.STOPPED] == _layouts.AutoClipStopped.RUNNING).all()
    assert (adagc._state["gamma"][:, _layouts.AdaGCGamma.SEEN] == 1).all()
    assert zclip._state["stats"][_layouts.ZClipState.COLLECTED] == 1


def _cpp_warmup_outcome(norm, device, policy, reference):
    """A ZClip warm-up step with max_grad_norm: its result is C++'s write_outcome of the norm,
    max_grad_norm (NaN on a skipped non-finite step) and the clip coefficient."""
    state = torch.zeros(ZCLIP_HEADER + 4, dtype=torch.float64, device=device)
    result = torch.full((RESULT_SLOTS,), 123.0, device=device)  # every slot is overwritten
    _ops.zclip_update_(
        norm,
        state,
        result,
        0.97,
        2.5,
        MAX_GRAD_NORM,
        1e-6,
        4,
        "zscore",
        "adaptive_scaling",
        1.0,
        False,
        policy,
        reference,
    )
    return result


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("policy", ["skip", "zero", "propagate"])
def test_python_writer_matches_cpp_write_outcome(device, policy, reference):
    for value in NORMS:
        norm = torch.tensor(value, dtype=torch.float32, device=device)
        cpp = _cpp_warmup_outcome(norm, device, policy, reference)
        nonfinite = not math.isfinite(value)
        threshold = math.nan if nonfinite and not reference else MAX_GRAD_NORM
        coef = cpp[ResultSlot.COEF].clone()  # the coefficient is the step's own; the writer derives the rest
        as_tensors = write_outcome(
            torch.full_like(cpp, -7.0), norm, threshold, coef, torch.tensor(nonfinite, device=device), policy
        )
        as_numbers = write_outcome(torch.full_like(cpp, -7.0), float(norm), threshold, float(coef), nonfinite, policy)
        for python in (as_tensors, as_numbers):
            assert torch.equal(bits(python), bits(cpp)), (value, python, cpp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["skip", "zero", "propagate"])
def test_normclip_result_is_zclip_warmup_result(device, policy, gen):
    """NormClip's result is written in Python, ZClip's warm-up in C++: the same grads give the
    same bits (norm, coefficient from CLIP_EPS, every derived slot)."""
    (model,) = twin_models(n=1)
    params = list(model.to(device).parameters())
    norm_clip = fastclip.NormClip(params, max_norm=MAX_GRAD_NORM, on_nonfinite=policy)
    zclip = fastclip.ZClip(params, max_grad_norm=MAX_GRAD_NORM, warmup_steps=100, on_nonfinite=policy)
    for scale in (1e-3, 1.0, 1e3):
        grads = [g.to(device) * scale for g in spiky_grads(gen, SHAPES, 1)[0]]
        set_grads(params, grads)
        ours = norm_clip.step()
        set_grads(params, grads)
        cpp = zclip.step()
        assert torch.equal(bits(ours._values), bits(cpp._values)), (scale, ours._values, cpp._values)


@pytest.mark.parametrize("device", DEVICES)
def test_idle_result_is_an_unclipped_outcome(device):
    (model,) = twin_models(n=1)
    result = fastclip.AGC(model.to(device).parameters()).step()  # no grads: nothing to clip
    expected = [math.nan, math.nan, 1.0, 0.0, 0.0, 1.0, 0.0, math.nan, math.nan, math.nan]
    values = result._values.cpu()
    for slot, want in zip(ResultSlot, expected):
        assert (math.isnan(want) and math.isnan(values[slot])) or values[slot] == want, slot
