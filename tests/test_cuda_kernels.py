"""The cases the CUDA kernels must get right, run on whatever the CPU ops run: the native CPU
kernels, or with FASTCLIP_CPU_KERNELS=cuda the CUDA kernels themselves on the CPU execution layer
(csrc/simt), where every __global__ function must show up in the kernel log. Misaligned starts,
lengths around the 16-byte vector and the chunk, empty tensors, 1 and 10,000 tensors, every dtype
and norm kind, statistics with more entries than a block has threads, AGC with odd rows; each
against torch or a float64 reference, with the memory around every view checked untouched."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from clipper_refs import AdaGCReference, set_grads, spiky_grads, twin_models
from clippers_table import CLIPPERS, variant
from conftest import FLOAT_DTYPES, RTOL_SUM, assert_close_to, clipped_by, make_params, reference_norm

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

ops = torch.ops.fastclip
ROOT = Path(__file__).resolve().parents[1]
TESTS = str(Path(__file__).resolve().parent)
ON_LAYER = fastclip.build_info()["cpu_kernels"] == "cuda"
NORM_TYPES = [2.0, 1.0, math.inf, 0.0, 3.5]
CHUNK = 64 * 1024  # the CUDA plan's smallest chunk (kMinChunkSize), in elements
# Around the 16-byte vector (2 to 8 elements) and the chunk.
LENGTHS = [1, 2, 3, 7, 8, 9, 15, 16, 17, 33, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5]
GUARD = 16  # elements of sentinel on each side of every view


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


class GuardedViews:
    """Views into larger buffers, starting 1-7 elements past a 16-byte boundary (or on it), with
    GUARD random elements on both sides that no op may change."""

    def __init__(self, lengths, dtypes, gen, scale=1.0):
        self.buffers, self.views, self.spans = [], [], []
        for i, n in enumerate(lengths):
            dtype = dtypes[i % len(dtypes)]
            offset = GUARD + i % 8
            buffer = (torch.randn(n + 2 * GUARD + 8, generator=gen, dtype=torch.float64) * scale).to(dtype)
            self.buffers.append(buffer)
            self.views.append(buffer[offset : offset + n])
            self.spans.append((offset, offset + n))
        self.before = [b.clone() for b in self.buffers]

    def assert_outside_untouched(self):
        for i, (buffer, before, (start, stop)) in enumerate(zip(self.buffers, self.before, self.spans)):
            assert torch.equal(buffer[:start], before[:start]), f"tensor {i}: written before its start"
            assert torch.equal(buffer[stop:], before[stop:]), f"tensor {i}: written past its end"

    def originals(self):
        return [before[start:stop] for before, (start, stop) in zip(self.before, self.spans)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_norm_of_misaligned_views_around_boundaries(dtype, norm_type, gen):
    # Small values in float16, so that even the L1 total of the longest list stays finite.
    views = GuardedViews(LENGTHS + [0, 5, 0], [dtype], gen, scale=0.01 if dtype == torch.float16 else 1.0)
    for per_tensor in (True, False):
        total, norms = ops.multi_tensor_norm(views.views, norm_type, per_tensor)
        assert_close_to(total, reference_norm(views.views, norm_type), rtol=RTOL_SUM[dtype])
        if per_tensor:
            expected = [
                torch.linalg.vector_norm(v.double(), norm_type) if v.numel() else torch.tensor(0.0, dtype=torch.float64)
                for v in views.views
            ]
            assert_close_to(norms, torch.stack(expected), rtol=RTOL_SUM[dtype])
        else:
            assert norms.numel() == 0
    views.assert_outside_untouched()


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_total_is_the_same_with_and_without_per_tensor(norm_type, gen):
    """One total, bit for bit, whichever way it was asked for (the combine order is the list's)."""
    views = GuardedViews(LENGTHS, FLOAT_DTYPES, gen)
    with_norms, _ = ops.multi_tensor_norm(views.views, norm_type, True)
    without, _ = ops.multi_tensor_norm(views.views, norm_type, False)
    assert torch.equal(with_norms, without), (with_norms.item(), without.item())


def scaled(x, factor):
    """x * factor as the kernels compute it: in x's opmath, rounded once to x's dtype."""
    return (x.to(opmath(x.dtype)) * torch.tensor(factor, dtype=torch.float64).to(opmath(x.dtype))).to(x.dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_in_place_ops_write_exactly_their_views(dtype, gen):
    lengths = LENGTHS + [0, 4]
    # A scalar factor, per-tensor factors (exactly 1 and 0 among them), and clear_on_zero.
    views = GuardedViews(lengths, [dtype], gen)
    factor = torch.tensor(0.37)  # float32: every dtype is scaled by its value, 0.37000000476837...
    ops.multi_tensor_scale_(views.views, factor)
    for v, x in zip(views.views, views.originals()):
        assert torch.equal(v, scaled(x, float(factor)))
    views.assert_outside_untouched()

    views = GuardedViews(lengths, [dtype], gen)
    views.views[1][0] = float("nan")
    factors = torch.tensor([1.0, 0.0] + [0.5 + i / 7 for i in range(len(lengths) - 2)], dtype=torch.float64)
    ops.multi_tensor_scale_(views.views, factors, clear_on_zero=True)
    for i, (v, x) in enumerate(zip(views.views, views.originals())):
        want = torch.zeros_like(x) if factors[i] == 0 else scaled(x, float(factors[i]))
        assert torch.equal(v, want), f"tensor {i}"
    views.assert_outside_untouched()

    views = GuardedViews(lengths, [dtype], gen)
    ops.multi_tensor_clamp_(views.views, 0.5)
    for v, x in zip(views.views, views.originals()):
        assert torch.equal(v, x.to(opmath(dtype)).clamp(-0.5, 0.5).to(dtype))
    views.assert_outside_untouched()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clip_by_norm_and_fused_clip_write_exactly_their_views(dtype, gen):
    views = GuardedViews(LENGTHS + [0], [dtype], gen)
    total = torch.tensor(40.0, dtype=opmath(dtype))
    ops.multi_tensor_clip_by_norm_(views.views, total, 2.1)
    coef = torch.clamp(2.1 / (total + 1e-6), max=1.0)
    for v, x in zip(views.views, views.originals()):
        assert torch.equal(v, clipped_by(x, coef))
    views.assert_outside_untouched()

    views = GuardedViews(LENGTHS + [0], [dtype], gen)
    fused_total = ops.multi_tensor_clip_grad_norm_(views.views, 1.5, 2.0)
    assert_close_to(fused_total, reference_norm(views.originals(), 2.0), rtol=RTOL_SUM[dtype])
    coef = torch.clamp(1.5 / (fused_total.to(opmath(dtype)) + 1e-6), max=1.0)
    for v, x in zip(views.views, views.originals()):
        assert torch.equal(v, clipped_by(x, coef))
    views.assert_outside_untouched()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_coefficient_rounds_as_torch_does_on_the_device(dtype, gen):
    """A coefficient that rounds differently in float32 and in the grads' dtype: the CPU kernels
    scale by the float32 value (torch's CPU bits), the CUDA kernels by the rounded one (torch's CUDA bits)."""
    grads = [torch.randn(1000, generator=gen).to(dtype)]
    params = make_params(grads=grads)
    total = torch.tensor(3.0)  # coefficient 0.7 / 3.000001: not representable in fp16/bf16
    fastclip.clip_grads_with_norm_(params, 0.7, total)
    coef = torch.clamp(0.7 / (total + 1e-6), max=1.0)
    as_cpu = (grads[0].float() * coef).to(dtype)
    as_cuda = (grads[0].float() * coef.to(dtype).float()).to(dtype)
    assert not torch.equal(as_cpu, as_cuda)  # the case tells the two apart
    assert torch.equal(params[0].grad, as_cuda if ON_LAYER else as_cpu)
    if not ON_LAYER:  # torch itself, on this device
        expected = make_params(grads=grads)
        torch.nn.utils.clip_grads_with_norm_(expected, 0.7, total)
        assert torch.equal(params[0].grad, expected[0].grad)


@pytest.mark.parametrize("count", [1, 10_000])
def test_one_and_ten_thousand_tensors(count, gen):
    lengths = torch.randint(0, 40, (count,), generator=gen).tolist()
    views = GuardedViews(lengths, [torch.float32, torch.bfloat16], gen)
    total, norms = ops.multi_tensor_norm(views.views, 2.0, True)
    assert_close_to(total, reference_norm(views.views, 2.0), rtol=RTOL_SUM[torch.bfloat16])
    expected = torch.stack([reference_norm([v], 2.0) for v in views.views])
    assert_close_to(norms, expected, rtol=RTOL_SUM[torch.bfloat16])
    factors = torch.rand(count, generator=gen, dtype=torch.float64) + 0.25
    ops.multi_tensor_scale_(views.views, factors)
    for i, (v, x) in enumerate(zip(views.views, views.originals())):
        assert torch.equal(v, scaled(x, float(factors[i]))), f"tensor {i}"
    views.assert_outside_untouched()


# The statistics kernels run one block of 256 threads: 300 tensors give some threads two entries.
MANY_SHAPES = [(1 + i % 5, 1 + i % 3) for i in range(300)]


def test_adagc_with_more_tensors_than_a_block_has_threads(gen):
    (model,) = twin_models(shapes=MANY_SHAPES, n=1)
    params = list(model.parameters())
    kwargs = dict(lambda_abs=1.2, lambda_rel=1.05, beta=0.9, warmup_steps=3)
    ours = fastclip.AdaGC(params, **kwargs)
    reference = AdaGCReference(len(params), **kwargs)
    for step, grads in enumerate(spiky_grads(gen, MANY_SHAPES, 8, spikes=(5,))):
        set_grads(params, grads)
        expected = [g.double() for g in grads]
        norm, coefs = reference.step(expected)
        result = ours.step()
        np.testing.assert_allclose(float(result.norm), norm, rtol=1e-5)
        np.testing.assert_allclose(result.coef.double().numpy(), coefs, rtol=1e-5, err_msg=f"step {step}")
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.grad.double(), e, rtol=1e-5, atol=1e-7)


def test_autoclip_per_tensor_with_more_tensors_than_a_block_has_threads(gen):
    """Each tensor's threshold is the percentile of its own norms so far (lag 0, whole history)."""
    (model,) = twin_models(shapes=MANY_SHAPES, n=1)
    params = list(model.parameters())
    ours = fastclip.AutoClip(params, percentile=40.0, scope="tensor")
    history = [[] for _ in params]
    for step, grads in enumerate(spiky_grads(gen, MANY_SHAPES, 6, spikes=(4,))):
        set_grads(params, grads)
        ours.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            norm = float(g.double().norm())
            history[i].append(norm)
            threshold = float(np.percentile(history[i], 40.0))
            coef = min(threshold / (norm + 1e-6), 1.0)
            torch.testing.assert_close(
                p.grad.double(), g.double() * coef, rtol=1e-5, atol=1e-7, msg=lambda m: f"step {step}, tensor {i}: {m}"
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_agc_odd_rows(dtype, gen):
    """Rows of 1, 3, 7, 33 and 1025 elements; 1-d, 2-d and 4-d tensors; rows of over 2^18 elements,
    which both backends cut into parts (a 1-d tensor and a 2-d one); the AGC equation in float64."""
    long_row = 2**18 + 1001
    shapes = [(5, 1), (4, 3), (3, 7), (9, 33), (2, 1025), (7,), (2, 3, 5, 7), (0, 3), (long_row,), (2, long_row)]
    params = make_params(shapes, dtype, generator=gen, scale=0.05)
    grads = [(torch.randn(s, generator=gen, dtype=torch.float64) * 0.05).to(dtype) for s in shapes]
    set_grads(params, grads)
    fastclip.adaptive_clip_grad_(params, clip_factor=0.05, eps=1e-3)
    for p, g in zip(params, grads):
        if p.numel() == 0:
            continue
        rows = p.detach().double().reshape(p.shape[0], -1) if p.dim() > 1 else p.detach().double().reshape(1, -1)
        grad_rows = g.double().reshape(rows.shape)
        max_norm = rows.norm(dim=1, keepdim=True).clamp(min=1e-3) * 0.05
        grad_norm = grad_rows.norm(dim=1, keepdim=True)
        factor = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp(min=1e-6), torch.ones_like(grad_norm))
        expected = (grad_rows * factor).reshape(g.shape)
        rtol = {torch.float32: 1e-5, torch.bfloat16: 2**-7, torch.float64: 1e-10}[dtype]
        torch.testing.assert_close(p.grad.double(), expected, rtol=rtol, atol=1e-9)


# ---- the kernel log (FASTCLIP_KERNEL_LOG): on the execution layer, or on a GPU -----------------

needs_kernel_log = pytest.mark.skipif(
    not ON_LAYER, reason="the native CPU kernels write no kernel log; run with FASTCLIP_CPU_KERNELS=cuda"
)


def global_functions():
    """Every __global__ function defined in csrc/cuda."""
    names = set()
    for path in [*(ROOT / "csrc" / "cuda").glob("*.cu"), *(ROOT / "csrc" / "cuda").glob("*.cuh")]:
        names |= set(
            re.findall(
                r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s+)?(\w+)\s*\(", path.read_text()
            )
        )
    return names


class KernelLog:
    def __init__(self, monkeypatch, path):
        self.path = path
        monkeypatch.setenv("FASTCLIP_KERNEL_LOG", str(path))

    def take(self):
        """The kernels launched since the last take, by name."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        self.path.write_text("")
        return [line.split(" grid=")[0] for line in lines]


@pytest.fixture
def kernel_log(monkeypatch, tmp_path):
    return KernelLog(monkeypatch, tmp_path / "kernels.log")


def base_name(kernel):
    return kernel.split("<")[0]


@needs_kernel_log
def test_kernel_log_covers_every_global_function(kernel_log, gen):
    grads = [torch.randn(33, generator=gen), torch.randn(4, 5, generator=gen).double()]
    params = make_params(grads=grads)
    for norm_type in NORM_TYPES:
        ops.multi_tensor_norm(grads, norm_type, False)
        ops.multi_tensor_norm([g.float() for g in grads], norm_type, False)
    fastclip.clip_grad_norm_(params, 0.1)
    fastclip.clip_grad_value_(params, 0.1)
    fastclip.clip_grads_with_norm_(params, 0.1, torch.tensor(3.0))
    ops.multi_tensor_scale_(grads, torch.tensor(0.5))
    fastclip.adaptive_clip_grad_(params, 0.01)
    fastclip.adaptive_clip_grad_(make_params(grads=[torch.randn(2**18 + 1, generator=gen)]), 0.01)  # a long row
    (model,) = twin_models(n=1)
    for clipper in (
        CLIPPERS["zclip"](model.parameters(), warmup_steps=1),
        CLIPPERS["autoclip"](model.parameters()),
        CLIPPERS["adagc"](model.parameters(), warmup_steps=1),
        CLIPPERS["normclip"](model.parameters(), max_norm=0.1),
        CLIPPERS["zclip"](model.parameters(), norm_parameters=model.parameters()),  # norms given
        CLIPPERS["stable-spam"](model.parameters()),
    ):
        for grads_now in spiky_grads(gen, [p.shape for p in model.parameters()], 2):
            set_grads(model.parameters(), grads_now)
            clipper.step()
    fastclip.StepSkipper(window=2).step(torch.tensor(2.0), torch.tensor(1.0))
    launched = {base_name(k) for k in kernel_log.take()}
    missing = global_functions() - launched
    assert not missing, f"never launched: {sorted(missing)}"
    assert global_functions(), "found no __global__ function in csrc/cuda"


@needs_kernel_log
def test_kernel_log_line_format(kernel_log, gen):
    ops.multi_tensor_norm([torch.randn(10, generator=gen)], 2.0, False)
    line = kernel_log.path.read_text().splitlines()[-1]
    assert re.fullmatch(r"multi_tensor_norm_kernel<kL2, float> grid=\d+ block=512( cooperative)?", line), line


# ---- clip_grad_norm_ in one launch (FASTCLIP_SINGLE_LAUNCH=0: the two-kernel path) -------------

# One tensor cut into 33 chunks at the layer's default 4 SMs: its partials are folded by a warp.
WARP_FOLDED = 32 * CHUNK + 1


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_single_launch_and_two_kernel_path_agree_bitwise(norm_type, monkeypatch, gen):
    lengths = [WARP_FOLDED, 5, 0, CHUNK + 3] + [int(n) for n in torch.randint(1, 300, (40,), generator=gen)]
    views = GuardedViews(lengths, FLOAT_DTYPES, gen, scale=0.01)
    first = [v.clone() for v in views.views]
    second = [v.clone() for v in views.views]
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "1")
    single = ops.multi_tensor_clip_grad_norm_(first, 0.5, norm_type)
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
    fallback = ops.multi_tensor_clip_grad_norm_(second, 0.5, norm_type)
    assert single.dtype == fallback.dtype and torch.equal(single, fallback), (single.item(), fallback.item())
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"tensor {i}"
    assert_close_to(single, reference_norm(views.views, norm_type), rtol=RTOL_SUM[torch.float16])


def test_single_launch_setting_is_checked(monkeypatch):
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "yes")
    if not ON_LAYER:  # the native CPU kernels have one path and never read it
        pytest.skip("the native CPU kernels take no single-launch setting")
    with pytest.raises(RuntimeError, match="FASTCLIP_SINGLE_LAUNCH must be 0 or 1, got 'yes'"):
        ops.multi_tensor_clip_grad_norm_([torch.randn(4)], 0.5, 2.0)


@needs_kernel_log
def test_clip_grad_norm_is_one_cooperative_launch(kernel_log, monkeypatch, gen):
    for count in (1, 7, 300):
        grads = [torch.randn(1 + i % 50, generator=gen) for i in range(count)]
        params = make_params(grads=grads)
        fastclip.clip_grad_norm_(params, 0.5)
        lines = kernel_log.path.read_text().splitlines()
        kernel_log.take()
        assert len(lines) == 1 and lines[0].startswith("clip_grad_norm_kernel<kL2, float>"), lines
        assert lines[0].endswith(" cooperative"), lines
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
    fastclip.clip_grad_norm_(params, 0.5)
    assert [base_name(k) for k in kernel_log.take()] == ["multi_tensor_norm_kernel", "multi_tensor_clip_by_norm_kernel"]


# ---- every clipper in one launch (FASTCLIP_SINGLE_LAUNCH=0: norm, step and scale kernels) ------

# Short warm-ups (the runs are 4 steps); the two variants: zeroing a non-finite step, the L1 norm.
ONE_LAUNCH_CLIPPERS = {
    "zclip": variant("zclip", warmup_steps=3, max_grad_norm=1.0),
    "zclip-zero": variant("zclip", warmup_steps=3, max_grad_norm=1.0, on_nonfinite="zero"),
    "normclip": variant("normclip", max_norm=0.3),
    "normclip-l1": variant("normclip", max_norm=2.0, norm_type=1.0),
    "autoclip": variant("autoclip", percentile=30.0),
    "autoclip-window": variant("autoclip-window", percentile=70.0),
    "autoclip-tensor": CLIPPERS["autoclip-tensor"],
    "adagc": variant("adagc", warmup_steps=3, beta=0.98),
}


@needs_kernel_log
@pytest.mark.parametrize("attached", [False, True], ids=["alone", "attached"])
@pytest.mark.parametrize("name", list(ONE_LAUNCH_CLIPPERS))
def test_each_clipper_step_is_one_cooperative_launch(name, attached, kernel_log, monkeypatch, gen):
    (model,) = twin_models(n=1)
    params = list(model.parameters())
    clipper = ONE_LAUNCH_CLIPPERS[name](params)
    if attached:  # a fused optimizer applies a total-norm clipper's factor: the launch scales nothing
        clipper.attach(torch.optim.AdamW(params, lr=1e-3, fused=True))
    shapes = [p.shape for p in params]
    for grads in spiky_grads(gen, shapes, 4, spikes=(3,)):
        set_grads(params, grads)
        clipper.step()
        lines = kernel_log.path.read_text().splitlines()
        kernel_log.take()
        assert len(lines) == 1 and base_name(lines[0]) == "clip_step_kernel", lines
        assert lines[0].endswith(" cooperative"), lines
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
    set_grads(params, spiky_grads(gen, shapes, 1)[0])
    clipper.step()
    scales = not (attached and clipper.folds_into_optimizer and clipper.on_nonfinite != "zero")
    expected = ["multi_tensor_norm_kernel", "step_kernel"] + ["multi_tensor_scale_kernel"] * scales
    assert [base_name(k) for k in kernel_log.take()] == expected


# Small mixed-dtype grads (one empty), so that a thousand steps through the layer stay quick.
THOUSAND_STEP_DTYPES = [torch.float32, torch.bfloat16, torch.float32, torch.float16, torch.float32]
THOUSAND_STEP_SHAPES = [(33,), (4, 5), (0,), (130,), (2, 3, 7)]


def thousand_step_grads(gen):
    """1000 steps of fresh grads with spikes, a NaN and an infinity."""
    steps = spiky_grads(gen, THOUSAND_STEP_SHAPES, 1000, spikes=(100, 400, 401, 777), dtype=torch.float64)
    steps[500][0][3] = math.nan
    steps[600][3][7] = math.inf
    return [[g.to(dtype) for g, dtype in zip(grads, THOUSAND_STEP_DTYPES)] for grads in steps]


@pytest.mark.skipif(not ON_LAYER, reason="the native CPU kernels have one path; run with FASTCLIP_CPU_KERNELS=cuda")
@pytest.mark.parametrize("name", list(ONE_LAUNCH_CLIPPERS))
def test_thousand_steps_in_one_launch_match_the_several_kernel_path_bitwise(name, monkeypatch, gen):
    grads = thousand_step_grads(gen)
    runs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", setting)
        params = make_params(THOUSAND_STEP_SHAPES, THOUSAND_STEP_DTYPES)
        clipper = ONE_LAUNCH_CLIPPERS[name](params)
        steps = []
        for step_grads in grads:
            set_grads(params, step_grads)
            result = clipper.step()
            steps.append(
                torch.cat(
                    [result._values.double(), result.coef.reshape(-1).double(), result.threshold.reshape(-1).double()]
                    + [p.grad.reshape(-1).double() for p in params]
                )
            )
        runs[setting] = (torch.stack(steps), clipper.state_dict())
    (single, single_state), (several, several_state) = runs["1"], runs["0"]
    differing = (single.view(torch.int64) != several.view(torch.int64)).any(dim=1).nonzero().flatten().tolist()
    assert not differing, f"steps {differing[:10]} differ"
    assert_same_state(single_state, several_state, name)
    assert torch.isnan(single).any() and (single[:, 0] > 1.0).any()  # the NaN and the spikes were seen


# ---- the statistics: the same bits from the native CPU kernels and the CUDA kernels ------------

# Runs every stateful clipper on fixed norms (Clipper._norms is replaced and the stats ops are
# handed the norms, so they do not depend on which norm kernel computed them), then StepSkipper on
# the same total norms and losses, and saves each step's results and the final state.
_STATS_SCRIPT = """
import sys, torch, fastclip
from fastclip.clipper import Clipper
data = torch.load(sys.argv[1])
if sys.argv[3] not in sys.path:
    sys.path.insert(0, sys.argv[3])  # tests/: the table of clippers, the parameter factory
from clippers_table import clippers
from conftest import make_params
CLIPPERS = clippers(
    ["zclip", "zclip-percentile", "autoclip", "autoclip-window", "autoclip-tensor", "adagc"],
    {
        "zclip": {"warmup_steps": 5, "max_grad_norm": 1.0},
        "zclip-percentile": {"warmup_steps": 5},
        "autoclip": {"percentile": 30.0},
        "autoclip-window": {"percentile": 70.0, "history_size": 7},
        "adagc": {"warmup_steps": 4},
    },
)
out = {}
for name, make in CLIPPERS.items():
    params = make_params([(1,)] * data["tensors"])
    clipper = make(params)
    feed = iter(data["norms"])
    Clipper._norms = lambda self, grads, device, keys, order=(), held=None: next(feed)
    Clipper._norms_in_op = lambda self, keys: False
    steps = []
    for _ in data["norms"]:
        for p, g in zip(params, data["grads"]):
            p.grad = g.clone()
        result = clipper.step()
        steps.append([result._values, result.coef, result.threshold] + [p.grad for p in params])
    out[name] = (steps, clipper.state_dict())
for reference in (False, True):  # StepSkipper on the total norms and the losses
    skipper = fastclip.StepSkipper(window=8, reference=reference)
    steps = [[skipper.step(loss, total)._values] for loss, (total, _) in zip(data["losses"], data["norms"])]
    out[f"step-skipper-{reference}"] = (steps, skipper.state_dict())
torch.save(out, sys.argv[2])
"""


def run_stats_script(tmp_path, data_path, cpu_kernels, monkeypatch):
    """In this process when it runs `cpu_kernels`, else in one subprocess that does."""
    import os
    import subprocess
    import sys

    from fastclip.clipper import Clipper

    out = tmp_path / f"{cpu_kernels}.pt"
    if fastclip.build_info()["cpu_kernels"] == cpu_kernels:
        monkeypatch.setattr(Clipper, "_norms", Clipper._norms)  # restored after the test
        monkeypatch.setattr(Clipper, "_norms_in_op", Clipper._norms_in_op)
        monkeypatch.setattr(sys, "argv", ["-c", str(data_path), str(out), TESTS])
        exec(_STATS_SCRIPT, {})
    else:
        env = dict(os.environ, FASTCLIP_CPU_KERNELS=cpu_kernels)
        subprocess.run([sys.executable, "-c", _STATS_SCRIPT, str(data_path), str(out), TESTS], env=env, check=True)
    return torch.load(out)


def same_bits(a, b):
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def assert_same_state(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}: {key}")
    elif isinstance(a, torch.Tensor):
        assert same_bits(a, b), where
    else:
        assert a == b, where


@pytest.mark.skipif(not fastclip.build_info()["cuda_on_cpu"], reason="the CPU execution layer was not built")
def test_statistics_are_bitwise_the_same_on_the_cuda_kernels(tmp_path, monkeypatch, gen):
    """The statistics steps are one shared header (csrc/common/*_step.h, skip_step.h): compiled for the GPU
    (nvcc, --fmad=false) and for the layer (g++, -ffp-contract=off, FMA available) they compute
    the same operations as the CPU op, so a run resumes bit for bit on any device."""
    tensors, steps = 300, 30
    norms = []
    for step in range(steps):
        per_tensor = torch.rand(tensors, generator=gen) * (25.0 if step in (9, 20) else 1.0) + 0.1
        if step == 14:
            per_tensor[3] = float("nan")
        norms.append((per_tensor.double().pow(2).sum().sqrt().float(), per_tensor))
    data_path = tmp_path / "norms.pt"
    losses = list(2.0 + 0.1 * torch.randn(steps, generator=gen) + 30.0 * (torch.arange(steps) == 25))
    torch.save(
        {"tensors": tensors, "norms": norms, "grads": list(torch.randn(tensors, 1, generator=gen)), "losses": losses},
        data_path,
    )
    native = run_stats_script(tmp_path, data_path, "native", monkeypatch)
    layer = run_stats_script(tmp_path, data_path, "cuda", monkeypatch)
    for name in native:
        (native_steps, native_state), (layer_steps, layer_state) = native[name], layer[name]
        for step, (a, b) in enumerate(zip(native_steps, layer_steps)):
            for i, (x, y) in enumerate(zip(a, b)):
                assert (x is None) == (y is None)
                if x is not None:
                    assert same_bits(x, y), f"{name}, step {step}, output {i}"
        assert_same_state(native_state, layer_state, name)
