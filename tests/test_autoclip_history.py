"""AutoClip.load_history: a seeded history gives numpy's percentile of the same norms, then keeps
growing (or sliding) as steps are taken; bad arguments fail naming the argument."""

import numpy as np
import pytest
import torch
from conftest import DEVICES, make_params

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels


def one_param(device):
    """A one-element parameter: its grad's norm is exactly the value put in it."""
    (param,) = make_params([(1,)], device=device)
    return param


def step_with_norm(clipper, param, norm):
    param.grad = torch.tensor([norm], dtype=torch.float32, device=param.device)
    return float(clipper.step().threshold)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("percentile", [0.0, 10.0, 37.5, 50.0, 100.0])
@pytest.mark.parametrize("count", [1, 2, 1000, 5000])
@pytest.mark.parametrize("lag", [0, 1])
def test_whole_history_threshold_is_numpys_percentile_of_the_loaded_norms(device, percentile, count, lag):
    gen = torch.Generator().manual_seed(count)
    norms = torch.rand(count, generator=gen) * 3.0 + 0.5
    param = one_param(device)
    clipper = fastclip.AutoClip([param], percentile=percentile, lag=lag)
    clipper.load_history(norms.to(device))
    seen = norms.double().tolist()
    for norm in (0.1, 4.0, 1.7, 2.2, 0.9):  # then the history keeps growing, as if these were its steps
        if lag == 0:
            seen.append(float(np.float32(norm)))
        threshold = step_with_norm(clipper, param, norm)
        assert threshold == pytest.approx(np.percentile(seen, percentile), rel=1e-6)
        if lag == 1:
            seen.append(float(np.float32(norm)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("count", [10, 64, 100])
def test_window_keeps_the_last_history_size_norms(device, count):
    gen = torch.Generator().manual_seed(count)
    norms = torch.rand(count, generator=gen) * 3.0 + 0.5
    param = one_param(device)
    clipper = fastclip.AutoClip([param], percentile=25.0, history_size=64, lag=1)
    clipper.load_history(norms.to(device))
    seen = norms.double().tolist()
    for norm in (0.1, 4.0, 1.7, 2.2, 0.9):  # the oldest loaded norm leaves first
        threshold = step_with_norm(clipper, param, norm)
        assert threshold == pytest.approx(np.percentile(seen[-64:], 25.0), rel=1e-6)
        seen.append(float(np.float32(norm)))


def test_loading_replaces_the_history_and_an_empty_one_means_a_fresh_start():
    param = one_param("cpu")
    clipper = fastclip.AutoClip([param], percentile=50.0, lag=1)
    for norm in (100.0, 200.0, 300.0):
        step_with_norm(clipper, param, norm)
    clipper.load_history(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert step_with_norm(clipper, param, 9.0) == pytest.approx(2.0)
    clipper.load_history(torch.zeros(0))
    assert step_with_norm(clipper, param, 9.0) == float("inf")  # lag=1: nothing seen yet, no clipping
    assert clipper.state_dict()["host"]["steps"] == 1


@pytest.mark.parametrize(
    "norms, message",
    [
        ([1.0, 2.0], "norms must be a 1-d floating-point tensor, got list"),
        (torch.ones(2, 3), "norms must be a 1-d floating-point tensor, got a 2-d torch.float32 tensor"),
        (torch.tensor([1, 2]), "got a 1-d torch.int64 tensor"),
        (torch.tensor([1.0, float("nan")]), "norms must be finite and >= 0"),
        (torch.tensor([1.0, float("inf")]), "norms must be finite and >= 0"),
        (torch.tensor([1e300], dtype=torch.float64), "norms must be finite and >= 0 (as float32)"),
        (torch.tensor([1.0, -0.5]), "norms must be finite and >= 0"),
    ],
)
def test_bad_norms_fail_naming_the_argument(norms, message):
    clipper = fastclip.AutoClip([one_param("cpu")])
    with pytest.raises(ValueError, match="AutoClip.load_history: ") as error:
        clipper.load_history(norms)
    assert message in str(error.value)


def test_per_tensor_scope_is_refused():
    clipper = fastclip.AutoClip([one_param("cpu"), one_param("cpu")], scope="tensor")
    with pytest.raises(ValueError, match="AutoClip.load_history: .*scope='tensor'"):
        clipper.load_history(torch.ones(3))


@pytest.mark.parametrize("history_size", [None, 8])
def test_loaded_history_is_float32_whatever_the_default_dtype(history_size):
    param = one_param("cpu")
    clipper = fastclip.AutoClip([param], percentile=50.0, history_size=history_size, lag=1)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        clipper.load_history(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    finally:
        torch.set_default_dtype(previous)
    assert step_with_norm(clipper, param, 5.0) == 2.0
