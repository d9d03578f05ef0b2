"""fastclip's torch.nn.utils mirrors against torch itself and a float64 reference."""

import math
import warnings

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
    clipped_by,
    make_params,
    random_tensors,
    reference_norm,
    rtol_for,
    runs_cuda_kernels,
)

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

SHAPES = [(64, 33), (7,), (1,), (3, 4, 5), (1000,), (2, 1, 9)]
DTYPE_LISTS = [
    [torch.float32],
    [torch.bfloat16],
    [torch.float16],
    [torch.float64],
    [torch.float32, torch.bfloat16],
    [torch.bfloat16, torch.float16, torch.float32, torch.float64],
]


def twin_params(tensors):
    """Two parameter lists with identical grads: one for torch, one for fastclip."""
    return make_params(grads=tensors), make_params(grads=tensors)


def clip_tolerance(dtypes):
    # torch rounds every per-tensor norm to its grad's dtype, so in half precision its total
    # (hence its coefficient) can sit a rounding step or two from fastclip's; each side then
    # rounds the scaled grad once.
    return 4 * max(RTOL[d] for d in dtypes) + RTOL_SUM[torch.float32]


def expected_clipped(grads, total, max_norm):
    """The grads scaled by torch's coefficient computed from `total`, in each grad's opmath; as
    torch's CUDA _foreach_mul_ does, the CUDA kernels first round it to an fp16/bf16 grad's dtype."""
    acc = torch.float64 if total.dtype == torch.float64 else torch.float32
    coef = torch.clamp(max_norm / (total.to(acc) + 1e-6), max=1.0)
    return [clipped_by(g, coef) for g in grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtypes", DTYPE_LISTS, ids=lambda ds: "+".join(str(d)[6:] for d in ds))
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.7, 1e4])
def test_clip_grad_norm_matches_torch(device, dtypes, norm_type, max_norm, gen):
    grads = random_tensors(SHAPES, dtypes, device, gen)
    ours, theirs = twin_params(grads)
    total = fastclip.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total.dtype == expected.dtype and total.device == expected.device and total.shape == ()
    assert_close_to(total, expected, rtol=clip_tolerance(dtypes))
    # fastclip rounds once; the float64 reference is the exact value.
    assert_close_to(total, reference_norm(grads, norm_type), rtol=rtol_for(dtypes) + RTOL_SUM[torch.float32])
    for a, b in zip(ours, theirs):
        assert a.grad.dtype == b.grad.dtype
        assert_close_to(a.grad, b.grad, rtol=clip_tolerance(dtypes), atol=1e-7)
    # Against our own total, the scaling is exact: torch's coefficient formula, one rounding.
    for a, e in zip(ours, expected_clipped(grads, total, max_norm)):
        assert torch.equal(a.grad, e)
    if max_norm == 1e4 and norm_type != 0.0:  # nothing to clip: grads are untouched, bit for bit
        for a, g in zip(ours, grads):
            assert torch.equal(a.grad, g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2.0])
def test_get_total_norm_matches_torch(device, norm_type, gen):
    tensors = random_tensors(SHAPES, [torch.float32, torch.float64], device, gen)
    total = fastclip.get_total_norm(tensors, norm_type)
    expected = torch.nn.utils.get_total_norm(tensors, norm_type)
    assert total.dtype == expected.dtype == torch.float64
    # torch reduces the float32 tensors in float32; fastclip accumulates the whole list in float64.
    assert_close_to(total, expected, rtol=RTOL_SUM[torch.float32])
    assert_close_to(total, reference_norm(tensors, norm_type), rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clip_grads_with_norm_matches_torch(device, dtype, gen):
    grads = random_tensors(SHAPES, [dtype], device, gen)
    ours, theirs = twin_params(grads)
    total = torch.tensor(9.5, device=device)
    fastclip.clip_grads_with_norm_(ours, 2.0, total)
    torch.nn.utils.clip_grads_with_norm_(theirs, 2.0, total)
    # torch's bits on its device; the CUDA kernels on the CPU give torch's CUDA bits instead.
    emulated = CUDA_KERNELS_ON_CPU and torch.device(device).type == "cpu"
    first = expected_clipped(grads, total, 2.0)
    for a, b, e in zip(ours, theirs, first):
        assert torch.equal(a.grad, e if emulated else b.grad)
    fastclip.clip_grads_with_norm_(ours, 1.0, 4.0)  # a plain number works too
    torch.nn.utils.clip_grads_with_norm_(theirs, 1.0, torch.tensor(4.0))
    for a, b, e in zip(ours, theirs, expected_clipped(first, torch.tensor(4.0), 1.0)):
        assert torch.equal(a.grad, e if emulated else b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clip_grad_value_matches_torch(device, dtype, gen):
    grads = random_tensors(SHAPES, [dtype], device, gen)
    ours, theirs = twin_params(grads)
    fastclip.clip_grad_value_(ours, 0.4)
    torch.nn.utils.clip_grad_value_(theirs, 0.4)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.grad, b.grad)


class TestEdgeCases:
    def test_no_grads(self):
        params = make_params([(3,), (3,)])
        total = fastclip.clip_grad_norm_(params, 1.0)
        assert total.item() == 0.0 and total.device.type == "cpu" and total.dtype == torch.float32
        assert fastclip.get_total_norm([]).item() == 0.0
        fastclip.clip_grad_value_(params, 1.0)
        fastclip.clip_grads_with_norm_(params, 1.0, torch.tensor(2.0))

    def test_none_grads_are_skipped(self, gen):
        grads = random_tensors(SHAPES, [torch.float32], "cpu", gen)
        ours, theirs = twin_params(grads)
        ours[1].grad = theirs[1].grad = None
        assert_close_to(fastclip.clip_grad_norm_(ours, 0.1), torch.nn.utils.clip_grad_norm_(theirs, 0.1), rtol=2e-6)
        assert ours[1].grad is None
        for a, b in zip(ours, theirs):
            if a.grad is not None:
                assert_close_to(a.grad, b.grad, rtol=2e-6)

    def test_single_tensor_and_generator(self, gen):
        (p,) = make_params(grads=random_tensors([(50,)], [torch.float32], "cpu", gen))
        expected = reference_norm([p.grad], 2.0)
        assert_close_to(fastclip.clip_grad_norm_(p, 1e9), expected, rtol=2e-6)
        params = make_params(grads=random_tensors(SHAPES, [torch.float32], "cpu", gen))
        expected = reference_norm([q.grad for q in params], 2.0)
        assert_close_to(fastclip.clip_grad_norm_((q for q in params), 1e9), expected, rtol=2e-6)

    def test_empty_generator_warns_like_torch(self):
        for clip in (lambda g: fastclip.clip_grad_norm_(g, 1.0), lambda g: fastclip.clip_grad_value_(g, 1.0)):
            with pytest.warns(UserWarning, match="empty generator") as warned:
                clip(p for p in [])
            assert warned[0].filename == __file__  # pointed at the caller

    def test_empty_tensors(self, gen):
        grads = random_tensors([(0,), (5,), (0, 3)], [torch.float32], "cpu", gen)
        ours, theirs = twin_params(grads)
        assert_close_to(fastclip.clip_grad_norm_(ours, 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5), rtol=2e-6)
        # torch's foreach inf-norm refuses empty tensors; fastclip treats them as norm 0.
        assert_close_to(fastclip.get_total_norm(grads, math.inf), grads[1].abs().max(), rtol=0)

    def test_non_contiguous_grads(self, gen):
        params = make_params([(40, 30), (8, 6)])
        base = torch.randn(30, 40, generator=gen)
        params[0].grad = base.t()  # dense, transposed
        params[1].grad = torch.randn(8, 12, generator=gen)[:, ::2]  # strided view with gaps
        theirs = make_params(grads=[p.grad for p in params])
        strided_base = params[1].grad._base
        before = strided_base.clone()
        total = fastclip.clip_grad_norm_(params, 0.5)
        assert_close_to(total, torch.nn.utils.clip_grad_norm_(theirs, 0.5), rtol=2e-6)
        for a, b in zip(params, theirs):
            assert_close_to(a.grad, b.grad, rtol=2e-6)
        assert_close_to(base, theirs[0].grad.t(), rtol=2e-6)  # written in the grad's own storage
        assert torch.equal(strided_base[:, 1::2], before[:, 1::2])  # the gaps are untouched

    def test_ten_thousand_small_tensors(self, gen):
        grads = [torch.randn(int(n), generator=gen) for n in torch.randint(1, 300, (10_000,), generator=gen)]
        ours, theirs = twin_params(grads)
        total = fastclip.clip_grad_norm_(ours, 1.0)
        assert_close_to(total, torch.nn.utils.clip_grad_norm_(theirs, 1.0), rtol=2e-5)
        assert_close_to(total, reference_norm(grads, 2.0), rtol=2e-5)
        for a, b in zip(ours[::97], theirs[::97]):
            assert_close_to(a.grad, b.grad, rtol=2e-5)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_nonfinite_grads_behave_like_torch(self, bad, gen):
        grads = random_tensors(SHAPES, [torch.float32], "cpu", gen)
        grads[2][0] = bad
        ours, theirs = twin_params(grads)
        total = fastclip.clip_grad_norm_(ours, 1.0)
        expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        assert_close_to(total, expected, rtol=0)
        for a, b in zip(ours, theirs):
            assert_close_to(a.grad, b.grad, rtol=0)

    def test_error_if_nonfinite_raises_and_leaves_grads(self, gen):
        grads = random_tensors(SHAPES, [torch.float32], "cpu", gen)
        grads[0][3, 3] = math.nan
        ours = make_params(grads=grads)
        with pytest.raises(RuntimeError, match="non-finite"):
            fastclip.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
        for a, g in zip(ours, grads):
            assert torch.equal(a.grad.nan_to_num(), g.nan_to_num())
        with pytest.raises(RuntimeError, match="non-finite"):
            fastclip.get_total_norm(grads, error_if_nonfinite=True)

    def test_max_norm_zero_zeroes_grads(self, gen):
        ours = make_params(grads=random_tensors(SHAPES, [torch.bfloat16], "cpu", gen))
        fastclip.clip_grad_norm_(ours, 0.0)
        assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in ours)

    def test_norm_dtype_follows_promotion(self, gen):
        bf = random_tensors(SHAPES, [torch.bfloat16], "cpu", gen)
        assert fastclip.get_total_norm(bf).dtype == torch.bfloat16
        mixed = random_tensors(SHAPES, [torch.bfloat16, torch.float16], "cpu", gen)
        assert fastclip.get_total_norm(mixed).dtype == torch.float32  # as torch.promote_types
        assert fastclip.get_total_norm(mixed).dtype == torch.nn.utils.get_total_norm(mixed).dtype

    def test_fp16_per_tensor_overflow_is_documented_difference(self):
        # torch rounds each per-tensor norm to fp16 (inf past 65504); fastclip rounds the total only.
        big = torch.full((4,), 40000.0, dtype=torch.float16)
        assert torch.nn.utils.get_total_norm([big]).isinf()
        assert fastclip.get_total_norm([big]).isinf()  # 80000 does not fit fp16 either
        pair = [torch.full((2,), 30000.0, dtype=torch.float16), torch.full((2,), 1.0, dtype=torch.float32)]
        assert_close_to(fastclip.get_total_norm(pair), math.sqrt(2 * 30000.0**2 + 2), rtol=2e-6)
        mixed = [big, torch.full((2,), 1.0, dtype=torch.float32)]  # the fp16 tensor's own norm is 80000
        assert torch.nn.utils.get_total_norm(mixed).isinf()
        assert_close_to(fastclip.get_total_norm(mixed), math.sqrt(4 * 40000.0**2 + 2), rtol=2e-6)


class TestErrors:
    def params(self, gen, n=3):
        return make_params(grads=random_tensors([(4, 4)] * n, [torch.float32], "cpu", gen))

    @pytest.mark.parametrize("value", [-1.0, math.nan])
    def test_bad_max_norm(self, value, gen):
        with pytest.raises(ValueError, match="max_norm must be >= 0"):
            fastclip.clip_grad_norm_(self.params(gen), value)
        with pytest.raises(ValueError, match="max_norm must be >= 0"):
            fastclip.clip_grads_with_norm_(self.params(gen), value, torch.tensor(1.0))

    def test_bad_norm_type(self, gen):
        with pytest.raises(ValueError, match="norm_type must be >= 0"):
            fastclip.clip_grad_norm_(self.params(gen), 1.0, norm_type=-2)
        with pytest.raises(TypeError, match="norm_type must be a number"):
            fastclip.get_total_norm([torch.randn(3)], norm_type="two")

    def test_bad_clip_value(self, gen):
        with pytest.raises(ValueError, match="clip_value must be >= 0"):
            fastclip.clip_grad_value_(self.params(gen), -0.1)

    def test_non_tensor_in_list(self, gen):
        with pytest.raises(TypeError, match=r"parameters\[1\] is a str"):
            fastclip.clip_grad_norm_([self.params(gen)[0], "w"], 1.0)
        with pytest.raises(TypeError, match=r"tensors\[1\] is a int"):
            fastclip.get_total_norm([torch.randn(3), 5])
        with pytest.raises(TypeError, match="parameters must be a Tensor or an iterable"):
            fastclip.clip_grad_norm_(3.0, 1.0)

    def test_sparse_grad(self, gen):
        params = self.params(gen)
        params[2].grad = params[2].grad.to_sparse()
        with pytest.raises(RuntimeError, match=r"parameters\[2\]\.grad has layout torch.sparse_coo"):
            fastclip.clip_grad_norm_(params, 1.0)
        with pytest.raises(RuntimeError, match=r"parameters\[2\]\.grad has layout"):
            fastclip.clip_grad_value_(params, 1.0)

    def test_unsupported_dtype(self):
        with pytest.raises(RuntimeError, match=r"tensors\[1\] has dtype torch.int64"):
            fastclip.get_total_norm([torch.randn(3), torch.arange(3)])

    def test_different_devices(self):
        with pytest.raises(RuntimeError, match=r"tensors\[1\] is on meta but the first one is on cpu"):
            fastclip.get_total_norm([torch.randn(3), torch.empty(3, device="meta")])


def test_clip_in_a_training_step_compiles_with_fullgraph(gen):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    reference = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    reference.load_state_dict(model.state_dict())
    x = torch.randn(8, 16, generator=gen)

    def step(m):
        loss = m(x).pow(2).mean() * 100
        loss.backward()
        return loss

    @torch.compile(fullgraph=True, backend="aot_eager")
    def clip(params):
        return fastclip.clip_grad_norm_(params, 0.5)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fullgraph=True raises on any graph break; warnings fail too
        step(model)
        total = clip(list(model.parameters()))
    step(reference)
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    assert_close_to(total, expected, rtol=2e-6)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert_close_to(a.grad, b.grad, rtol=2e-6)
    assert total > 0.5  # the case clips


def test_compiled_ops_with_inductor(gen):
    torch._dynamo.reset()
    tensors = random_tensors([(33, 7), (100,)], [torch.float32, torch.bfloat16], "cpu", gen)
    expected = [t.clone() for t in tensors]
    expected_total = fastclip.clip_grad_norm_(make_params(grads=expected), 1.0)

    @torch.compile(fullgraph=True)
    def clip(ts):
        total = fastclip.get_total_norm(ts)
        fastclip.ops.multi_tensor_clip_by_norm_(ts, total, 1.0)
        return total

    total = clip(tensors)
    assert_close_to(total, expected_total, rtol=0)


def test_distributed_local_step_alone(gen):
    """The local step every distributed path shares (fastclip.distributed.norms_across_ranks) with
    no group: the norm of this rank's tensors; a rank with none gives 0 in float32 (it would
    still join the all-reduce)."""
    from fastclip.distributed import norms_across_ranks

    tensors = random_tensors([(5, 3), (17,), (0,)], [torch.float32, torch.bfloat16], "cpu", gen)
    for norm_type in (2.0, 1.0, math.inf):
        total, per = norms_across_ranks(tensors, norm_type, (), device="cpu", keep_per_tensor=True)
        assert total.dtype == torch.float32 and per.shape == (3,)
        assert_close_to(total, fastclip.get_total_norm(tensors, norm_type), rtol=RTOL_SUM[torch.float32])
        assert_close_to(per, [reference_norm([t], norm_type) for t in tensors], rtol=RTOL_SUM[torch.float32])
    total, per = norms_across_ranks([], 2.0, (), device="cpu")
    assert total.item() == 0.0 and total.dtype == torch.float32 and per is None
    with pytest.raises(ValueError, match="norm_type=0"):
        norms_across_ranks(tensors, 0.0, (), device="cpu")


def _fp16_grads_over_65504(gen, device):
    """fp16 grads whose tensors' norms fit fp16 (about 49,500 and 58,600) but whose total (about
    76,700) does not."""
    return [(torch.randn(n, generator=gen, dtype=torch.float64) * 700).half().to(device) for n in (5000, 7000, 3)]


@pytest.mark.parametrize("device", DEVICES)
def test_all_fp16_total_over_65504_is_inf_but_the_grads_are_clipped_by_the_true_norm(device, monkeypatch, gen):
    grads = _fp16_grads_over_65504(gen, device)
    exact = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert exact > 65504 and all(float(g.double().norm()) < 65504 for g in grads)
    theirs = make_params(grads=grads)
    assert torch.nn.utils.clip_grad_norm_(theirs, 1.0).isinf()  # torch: inf, and every grad zeroed
    assert all(bool((p.grad == 0).all()) for p in theirs)
    outcomes = []
    for single_launch in ("1", "0"):  # the CUDA kernels' one launch and their two: the same bits
        monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", single_launch)
        ours = make_params(grads=grads)
        total = fastclip.clip_grad_norm_(ours, 1.0)
        assert total.dtype == torch.float16 and total.isinf()  # torch's dtype, and so torch's value
        # The CUDA kernels round the coefficient (1/76,700, an fp16 subnormal) to fp16 first, as
        # torch's CUDA path does: 0.5% of it.
        rtol = 1e-2 if runs_cuda_kernels(device) else 2e-3
        clipped = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ours))
        assert clipped == pytest.approx(1.0, rel=rtol)
        for p, g in zip(ours, grads):
            torch.testing.assert_close(p.grad.double(), g.double() / exact, rtol=rtol, atol=1e-6)
        outcomes.append([p.grad for p in ours])
    for a, b in zip(*outcomes):
        assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    for p, g in zip(ours, grads):
        p.grad = g.clone()
    with pytest.raises(RuntimeError, match="non-finite"):  # as torch: the returned total is inf
        fastclip.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert all(torch.equal(p.grad, g) for p, g in zip(ours, grads))  # and nothing was touched


def test_all_fp16_total_over_65504_across_a_process_group_is_clipped_too(gen):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    grads = _fp16_grads_over_65504(gen, "cpu")
    exact = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    params = make_params(grads=grads)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        total = fastclip.clip_grad_norm_(params, 1.0, process_group=dist.group.WORLD)
    finally:
        dist.destroy_process_group()
    assert total.dtype == torch.float16 and total.isinf()
    rtol = 1e-2 if runs_cuda_kernels("cpu") else 2e-3  # the fp16-rounded coefficient, as above
    for p, g in zip(params, grads):
        torch.testing.assert_close(p.grad.double(), g.double() / exact, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_huge_grads_are_clipped_not_zeroed(device, dtype, monkeypatch, gen):
    """Grads around 1e20: their squares overflow float32, so torch's total is inf and it zeroes
    every grad. fastclip's total is the true norm (ops tests: within RTOL_NORM), and the grads are
    clipped to max_norm, on both CUDA kernel paths with the same bits; ZClip sees a spike, not a
    non-finite step."""
    grads = random_tensors([(150_001,), (300,)], [dtype], device, gen, scale=1e20)
    theirs = make_params(grads=grads)
    assert torch.nn.utils.clip_grad_norm_(theirs, 1.0).isinf()
    exact = float(reference_norm(grads, 2.0))
    outcomes = []
    for single_launch in ("1", "0"):
        monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", single_launch)
        ours = make_params(grads=grads)
        total = fastclip.clip_grad_norm_(ours, 1.0)
        assert_close_to(total, exact, rtol=RTOL_NORM[dtype] + HALF_ULP[dtype])
        assert float(reference_norm([p.grad for p in ours], 2.0)) == pytest.approx(1.0, rel=RTOL[dtype])
        outcomes.append([p.grad for p in ours])
    for a, b in zip(*outcomes):
        assert torch.equal(a, b)
    model = make_params(grads=grads)
    clipper = fastclip.ZClip(model, warmup_steps=1, max_grad_norm=None)
    for scale in (1.0, 1.0, 1e20):
        for p, g in zip(model, grads):
            p.grad = g / 1e20 * scale
        result = clipper.step()
    assert not bool(result.nonfinite) and bool(result.clipped)
    assert float(result.norm) == pytest.approx(exact, rel=RTOL_NORM[dtype] + HALF_ULP[dtype])


def test_norm_type_12_across_a_process_group_neither_overflows_nor_underflows(gen):
    """Across ranks, partials are norm ** p in float64, which overflows for p > 8 with float32 norms
    of 1e30 (1e360) and underflows with norms of 1e-30: those are scaled by the largest norm across
    the ranks first. One rank, a real gloo group, per-tensor and total forms."""
    import torch.distributed as dist

    from fastclip.distributed import reduce_norms

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        for scale in (1e30, 1e-30):
            grads = random_tensors([(5000,), (7,), (0,)], [torch.float32], "cpu", gen, scale=scale)
            params = make_params(grads=grads)
            total = fastclip.clip_grad_norm_(params, 1e40, norm_type=12.0, process_group=dist.group.WORLD)
            assert_close_to(total, reference_norm(grads, 12.0), rtol=RTOL_NORM[torch.float32])
            _, local = torch.ops.fastclip.multi_tensor_norm(grads, 12.0, True)
            total, per_tensor = reduce_norms(local, 12.0, (dist.group.WORLD,), torch.float32, keep_per_tensor=True)
            assert_close_to(total, reference_norm(grads, 12.0), rtol=RTOL_NORM[torch.float32])
            assert_close_to(
                per_tensor, torch.stack([reference_norm([g], 12.0) for g in grads]), rtol=RTOL_NORM[torch.float32]
            )
    finally:
        dist.destroy_process_group()
