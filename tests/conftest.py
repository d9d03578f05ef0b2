"""Shared fixtures and the one table of tolerances used by every test."""

import importlib
import json
import math
import os
import random
import subprocess
import sys

import pytest
import spawned_ranks
import torch

import fastclip

HAS_CUDA = torch.cuda.is_available()
# FASTCLIP_CPU_KERNELS=cuda: the CPU ops run the CUDA kernels (on the CPU execution layer).
CUDA_KERNELS_ON_CPU = fastclip.build_info()["cpu_kernels"] == "cuda"


def runs_cuda_kernels(device):
    """Whether fastclip's ops on `device` run the CUDA kernels (a GPU, or the layer)."""
    return torch.device(device).type == "cuda" or CUDA_KERNELS_ON_CPU


def clipped_by(grad, coef):
    """`grad` scaled by a clip coefficient (float32, or float64 for a float64 norm) as torch's
    clip_grads_with_norm_ scales it on the device whose kernels run: in the grad's opmath, by the
    coefficient itself on the CPU, by the coefficient rounded to an fp16/bf16 grad's dtype first on
    CUDA (torch's _foreach_mul_ converts it); rounded once to the grad's dtype."""
    opmath = torch.float64 if grad.dtype == torch.float64 else torch.float32
    rounded = runs_cuda_kernels(grad.device) and grad.dtype in (torch.float16, torch.bfloat16)
    return (grad.to(opmath) * (coef.to(grad.dtype) if rounded else coef).to(opmath)).to(grad.dtype)


DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

# Relative tolerances, per dtype, for results that are rounded once to that dtype (fastclip's
# norm, a grad scaled by a coefficient). torch's own results round more often (every per-tensor
# norm of a half-precision grad), so comparisons with torch allow two roundings.
RTOL = {torch.float32: 2e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float64: 1e-12}
# float32 sums over many elements: the order of accumulation differs from torch's.
RTOL_SUM = {torch.float32: 2e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float64: 1e-12}
# fastclip's norm of grads of each dtype, before it is rounded to that dtype, wherever the true
# norm is a normal float (huge and tiny grads included): what the README promises.
RTOL_NORM = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-3}
# Rounding to nearest in a dtype: at most half its spacing, relative.
HALF_ULP = {torch.float32: 2**-24, torch.float16: 2**-11, torch.bfloat16: 2**-8, torch.float64: 2**-53}


def rtol_for(dtypes, table=RTOL_SUM):
    """The loosest tolerance among the dtypes of a (possibly mixed) list."""
    return max(table[d] for d in dtypes)


def assert_close_to(actual, expected, rtol, atol=0.0):
    actual = torch.as_tensor(actual).double().cpu()
    expected = torch.as_tensor(expected).double().cpu()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def random_tensors(shapes, dtypes, device, generator=None, scale=1.0):
    """Fresh random normal tensors, one per shape, cycling through dtypes."""
    out = []
    for i, shape in enumerate(shapes):
        dtype = dtypes[i % len(dtypes)]
        t = torch.randn(shape, dtype=torch.float64, generator=generator) * scale
        out.append(t.to(device=device, dtype=dtype))
    return out


def reference_norm(tensors, p):
    """float64 implementation of torch's total norm (norm of per-tensor norms) on the exact
    values held by the tensors."""
    p = float(p)
    flats = [t.detach().double().cpu().reshape(-1) for t in tensors]
    if p == 0:
        return torch.tensor(float(sum(bool((f != 0).any()) for f in flats)), dtype=torch.float64)
    if p == float("inf"):
        return torch.stack(
            [f.abs().max() if f.numel() else torch.tensor(0.0, dtype=torch.float64) for f in flats]
        ).max()
    # Scaled by the largest magnitude, so that no |x|^p overflows or underflows float64.
    largest = max((float(f.abs().max()) for f in flats if f.numel()), default=0.0)
    if largest == 0.0 or not math.isfinite(largest):
        return torch.tensor(largest, dtype=torch.float64)
    total = sum(((f.abs() / largest) ** p).sum() for f in flats)
    return largest * torch.as_tensor(total, dtype=torch.float64) ** (1.0 / p)


def run_json_script(script, tmp_path, timeout, **env):
    """Runs `script` in a fresh Python process with a kernel log path as argv[1], this environment
    less FASTCLIP_KERNEL_LOG and FASTCLIP_SINGLE_LAUNCH, plus `env`; returns the JSON it prints last."""
    environment = {k: v for k, v in os.environ.items() if k not in ("FASTCLIP_KERNEL_LOG", "FASTCLIP_SINGLE_LAUNCH")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "kernels.log")],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def make_params(shapes=None, dtypes=torch.float32, device="cpu", generator=None, *, grads=None, scale=1.0):
    """The parameters for a test, with fresh random normal values (never zeros) from `generator`
    (torch's global one by default), as random_tensors makes them: one per shape, cycling through
    `dtypes` (one dtype or a list), on `device`, without grads; or, given `grads` instead of shapes,
    one per grad, of its shape, dtype, device and layout (strides), holding a copy of it as .grad."""
    if grads is None:
        dtypes = [dtypes] if isinstance(dtypes, torch.dtype) else list(dtypes)
        return [torch.nn.Parameter(t) for t in random_tensors(shapes, dtypes, device, generator, scale)]
    assert shapes is None, "shapes, dtypes and device come from the grads"
    params = []
    for g in grads:
        (value,) = random_tensors([g.shape], [g.dtype], g.device, generator, scale)
        p = torch.nn.Parameter(torch.empty_like(g).copy_(value))
        p.grad = g.clone()
        params.append(p)
    return params


@pytest.fixture
def gen():
    """A generator with a fresh seed per test; the seed is printed (shown by pytest on failure).
    FASTCLIP_TEST_SEED=<seed> replays a failure."""
    seed = int(os.environ.get("FASTCLIP_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"generator seed: {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="session")
def gloo_ranks():
    """The distributed scenarios' outcomes (spawned_ranks.py): ``gloo_ranks.run(scenario_fn, world)``.
    The first request for a world size runs every scenario registered for it, on one set of ranks."""
    return spawned_ranks.Session()


def import_fastclip_failing(monkeypatch, make_it_fail):
    """Imports fastclip afresh with ``make_it_fail()`` in force; returns the ImportError. The
    modules already loaded are put back afterwards (the library itself is never loaded twice)."""
    ours = [name for name in sys.modules if name == "fastclip" or name.startswith("fastclip.")]
    saved = {name: sys.modules.pop(name) for name in ours}
    try:
        make_it_fail()
        with pytest.raises(ImportError) as info:
            importlib.import_module("fastclip")
    finally:
        monkeypatch.undo()
        for name in [n for n in sys.modules if n == "fastclip" or n.startswith("fastclip.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    return info.value
