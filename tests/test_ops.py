"""The torch.ops.fastclip.* ops themselves: float64 references, determinism, in-place semantics on
awkward layouts, and errors (opcheck of every op is in test_op_contract.py)."""

import math

import pytest
import torch
from conftest import (
    CUDA_KERNELS_ON_CPU,
    DEVICES,
    FLOAT_DTYPES,
    HALF_ULP,
    RTOL,
    RTOL_NORM,
    RTOL_SUM,
    assert_close_to,
    make_params,
    random_tensors,
    reference_norm,
    rtol_for,
)

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

ops = torch.ops.fastclip
NORM_TYPES = [2.0, 1.0, math.inf, 0.0, 3.0, 0.5]
AWKWARD_SHAPES = [(1,), (7,), (3, 5), (0,), (129, 65), (2, 3, 4, 5), (70001,), (1, 1, 1)]


def mixed_list(device, gen):
    return random_tensors(AWKWARD_SHAPES, FLOAT_DTYPES, device, gen)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_norm_matches_float64_reference(device, norm_type, gen):
    tensors = mixed_list(device, gen)
    total, per_tensor = ops.multi_tensor_norm(tensors, norm_type, True)
    # float64 is in the list: accumulation is float64, the total is float64.
    assert total.dtype == torch.float64 and per_tensor.dtype == torch.float64
    assert total.device.type == device and per_tensor.shape == (len(tensors),)
    assert_close_to(total, reference_norm(tensors, norm_type), rtol=1e-12)
    for t, n in zip(tensors, per_tensor):
        expected = reference_norm([t], norm_type) if norm_type != 0 else (t != 0).sum().double()
        assert_close_to(n, expected, rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_norm_single_dtype_accumulates_in_float32(device, dtype, norm_type, gen):
    tensors = random_tensors(AWKWARD_SHAPES, [dtype], device, gen)
    total, per_tensor = ops.multi_tensor_norm(tensors, norm_type, True)
    assert total.dtype == dtype and per_tensor.dtype == torch.float32
    # One rounding to `dtype` of a float32 result (inf past the dtype's range, as in torch).
    expected = reference_norm(tensors, norm_type)
    if expected > torch.finfo(dtype).max:
        expected = torch.tensor(math.inf)
    assert_close_to(total, expected, rtol=RTOL[dtype] + RTOL_SUM[torch.float32])
    assert_close_to(
        per_tensor[1], reference_norm([tensors[1]], norm_type) if norm_type else 7.0, rtol=RTOL_SUM[torch.float32]
    )


@pytest.mark.parametrize("device", DEVICES)
def test_norm_without_per_tensor_returns_empty(device, gen):
    total, per_tensor = ops.multi_tensor_norm(random_tensors([(5,)], [torch.float32], device, gen), 2.0, False)
    assert per_tensor.shape == (0,) and total.shape == ()


@pytest.mark.parametrize("device", DEVICES)
def test_norm_is_bitwise_deterministic(device, gen):
    tensors = random_tensors([(300_001,), (64, 1000), (5,)] * 3, [torch.float32, torch.bfloat16], device, gen)
    first = ops.multi_tensor_norm(tensors, 2.0, True)
    for _ in range(5):
        again = ops.multi_tensor_norm(tensors, 2.0, True)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_cpu_norm_independent_of_thread_count(gen):
    """Also proves that computing two chunks in one loop (as each thread pairs its chunks, which
    depends on the thread count) gives each chunk's own partial, bit for bit."""
    tensors = random_tensors(
        [(1_000_003,), (256, 4097), (33,), (300_001,)], [torch.float32, torch.float16, torch.bfloat16], "cpu", gen
    )
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(ops.multi_tensor_norm(tensors, 2.0, True))
    finally:
        torch.set_num_threads(before)
    for total, per_tensor in results[1:]:
        assert torch.equal(total, results[0][0]) and torch.equal(per_tensor, results[0][1])


@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_propagate(device, gen):
    a, b = random_tensors([(100,), (100,)], [torch.float32], device, gen)
    a[17] = float("nan")
    for p in (2.0, 1.0, math.inf, 3.0):
        assert ops.multi_tensor_norm([a, b], p, False)[0].isnan()
    a[17] = float("inf")
    for p in (2.0, 1.0, math.inf, 3.0):
        assert ops.multi_tensor_norm([a, b], p, False)[0].isinf()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scale_scalar_and_per_tensor(device, dtype, gen):
    tensors = random_tensors(AWKWARD_SHAPES, [dtype], device, gen)
    # torch's in-place mul by a 0-d tensor computes in float (double for float64) and rounds
    # once, as fastclip does: the results are bitwise equal.
    coef = torch.tensor(0.37, device=device)
    expected = [t.clone().mul_(coef) for t in tensors]
    ops.multi_tensor_scale_(tensors, coef)
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)
    factors = torch.rand(len(tensors), dtype=torch.float64, generator=gen).to(device)
    expected = [t.clone().mul_(f) for t, f in zip(tensors, factors.float())]
    ops.multi_tensor_scale_(tensors, factors.float())
    for t, e in zip(tensors, expected):
        assert torch.equal(t, e)


def test_scale_by_exactly_one_writes_nothing(gen):
    # A signalling NaN becomes a quiet NaN when multiplied: its bits show whether it was written.
    t = torch.randn(1000, generator=gen)
    t.view(torch.int32)[123] = 0x7F800001
    bits = t.view(torch.int32).clone()
    ops.multi_tensor_scale_([t], torch.tensor(1.0))
    assert torch.equal(t.view(torch.int32), bits)
    ops.multi_tensor_clip_by_norm_([t], torch.tensor(0.5), 10.0)  # coefficient clamps to 1
    assert torch.equal(t.view(torch.int32), bits)
    ops.multi_tensor_scale_([t], torch.tensor(0.5))
    assert t.view(torch.int32)[123].item() != 0x7F800001  # written: the NaN is now quiet


@pytest.mark.parametrize("device", DEVICES)
def test_clip_by_norm_uses_torch_coefficient(device, gen):
    tensors = random_tensors([(40, 30), (17,)], [torch.float32], device, gen)
    originals = [t.clone() for t in tensors]
    total = torch.tensor(12.5, device=device)
    ops.multi_tensor_clip_by_norm_(tensors, total, 2.0)
    coef = torch.clamp(2.0 / (total + 1e-6), max=1.0)
    for t, o in zip(tensors, originals):
        assert torch.equal(t, o * coef)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 0.0])
def test_fused_clip_equals_norm_then_clip(device, norm_type, gen):
    tensors = random_tensors(AWKWARD_SHAPES, [torch.bfloat16, torch.float32], device, gen)
    separate = [t.clone() for t in tensors]
    total = ops.multi_tensor_clip_grad_norm_(tensors, 0.3, norm_type)
    expected_total, _ = ops.multi_tensor_norm(separate, norm_type, False)
    ops.multi_tensor_clip_by_norm_(separate, expected_total, 0.3)
    assert torch.equal(total, expected_total)
    for a, b in zip(tensors, separate):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_in_place_ops_write_through_views(device, gen):
    base = torch.randn(64, 50, generator=gen).to(device)
    original = base.clone()
    strided = base[:, ::2]  # not dense: processed on a copy and written back
    transposed = base[:30].t()[10:20]  # a strided slice of a transpose (rows 0-29, columns 10-19)
    rows = base[40:]  # contiguous view with an offset
    ops.multi_tensor_scale_([strided], torch.tensor(0.5, device=device))
    expected = original.clone()
    expected[:, ::2] *= 0.5
    assert torch.equal(base, expected)
    ops.multi_tensor_clamp_([transposed, rows], 0.3)
    expected[:30].t()[10:20].clamp_(-0.3, 0.3)
    expected[40:].clamp_(-0.3, 0.3)
    assert torch.equal(base, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_norm_of_non_contiguous_views(device, gen):
    base = torch.randn(37, 41, 3, generator=gen, dtype=torch.float64).to(device)
    views = [base[:, ::3], base.permute(2, 0, 1), base[5:9, 1:, 2], base.expand(2, 37, 41, 3)]
    total, per = ops.multi_tensor_norm(views, 2.0, True)
    assert_close_to(total, reference_norm(views, 2.0), rtol=1e-12)
    for v, n in zip(views, per):
        assert_close_to(n, torch.linalg.vector_norm(v.double()), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clamp_matches_torch(device, dtype, gen):
    t = random_tensors([(1001,)], [dtype], device, gen)[0]
    t[3] = float("nan")
    expected = t.clone().clamp_(-0.3, 0.3)
    ops.multi_tensor_clamp_([t], 0.3)
    assert torch.equal(t.isnan(), expected.isnan())
    assert torch.equal(t.nan_to_num(), expected.nan_to_num())


def test_many_small_tensors_in_one_call(gen):
    tensors = [torch.randn(int(n), generator=gen) for n in torch.randint(1, 64, (10_000,), generator=gen)]
    total, per = ops.multi_tensor_norm(tensors, 2.0, True)
    assert_close_to(total, reference_norm(tensors, 2.0), rtol=RTOL_SUM[torch.float32])
    assert_close_to(per, torch.stack([t.norm() for t in tensors]), rtol=RTOL_SUM[torch.float32])


@pytest.mark.slow
def test_tensor_over_2_pow_31_elements():
    n = 2**31 + 40
    t = torch.full((n,), 0.5, dtype=torch.bfloat16)
    t[2**31 + 7] = 3.0  # beyond any 32-bit index
    total = ops.multi_tensor_norm([t], math.inf, False)[0]
    assert total.item() == 3.0
    total = ops.multi_tensor_norm([t], 1.0, False)[0]
    assert_close_to(total, (n - 1) * 0.5 + 3.0, rtol=2**-8)
    ops.multi_tensor_scale_([t], torch.tensor(0.5))
    assert t[2**31 + 7].item() == 1.5 and t[-1].item() == 0.25
    ops.multi_tensor_clamp_([t], 0.75)
    assert t[2**31 + 7].item() == 0.75


class TestErrors:
    def test_bad_norm_type(self):
        with pytest.raises(RuntimeError, match="norm_type"):
            ops.multi_tensor_norm([torch.randn(3)], -1.0, False)
        with pytest.raises(RuntimeError, match="norm_type"):
            ops.multi_tensor_norm([torch.randn(3)], math.nan, False)

    def test_unsupported_dtype(self):
        with pytest.raises(RuntimeError, match=r"tensors\[1\] has dtype Int"):
            ops.multi_tensor_norm([torch.randn(3), torch.arange(3, dtype=torch.int32)], 2.0, False)

    def test_sparse(self):
        with pytest.raises(RuntimeError, match="only dense .strided. tensors are supported, not sparse"):
            ops.multi_tensor_norm([torch.randn(3, 3).to_sparse()], 2.0, False)

    def test_overlapping_in_place_target(self):
        with pytest.raises(RuntimeError, match="share memory"):
            ops.multi_tensor_scale_([torch.randn(3, 1).expand(3, 4)], torch.tensor(0.5))

    def test_same_tensor_twice_in_place(self):
        t = torch.randn(10)
        with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[2\] share memory"):
            ops.multi_tensor_scale_([t, torch.randn(3), t], torch.tensor(0.5))
        base = torch.randn(8, 8)
        with pytest.raises(RuntimeError, match="share memory"):
            ops.multi_tensor_clamp_([base[2:6], base[4:]], 0.1)
        # Interleaved views share no element, but torch cannot prove it: refused, with the way out.
        with pytest.raises(RuntimeError, match="may share memory; modify them in separate calls"):
            ops.multi_tensor_clamp_([base[:, ::2], base[:, 1::2]], 0.1)
        ops.multi_tensor_clamp_([base[:, ::2]], 0.1)
        ops.multi_tensor_clamp_([base[:, 1::2]], 0.1)
        assert base.abs().max() <= 0.1
        # Adjacent, disjoint slices of one buffer are fine (a flat grad buffer's views).
        flat = torch.randn(100)
        ops.multi_tensor_scale_([flat[:40], flat[40:70], flat[70:]], torch.tensor(0.0))
        assert torch.equal(flat, torch.zeros(100))

    def test_read_tensor_sharing_memory_with_a_written_one(self):
        """The kernels read the scale (or the norm, or AGC's params) while other threads write the list."""
        flat = torch.rand(12) + 0.5
        before = flat.clone()
        with pytest.raises(RuntimeError, match=r"scale shares memory with tensors\[1\].*scale.clone"):
            ops.multi_tensor_scale_([flat[:4], flat[4:]], flat[5])
        with pytest.raises(RuntimeError, match=r"total_norm shares memory with tensors\[0\].*total_norm.clone"):
            ops.multi_tensor_clip_by_norm_([flat[:8]], flat[7], 0.5)
        assert torch.equal(flat, before)
        grad = torch.randn(4, 3)
        with pytest.raises(RuntimeError, match=r"params\[1\] shares memory with grads\[1\].*cannot share memory"):
            ops.agc_clip_([torch.randn(2), grad], [torch.randn(2), grad], 0.01, 1e-3)
        with pytest.raises(RuntimeError, match=r"params\[0\] shares memory with grads\[1\]"):
            ops.agc_clip_([torch.randn(4, 3), grad], [grad.t().t(), torch.randn(4, 3)], 0.01, 1e-3)
        ops.multi_tensor_scale_([flat[:4], flat[4:]], flat[5].clone())  # a copy is fine

    def test_scale_shape(self):
        with pytest.raises(RuntimeError, match="scale must hold one element or one per tensor"):
            ops.multi_tensor_scale_([torch.randn(3), torch.randn(3)], torch.ones(3))
        with pytest.raises(RuntimeError, match="scale must be float32"):
            ops.multi_tensor_scale_([torch.randn(3)], torch.ones((), dtype=torch.int64))

    def test_negative_bounds(self):
        with pytest.raises(RuntimeError, match="max_norm must be >= 0"):
            ops.multi_tensor_clip_by_norm_([torch.randn(3)], torch.tensor(1.0), -1.0)
        with pytest.raises(RuntimeError, match="clip_value must be >= 0"):
            ops.multi_tensor_clamp_([torch.randn(3)], -0.5)

    def test_data_is_untouched_after_an_error(self):
        good = torch.randn(10)
        before = good.clone()
        with pytest.raises(RuntimeError):
            ops.multi_tensor_scale_([good, torch.arange(3)], torch.tensor(0.5))
        assert torch.equal(good, before)


_ISA_SCRIPT = """
import sys, torch, fastclip
ops = torch.ops.fastclip
g = torch.Generator().manual_seed(int(sys.argv[1]))
out = {}
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    # lengths around the 8- and 16-wide vector loops, and their scalar tails
    ts = [(torch.randn(n, generator=g) * 3).to(dtype) for n in (1, 15, 16, 17, 24, 31, 40, 4099, 70001)]
    ts[3][5] = float("nan")
    ts[5][20] = float("nan")  # in the 8-wide loop after the 16-wide one
    ts[6][1], ts[6][38] = float("inf"), -float("inf")
    out[f"norm {dtype}"] = ops.multi_tensor_norm(ts, 2.0, True)
    ops.multi_tensor_scale_(ts, torch.tensor(0.3))
    out[f"scale {dtype}"] = [t.clone() for t in ts]
    ops.multi_tensor_clamp_(ts, 0.5)
    out[f"clamp {dtype}"] = ts
torch.save(out, sys.argv[2])
"""


def test_cpu_instruction_set_variants_agree(tmp_path, gen):
    import os
    import subprocess
    import sys

    seed = str(torch.randint(0, 2**31 - 1, (), generator=gen).item())
    processes = {}
    for isa in ("generic", "avx2", "best"):  # one process each (the variant is chosen at load), all at once
        env = dict(os.environ)
        env.pop("FASTCLIP_CPU_ISA", None)
        if isa != "best":
            env["FASTCLIP_CPU_ISA"] = isa
        processes[isa] = subprocess.Popen(
            [sys.executable, "-c", _ISA_SCRIPT, seed, str(tmp_path / f"{isa}.pt")], env=env
        )
    results = {}
    for isa, process in processes.items():
        assert process.wait(timeout=300) == 0, f"the {isa} variant's script failed"
        results[isa] = torch.load(tmp_path / f"{isa}.pt")
    base = results["generic"]
    for isa in ("avx2", "best"):
        for key, value in results[isa].items():
            if key.startswith("norm"):  # FMA contraction may differ in the last bits
                assert_close_to(value[0], base[key][0], rtol=RTOL_SUM[torch.float32])
                assert_close_to(value[1], base[key][1], rtol=RTOL_SUM[torch.float32])
            else:  # the same rounding everywhere: bit for bit
                bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}
                for a, b in zip(value, base[key]):
                    assert torch.equal(a.view(bits[a.element_size()]), b.view(bits[b.element_size()])), (isa, key)


@pytest.mark.parametrize("device", DEVICES)
def test_scale_clear_on_zero(device, gen):
    """clear_on_zero stores zeros where the factor is exactly 0 (NaN and inf too); without it,
    0 * NaN stays NaN as in torch. Other factors multiply as usual."""
    tensors = [torch.randn(100, generator=gen).to(device), torch.randn(7, 3, generator=gen).to(device)]
    tensors[0][5] = float("nan")
    tensors[1][0, 0] = float("inf")
    expected_second = tensors[1] * 0.5
    cleared = [t.clone() for t in tensors]
    fastclip.ops.multi_tensor_scale_(cleared, torch.tensor([0.0, 0.5], device=device), True)
    assert torch.count_nonzero(cleared[0]) == 0
    torch.testing.assert_close(cleared[1], expected_second)
    kept = [t.clone() for t in tensors]
    fastclip.ops.multi_tensor_scale_(kept, torch.tensor(0.0, device=device))
    assert torch.isnan(kept[0][5]) and torch.isnan(kept[1][0, 0])


def test_public_wrappers_are_the_list_ops():
    """fastclip.ops wraps the list ops; each wrapper gives the op's result."""
    assert set(fastclip.ops.__all__) == {
        "multi_tensor_norm",
        "multi_tensor_scale_",
        "multi_tensor_clip_by_norm_",
        "multi_tensor_clip_grad_norm_",
        "multi_tensor_clamp_",
        "agc_clip_",
        "held_list",
    }
    for name in set(fastclip.ops.__all__) - {"held_list"}:  # held_list makes their argument (test_held_lists)
        assert hasattr(ops, name) and getattr(fastclip.ops, name).__doc__, name
    t = [torch.full((4,), 3.0), torch.full((16,), -2.0)]
    total, per = fastclip.ops.multi_tensor_norm(t, 2, per_tensor=True)  # an int norm_type is accepted
    assert total.item() == 10.0 and per.tolist() == [6.0, 8.0]
    assert fastclip.ops.multi_tensor_clip_grad_norm_(t, 5, 2).item() == 10.0
    torch.testing.assert_close(t[1], torch.full((16,), -1.0))
    fastclip.ops.multi_tensor_clamp_(t, 1)
    assert t[0].max().item() == 1.0


# ---- lists seen before: the checks and the plan are remembered per list of memory spans -------


@pytest.mark.parametrize("device", DEVICES)
def test_lists_seen_before_give_fresh_results_in_any_order(device, gen):
    """Six lists (more than the few a thread remembers), one the reverse of another, visited in
    an order that hits, reorders and evicts what is remembered; every call against float64."""
    lists = [random_tensors(AWKWARD_SHAPES[: 2 + i], FLOAT_DTYPES, device, gen) for i in range(5)]
    lists.append(lists[4][::-1])
    for i in [0, 1, 2, 3, 4, 5, 0, 3, 5, 1, 1, 4, 2, 0, 5]:
        tensors = lists[i]
        for t in tensors:  # new values each visit: nothing may be remembered but the plan
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype))
        total, per_tensor = ops.multi_tensor_norm(tensors, 2.0, True)
        assert_close_to(total, reference_norm(tensors, 2.0), rtol_for([t.dtype for t in tensors]))
        for t, norm in zip(tensors, per_tensor):
            assert_close_to(norm, reference_norm([t], 2.0), rtol_for([t.dtype]))


@pytest.mark.parametrize("device", DEVICES)
def test_grads_replaced_at_the_same_address_are_planned_afresh(device, gen):
    """Grads that take the place (the address) of earlier ones, as a caching allocator hands out:
    the same span with another shape, a shorter span, another dtype, a strided view, a new
    tensor, and no grad at all. Every step must clip exactly the grads it is given."""
    buffer = torch.empty(64, device=device)
    other = torch.randn(5, generator=gen).to(device)
    (steady,) = make_params([(3,)], device=device, generator=gen)
    steady.grad = torch.ones(3, device=device)
    replacements = [
        buffer[:12].view(3, 4),
        buffer[:12].view(4, 3),
        buffer[:6],
        buffer.view(torch.bfloat16)[:24],
        buffer[:24:2],
        buffer[:12].view(3, 4),
        None,
        other,
        buffer[:12].view(3, 4),
    ]
    for grad in replacements:
        if grad is not None:
            grad.copy_(torch.randn(grad.shape, generator=gen, dtype=torch.float64).to(grad.dtype) * 3)
        shape, dtype = ((12,), torch.float32) if grad is None else (grad.shape, grad.dtype)
        (param,) = make_params([shape], dtype, device, gen)  # a parameter of the grad's shape
        param.grad = grad
        steady.grad.fill_(1.0)
        expected = [g.double().clone() for g in (grad, steady.grad) if g is not None]
        total = fastclip.clip_grad_norm_([param, steady], 0.5)
        reference = math.sqrt(sum(float(g.pow(2).sum()) for g in expected))
        assert_close_to(total.double(), torch.tensor(reference, dtype=torch.float64), 1e-2)
        coef = min(0.5 / (reference + 1e-6), 1.0)
        for got, before in zip([g for g in (grad, steady.grad) if g is not None], expected):
            torch.testing.assert_close(got.double(), before * coef, rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_a_list_that_passed_does_not_excuse_an_overlapping_one(device):
    buffer = torch.zeros(16, device=device)
    a, b = buffer[:8], buffer[8:]
    ops.multi_tensor_scale_([a, b], torch.tensor(2.0, device=device))
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        ops.multi_tensor_scale_([a, buffer[4:12]], torch.tensor(2.0, device=device))
    ops.multi_tensor_norm([a, a], 2.0, False)  # reading one tensor twice is fine ...
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        ops.multi_tensor_scale_([a, a], torch.tensor(2.0, device=device))  # ... writing it twice is not


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_norms_are_the_float32_norms_of_the_same_values(dtype, norm_type, gen):
    """A half-precision value widens to float32 exactly, and each CPU variant runs the same lanes
    in the same order whatever the input dtype (float16 through the hardware conversion): the
    per-tensor norms of fp16/bf16 grads are bit for bit those of the same values in float32.
    Subnormals, signed zeros, the largest finite values, NaN, inf and lengths around the lanes.
    (The CUDA kernels load 16 bytes per vector, so their element order depends on the dtype.)"""
    if CUDA_KERNELS_ON_CPU:
        pytest.skip("the native CPU kernels' property; the CUDA kernels order elements by 16-byte vectors")
    special = torch.tensor([5.96e-8, -5.96e-8, 6.1e-5, -6.0e-5, 1e-7, 0.0, -0.0, 1.0, -2.5], dtype=torch.float64)
    if dtype == torch.float16:
        special = torch.cat([special, torch.tensor([65504.0, -65504.0])])
    tensors = [(torch.randn(n, generator=gen, dtype=torch.float64) * 3).to(dtype) for n in (1, 15, 16, 17, 33, 70001)]
    tensors += [special.repeat(7).to(dtype)]
    for bad in (math.nan, math.inf):
        t = torch.randn(123, generator=gen).to(dtype)
        t[50] = bad
        tensors.append(t)
    _, half_norms = ops.multi_tensor_norm(tensors, norm_type, True)
    _, float_norms = ops.multi_tensor_norm([t.float() for t in tensors], norm_type, True)
    assert half_norms.dtype == float_norms.dtype == torch.float32
    assert torch.equal(half_norms.view(torch.int32), float_norms.view(torch.int32))


# Magnitudes whose squares (or p-th powers) overflow or underflow float32, per dtype, each with
# ordinary values: float16's whole range fits float32 squares, not its 12th powers.
EXTREMES = {
    torch.float32: (1e20, 1e30, 1e-25, 1e-38),
    torch.bfloat16: (1e20, 1e30, 1e-25, 1e-38),
    torch.float16: (2e3, 1e-6),
}


def extreme_list(dtype, device, gen):
    """Per magnitude: a tensor across several chunks (CPU chunks are 64Ki elements) and a short
    one; then ordinary values, and one tensor whose first chunks are tiny and last chunk huge."""
    tensors = []
    for scale in EXTREMES[dtype]:
        tensors += random_tensors([(200_003,), (1000,)], [dtype], device, gen, scale=scale)
    tensors += random_tensors([(70_001,), (33,)], [dtype], device, gen)
    mixed = random_tensors([(140_000,)], [dtype], device, gen, scale=EXTREMES[dtype][-1])[0]
    mixed[131_072:] = random_tensors([(8928,)], [dtype], device, gen, scale=EXTREMES[dtype][0])[0]
    return tensors + [mixed]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5, 0.1, 12.0])
def test_norms_of_huge_and_tiny_grads_neither_overflow_nor_underflow(device, dtype, norm_type, gen):
    """Wherever the true norm is a normal float32, per-tensor norms are within RTOL_NORM of the
    float64 reference (torch gives inf for 1e20 and 0 for 1e-25 in float32), and so is the total
    before it is rounded to the grads' dtype (inf past that dtype's range, as in torch)."""
    tensors = extreme_list(dtype, device, gen)
    total, per_tensor = ops.multi_tensor_norm(tensors, norm_type, True)
    normal = torch.finfo(torch.float32)
    for t, norm in zip(tensors, per_tensor):
        expected = float(reference_norm([t], norm_type))
        if normal.tiny <= expected <= normal.max:
            assert_close_to(norm, expected, rtol=RTOL_NORM[dtype])
        elif expected > normal.max:  # p = 0.1 over 200,003 elements: n^10 times the values
            assert norm.isinf()
    expected = float(reference_norm(tensors, norm_type))
    if expected > torch.finfo(dtype).max:
        assert total.isinf()
    elif expected >= normal.tiny and expected >= torch.finfo(dtype).tiny:
        assert_close_to(total, expected, rtol=RTOL_NORM[dtype] + HALF_ULP[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_wide_recompute_keeps_nan_inf_and_zero(device, gen):
    """The chunks recomputed wide (their float sums left the safe range) still give NaN for a NaN,
    inf for an inf, and an exact 0 for all-zero grads, for every p."""
    zeros = torch.zeros(100_000, device=device)
    negative_zeros = -zeros
    barely = zeros.clone()
    barely[99_999] = 1e-40  # one subnormal in a chunk of zeros: a float sum of 0 that is not all zeros
    for p in (2.0, 3.0, 12.0, 0.5):
        assert float(ops.multi_tensor_norm([zeros, negative_zeros[:5], negative_zeros], p, True)[0]) == 0.0
        assert_close_to(ops.multi_tensor_norm([barely], p, False)[0], 1e-40, rtol=2**-10)  # 1e-40 is subnormal
        for bad in (math.nan, math.inf):
            huge = random_tensors([(100_000,)], [torch.float32], device, gen, scale=1e30)[0]
            huge[77_777] = bad
            total, per_tensor = ops.multi_tensor_norm([huge, zeros], p, True)
            assert per_tensor[1] == 0.0
            assert total.isnan() if math.isnan(bad) else total.isinf()
