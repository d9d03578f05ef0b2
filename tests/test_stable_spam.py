"""Stable-SPAM (fastclip.StableSPAM): AdaClip then AdaGN on every grad, against a float64 port of the
authors' equations (stable_spam_reference.py, which reproduces the authors' optimizer bit for bit),
step for step over hundreds of steps with spikes, missing grads and non-contiguous grads; the
reference mode's quirks (the shared counter reset, NaN poisoning); the clean mode's non-finite
steps; checkpoints; attach to AdamW; argument checks; determinism; shards across ranks."""

import copy
import io
import math
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
from conftest import DEVICES, HALF_ULP, RTOL, RTOL_NORM, RTOL_SUM, make_params
from spawned_ranks import scenario
from stable_spam_reference import StableSPAMAdamWReference, StableSPAMReference, cosine_scale

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
HALF = (F16, BF16)


# -- tolerances, all here, derived from conftest's per-dtype tables --------------------------


@dataclass(frozen=True)
class Tol:
    threshold: float  # m_max_hat: an EMA of exact maxima, kept in double, reported as float32
    norm: float  # the pre-clip total norm, as fastclip promises it (reported as float32)
    coef: float  # c/n: norms summed in another order; the factor is float32 (even for float64 grads);
    #                   half grads: the AdaClipped values may be rounded to the dtype before their norm
    grad: float  # the factor's error plus the result's rounding to the grad's dtype (twice for half
    #                   grads: AdaClip then AdaGN)
    atol: float  # fp16's subnormals (tiny elements after the AdaGN rescale) have an absolute spacing


def tolerances(dtype):
    coef = 2 * RTOL[dtype] if dtype in HALF else RTOL_SUM[F32]
    rounding = 2 * HALF_ULP[dtype] if dtype in HALF else RTOL[F32]
    return Tol(
        threshold=RTOL[F32],
        norm=RTOL_NORM.get(dtype, RTOL[F32]),
        coef=coef,
        grad=coef + rounding,
        atol=torch.finfo(dtype).smallest_normal * RTOL[dtype],
    )


# Elements within this (relative) of their AdaClip bound may be decided either way by an
# implementation that rounds the bound differently: `.clipped` is not compared on such steps.
MARGIN = 10 * RTOL[F32]
# attach: float32 params after 40 AdamW steps against the float64 reference optimizer.
PARAM_RTOL = PARAM_ATOL = 5 * RTOL_SUM[F32]


def check(actual, expected, rtol, what, atol=0.0):
    """assert_close on float64 copies, fast when it passes (this runs thousands of times)."""
    a = torch.as_tensor(actual).detach().to("cpu", F64)
    e = torch.as_tensor(expected, dtype=F64)
    if a.shape != e.shape or not bool(torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True).all()):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def bits(t):
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)


def assert_bitwise(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.equal(bits(a), bits(b)), what


def outcome_of(result):
    """A step's result as plain tensors (copies), for bitwise comparisons."""
    return [
        result.norm.clone(),
        result.coef.clone(),
        result.threshold.clone(),
        result.clipped.clone(),
        result.nonfinite.clone(),
    ]


# -- gradient streams -------------------------------------------------------------------------

# A 0-d tensor, single-element ones, a transposed (dense, non-contiguous) grad and a strided view
# with gaps (processed in place through the view).
PARITY_SHAPES = [(17, 33), (33,), (), (64, 5), (1,), (10, 7), (6, 6)]
LAYOUTS = ["plain", "plain", "plain", "plain", "plain", "transposed", "gaps"]
PARITY_STEPS, RESET_EVERY = 300, 50
# step index -> [(tensor, factor)]: single spikes, spikes in a row, every tensor at once.
SPIKES = {
    40: [(0, 50.0)],
    41: [(0, 50.0)],
    90: [(3, 1000.0)],
    150: [(i, 200.0) for i in range(7)],
    151: [(5, 300.0)],
    220: [(2, 1000.0)],
    260: [(6, 80.0)],
    261: [(6, 80.0)],
    262: [(6, 80.0)],
}
GAP_FILL = 7.0


def spam_stream(gen, steps=PARITY_STEPS, shapes=PARITY_SHAPES, spikes=SPIKES, missing=True):
    """Per step, float64 grads (None where missing): slowly drifting norms, whole-tensor spikes
    (x50 to x1000), a single-element spike, an all-zero grad, a tensor first seen at step 25,
    one missing every 7th step and one missing at a momentum-reset step."""
    out = []
    for k in range(steps):
        base = 0.1 * (1 + 0.3 * math.sin(k / 9))
        grads = [torch.randn(s, generator=gen, dtype=F64) * base for s in shapes]
        for i, factor in spikes.get(k, ()):
            if i < len(grads):
                grads[i] = grads[i] * factor
        if k == 70 and grads[0].numel() > 100:
            grads[0].view(-1)[100] *= 500.0  # one element: AdaClip rescales it alone
        if k == 130 and len(grads) > 3:
            grads[3].zero_()  # n == 0: the EMAs still move, nothing is scaled
        if missing and len(grads) > 6:
            if k < 25:
                grads[4] = None
            if k % 7 == 3:
                grads[1] = None
            if k + 1 == 2 * RESET_EVERY:
                grads[6] = None  # the reference resets only the tensors that have a grad
        out.append(grads)
    return out


def place_grads(params, grads, dtype, device, layouts=None):
    """Sets each parameter's grad to ``grads[i]`` in ``dtype`` on ``device``, laid out as
    ``layouts[i]`` says; returns (the tensors assigned, the exact float64 values they hold, the
    buffers behind the "gaps" views)."""
    layouts = layouts or ["plain"] * len(params)
    assigned, exact, bases = [], [], []
    for p, g, layout in zip(params, grads, layouts):
        if g is None:
            p.grad = None
            assigned.append(None)
            exact.append(None)
            continue
        g = g.to(dtype)
        if layout == "transposed":
            t = g.t().contiguous().to(device).t()
            assert not t.is_contiguous()
        elif layout == "gaps":
            base = torch.full((g.shape[0], 2 * g.shape[1]), GAP_FILL, dtype=dtype)
            base[:, ::2] = g
            base = base.to(device)
            bases.append(base)
            t = base[:, ::2]
        else:
            t = g.to(device).clone()
        p.grad = t
        assigned.append(t)
        exact.append(g.double())
    return assigned, exact, bases


def check_step(result, out, assigned, expected, tol, k):
    """One fastclip step against the reference's outcome and clipped grads."""
    check(result.norm, out.norm, tol.norm, f"step {k}: norm")
    assert result.coef.dtype == F32 and result.threshold.dtype == F32
    check(result.threshold, out.threshold, tol.threshold, f"step {k}: threshold")
    defined = [not math.isnan(n) for n in out.norms]  # a NaN-norm tensor is scaled by nothing: coef undefined
    coef = result.coef.detach().cpu()
    assert coef.shape == (len(out.coef),), f"step {k}: coef has shape {tuple(coef.shape)}"
    check(
        coef[torch.tensor(defined, dtype=torch.bool)],
        [c for c, d in zip(out.coef, defined) if d],
        tol.coef,
        f"step {k}: coef",
    )
    if not out.marginal:
        assert bool(result.clipped) == out.clipped, f"step {k}: clipped"
    for i, (a, e) in enumerate(zip(assigned, expected)):
        if a is not None:
            check(a, e, tol.grad, f"step {k}, tensor {i}: grad", atol=tol.atol)


# -- a. parity, step for step ---------------------------------------------------------------

CONFIGS = {
    "clean": dict(),
    # reset_every acts only through attach in the clean mode: it must change nothing here.
    # total_steps covers the whole run (past it, the clean mode's schedule is not specified).
    "clean-cosine": dict(gamma1=0.85, gamma2=0.99999, total_steps=PARITY_STEPS, eta_min=0.3, reset_every=RESET_EVERY),
    "reference": dict(reference=True),
    # total_steps ends before the run: the reference's schedule rises again past it.
    "reference-cosine-reset": dict(reference=True, total_steps=250, reset_every=RESET_EVERY),
}
# Every config in float32 and float64; the two with the schedule in float16 and bfloat16.
PARITY_CASES = [(c, d) for d in (F32, F64, BF16, F16) for c in CONFIGS if d in (F32, F64) or "cosine" in c]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config, dtype", PARITY_CASES, ids=[f"{c}-{str(d)[6:]}" for c, d in PARITY_CASES])
def test_matches_reference_step_for_step(config, dtype, device, gen):
    kwargs = CONFIGS[config]
    tol = tolerances(dtype)
    params = make_params(PARITY_SHAPES, dtype, device, gen)
    clipper = fastclip.StableSPAM(params, **kwargs)
    ref = StableSPAMReference(len(params), margin=MARGIN, **kwargs)
    clipped_steps = 0
    for k, grads in enumerate(spam_stream(gen)):
        assigned, expected, bases = place_grads(params, grads, dtype, device, LAYOUTS)
        result = clipper.step()
        out = ref.step(expected)
        assert not bool(result.nonfinite), f"step {k}"
        check_step(result, out, assigned, expected, tol, k)
        for p, a in zip(params, assigned):
            assert p.grad is a  # clipped in place
        for base in bases:
            assert bool((base[:, 1::2] == GAP_FILL).all()), f"step {k}: the gaps of a strided grad were written"
        clipped_steps += out.clipped
    assert clipped_steps > 0  # the spikes were really AdaClipped


@pytest.mark.parametrize("device", DEVICES)
def test_result_layout_and_missing_grads(device, gen):
    """coef and threshold: float32, one per parameter with a grad, in order; norm, clipped and
    nonfinite: 0-d, on the grads' device. A parameter without grad keeps its statistics: it
    continues where it left off (its counter did not advance) when its grad comes back."""
    shapes = [(4, 5), (3,), (), (6,)]
    params = make_params(shapes, F32, device, gen)
    clipper = fastclip.StableSPAM(params)
    ref = StableSPAMReference(len(params), margin=MARGIN)
    tol = tolerances(F32)
    for k in range(12):
        grads = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
        if k % 3 == 1:
            grads[1] = None
        if k < 4:
            grads[3] = None
        assigned, expected, _ = place_grads(params, grads, F32, device)
        result = clipper.step()
        present = sum(g is not None for g in grads)
        for name in ("coef", "threshold"):
            value = getattr(result, name)
            assert value.dtype == F32 and value.shape == (present,) and value.device == params[0].device, name
        for name, dtype in (("norm", None), ("clipped", torch.bool), ("nonfinite", torch.bool)):
            value = getattr(result, name)
            assert value.dim() == 0 and value.device == params[0].device, name
            assert dtype is None or value.dtype == dtype, name
        check_step(result, ref.step(expected), assigned, expected, tol, k)


def test_grad_attr(gen):
    """grad_attr="main_grad": those grads are the ones clipped; .grad is not read."""
    params = make_params([(5, 4), (7,)], F32, "cpu", gen)
    clipper = fastclip.StableSPAM(params, grad_attr="main_grad")
    ref = StableSPAMReference(len(params), margin=MARGIN)
    for k in range(6):
        grads = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
        for p, g in zip(params, grads):
            p.main_grad = g.float()
            p.grad = None
        result = clipper.step()
        expected = [g.float().double() for g in grads]
        check_step(result, ref.step(expected), [p.main_grad for p in params], expected, tolerances(F32), k)


# -- b. non-finite steps ----------------------------------------------------------------------

BAD_STEP = 20


def poisoned_stream(gen, steps=40):
    """Tensor 1 gets a NaN and tensor 3 an inf at BAD_STEP (and tensor 5 a -inf)."""
    stream = spam_stream(gen, steps, missing=False)
    bad = stream[BAD_STEP]
    bad[1].view(-1)[4] = float("nan")
    bad[3].view(-1)[9] = float("inf")
    bad[5].view(-1)[0] = float("-inf")
    return stream


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", ["reference", "reference-cosine-reset"])
def test_reference_mode_is_poisoned_like_the_reference(config, device, gen):
    """reference=True: the NaN and the infs enter the EMAs for good. On the bad step a NaN-norm
    tensor is left as it is (n > 0 is false), an inf-norm one becomes NaN (c = inf/inf); every
    later grad of those tensors is NaN; the other tensors carry on."""
    kwargs = CONFIGS[config]
    params = make_params(PARITY_SHAPES, F32, device, gen)
    clipper = fastclip.StableSPAM(params, **kwargs)
    ref = StableSPAMReference(len(params), margin=MARGIN, **kwargs)
    tol = tolerances(F32)
    poisoned = {1, 3, 5}
    for k, grads in enumerate(poisoned_stream(gen)):
        assigned, expected, _ = place_grads(params, grads, F32, device, LAYOUTS)
        before = [a.clone() for a in assigned]
        result = clipper.step()
        out = ref.step(expected)
        check_step(result, out, assigned, expected, tol, k)
        if k == BAD_STEP:
            assert bool(result.nonfinite) and out.nonfinite
            torch.testing.assert_close(assigned[1], before[1], rtol=0, atol=0, equal_nan=True)  # untouched
            assert bool(assigned[3].isnan().all()) and bool(assigned[5].isnan().all())
        if k > BAD_STEP:
            for i, a in enumerate(assigned):
                assert bool(a.isnan().all()) if i in poisoned else bool(a.isfinite().all()), f"step {k}, tensor {i}"


# "propagate" with an inf norm multiplies by 0 (the inf elements become NaN, as torch's do): left out.
NONFINITE_CASES = [("skip", "nan"), ("skip", "inf"), ("zero", "nan"), ("zero", "inf"), ("propagate", "nan")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy, bad", NONFINITE_CASES, ids=[f"{p}-{b}" for p, b in NONFINITE_CASES])
def test_clean_mode_nonfinite_step_changes_no_statistic(policy, bad, device, gen):
    """A NaN or inf in one tensor: every statistic and counter stays as it was (the later steps are
    bit for bit those of a clipper that never saw the bad step, and match the reference that
    never saw it); .nonfinite is set; the grads of the bad step follow the policy."""
    shapes = PARITY_SHAPES[:5]
    stream = spam_stream(gen, 40, shapes=shapes, missing=False)
    bad_grads = [g.clone() for g in stream[BAD_STEP]]
    bad_grads[0].view(-1)[7] = float(bad)
    params = make_params(shapes, F32, device, gen)
    twin_params = copy.deepcopy(params)
    clipper = fastclip.StableSPAM(params, on_nonfinite=policy)
    twin = fastclip.StableSPAM(twin_params, on_nonfinite=policy)
    ref = StableSPAMReference(len(params), margin=MARGIN)
    tol = tolerances(F32)
    for k, grads in enumerate(stream):
        if k == BAD_STEP:
            assigned, exact, _ = place_grads(params, bad_grads, F32, device)
            result = clipper.step()
            assert bool(result.nonfinite)
            if policy == "skip":
                for a, e in zip(assigned, exact):
                    torch.testing.assert_close(a.double().cpu(), e, rtol=0, atol=0, equal_nan=True)
            elif policy == "zero":
                assert all(int(torch.count_nonzero(a)) == 0 for a in assigned)
            else:
                assert all(bool(a.isnan().all()) for a in assigned)
        assigned, expected, _ = place_grads(params, grads, F32, device)
        place_grads(twin_params, grads, F32, device)
        result, twin_result = clipper.step(), twin.step()
        assert not bool(result.nonfinite)
        for x, y in zip(outcome_of(result), outcome_of(twin_result)):
            assert_bitwise(x, y, f"step {k}")
        for p, q in zip(params, twin_params):
            assert_bitwise(p.grad, q.grad, f"step {k}")
        check_step(result, ref.step(expected), assigned, expected, tol, k)


@pytest.mark.parametrize("device", DEVICES)
def test_error_policy_raises_and_touches_nothing(device, gen):
    """on_nonfinite="error": the step raises, naming the norm, and neither the grads nor any
    statistic change (the next steps are those of a clipper that never saw it)."""
    shapes = PARITY_SHAPES[:4]
    stream = spam_stream(gen, 16, shapes=shapes, missing=False)
    params = make_params(shapes, F32, device, gen)
    twin_params = copy.deepcopy(params)
    clipper = fastclip.StableSPAM(params, on_nonfinite="error")
    twin = fastclip.StableSPAM(twin_params, on_nonfinite="error")
    for k, grads in enumerate(stream):
        if k == 8:
            bad = [g.clone() for g in grads]
            bad[2].fill_(float("nan"))
            assigned, exact, _ = place_grads(params, bad, F32, device)
            with pytest.raises(RuntimeError, match="nan"):
                clipper.step()
            for a, e in zip(assigned, exact):
                torch.testing.assert_close(a.double().cpu(), e, rtol=0, atol=0, equal_nan=True)
        place_grads(params, grads, F32, device)
        place_grads(twin_params, grads, F32, device)
        for x, y in zip(outcome_of(clipper.step()), outcome_of(twin.step())):
            assert_bitwise(x, y, f"step {k}")
        for p, q in zip(params, twin_params):
            assert_bitwise(p.grad, q.grad, f"step {k}")


# -- c. checkpoints ----------------------------------------------------------------------------

RESUME_CONFIGS = {"clean": dict(total_steps=60), "reference": dict(reference=True, total_steps=60, reset_every=7)}


def run_steps(clipper, params, stream, device):
    out = []
    for grads in stream:
        place_grads(params, grads, F32, device, LAYOUTS)
        result = clipper.step()
        out.append(([None if p.grad is None else p.grad.clone() for p in params], outcome_of(result)))
    return out


def through_bytes(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", list(RESUME_CONFIGS))
def test_state_dict_resume_is_bitwise(config, device, gen):
    """60 steps straight == 30, save, load (into a fresh clipper, or into the same one after it
    went on), 30 more; the save crosses a momentum reset and a missing grad."""
    kwargs = RESUME_CONFIGS[config]
    stream = spam_stream(gen, 60)
    straight_params, first_params, fresh_params = (make_params(PARITY_SHAPES, F32, device) for _ in range(3))
    straight = run_steps(fastclip.StableSPAM(straight_params, **kwargs), straight_params, stream, device)
    first = fastclip.StableSPAM(first_params, **kwargs)
    run_steps(first, first_params, stream[:30], device)
    saved = through_bytes(copy.deepcopy(first.state_dict()))
    run_steps(first, first_params, stream[30:41], device)  # goes on, then goes back
    first.load_state_dict(saved)
    fresh = fastclip.StableSPAM(fresh_params, **kwargs)
    fresh.load_state_dict(saved)
    for clipper, params in ((first, first_params), (fresh, fresh_params)):
        resumed = run_steps(clipper, params, stream[30:], device)
        for k, ((grads_a, res_a), (grads_b, res_b)) in enumerate(zip(straight[30:], resumed), start=30):
            for a, b in zip(grads_a, grads_b):
                assert (a is None) == (b is None)
                if a is not None:
                    assert_bitwise(a, b, f"step {k}")
            for a, b in zip(res_a, res_b):
                assert_bitwise(a, b, f"step {k}")


BASE = dict(gamma1=0.7, gamma2=0.9, gamma3=0.999, eps=1e-8, total_steps=50, eta_min=0.5, reset_every=10)
OTHER_HYPERPARAMETERS = [
    ("gamma1", 0.8),
    ("gamma2", 0.99),
    ("gamma3", 0.99),
    ("eps", 1e-6),
    ("total_steps", 60),
    ("eta_min", 0.2),
    ("reset_every", 5),
    ("reference", True),
]


@pytest.mark.parametrize("name, value", OTHER_HYPERPARAMETERS, ids=[n for n, _ in OTHER_HYPERPARAMETERS])
def test_load_state_dict_refuses_other_hyperparameters(name, value, gen):
    params = make_params(PARITY_SHAPES[:4], F32, "cpu", gen)
    clipper = fastclip.StableSPAM(params, **BASE)
    run_steps(clipper, params, spam_stream(gen, 3, shapes=PARITY_SHAPES[:4], missing=False), "cpu")
    other = fastclip.StableSPAM(params, **dict(BASE, **{name: value}))
    with pytest.raises(ValueError, match="checkpoint") as info:
        other.load_state_dict(clipper.state_dict())
    assert name in str(info.value)


def test_load_state_dict_refuses_other_parameters(gen):
    params = make_params(PARITY_SHAPES[:5], F32, "cpu", gen)
    clipper = fastclip.StableSPAM(params)
    run_steps(clipper, params, spam_stream(gen, 3, shapes=PARITY_SHAPES[:5], missing=False), "cpu")
    fewer = fastclip.StableSPAM(params[:4])
    with pytest.raises(ValueError, match="parameter") as info:
        fewer.load_state_dict(clipper.state_dict())
    assert "4" in str(info.value)
    with pytest.raises(ValueError, match="state_dict"):
        fewer.load_state_dict({"nonsense": 1})


# -- d. attach to AdamW ------------------------------------------------------------------------

ATTACH_SHAPES = [(17, 33), (33,), (), (64, 5), (7, 3, 3, 2)]
ATTACH_STEPS = 40
OPTIMIZER_VARIANTS = {
    "foreach=False": dict(foreach=False),
    "foreach=True": dict(foreach=True),
    "fused=True": dict(fused=True),
    "capturable=True": dict(capturable=True, foreach=False),
}
# capturable needs its params on an accelerator.
ATTACH_CASES = [(d, v) for d in DEVICES for v in OPTIMIZER_VARIANTS if d != "cpu" or v != "capturable=True"]


@pytest.mark.parametrize("device, variant", ATTACH_CASES, ids=[f"{d}-{v}" for d, v in ATTACH_CASES])
@pytest.mark.parametrize("reference", [False, True], ids=["clean", "reference"])
def test_attach_adamw_matches_reference_optimizer(reference, variant, device, gen):
    """StableSPAM attached to torch's AdamW == the authors' optimizer (float64 port), with the
    momentum reset every 7 steps (clean: moments zeroed and Adam's step restarted before the
    update; reference: step-1 corrections on the old moments, zeroed after) and beta1 scaled by
    s(k); the group's betas are restored after every step."""
    lr, betas, eps, wd = 1e-2, (0.9, 0.999), 1e-8, 0.1
    kwargs = dict(
        gamma1=0.7,
        gamma2=0.9,
        gamma3=0.999,
        eps=eps,
        total_steps=ATTACH_STEPS,
        eta_min=0.5,
        reset_every=7,
        reference=reference,
    )
    params = make_params(ATTACH_SHAPES, F32, device, gen)
    ref_params = [p.detach().double().cpu() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd, **OPTIMIZER_VARIANTS[variant])
    clipper = fastclip.StableSPAM(params, **kwargs)
    assert clipper.attach(opt) is clipper
    ref = StableSPAMAdamWReference(ref_params, lr=lr, betas=betas, weight_decay=wd, **kwargs)
    beta1_seen = []
    opt.register_step_pre_hook(lambda o, args, kw: beta1_seen.append(float(o.param_groups[0]["betas"][0])))
    stream = spam_stream(gen, ATTACH_STEPS, shapes=ATTACH_SHAPES, missing=False)
    for k, grads in enumerate(stream):
        _, exact, _ = place_grads(params, grads, F32, device)
        clipper.step()
        opt.step()
        assert opt.param_groups[0]["betas"] == betas, f"step {k + 1}: betas not restored"
        assert beta1_seen[-1] == pytest.approx(betas[0] * cosine_scale(k + 1, ATTACH_STEPS, 0.5), rel=1e-12, abs=0), (
            f"step {k + 1}: beta1 during the step"
        )
        opt.zero_grad()
        ref.step(exact)
        for i, (p, r) in enumerate(zip(params, ref_params)):
            check(p, r, PARAM_RTOL, f"step {k + 1}, parameter {i}", atol=PARAM_ATOL)
        if not reference:  # Adam's own counter: restarted at every reset step
            for i, p in enumerate(params):
                assert float(opt.state[p]["step"]) == ref.adam_step[i], f"step {k + 1}, parameter {i}"


# -- e. arguments ------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (dict(gamma1=1.0), "gamma1"),
    (dict(gamma1=-0.1), "gamma1"),
    (dict(gamma1=-1), "gamma1"),
    (dict(gamma2=0.0), "gamma2"),
    (dict(gamma2=1.0), "gamma2"),
    (dict(gamma2=float("nan")), "gamma2"),
    (dict(gamma3=0.0), "gamma3"),
    (dict(gamma3=1.0), "gamma3"),
    (dict(gamma3=1.5), "gamma3"),
    (dict(eps=-1e-9), "eps"),
    (dict(total_steps=0), "total_steps"),
    (dict(total_steps=-5), "total_steps"),
    (dict(reset_every=0), "reset_every"),
    (dict(reset_every=-3), "reset_every"),
    (dict(total_steps=10, eta_min=-0.1), "eta_min"),
    (dict(total_steps=10, eta_min=1.5), "eta_min"),
    (dict(on_nonfinite="ignore"), "on_nonfinite"),
]


@pytest.mark.parametrize("kwargs, arg", BAD_ARGUMENTS, ids=[f"{a}={list(k.values())[-1]}" for k, a in BAD_ARGUMENTS])
def test_bad_arguments_are_named(kwargs, arg):
    params = make_params([(3,)], F32, "cpu")
    with pytest.raises(ValueError, match=arg):
        fastclip.StableSPAM(params, **kwargs)


@pytest.mark.parametrize(
    "kwargs, arg", [(dict(total_steps=2.5), "total_steps"), (dict(reset_every=1.5), "reset_every")]
)
def test_non_integer_counts_are_refused(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        fastclip.StableSPAM(make_params([(3,)], F32, "cpu"), **kwargs)


def test_boundary_arguments_are_accepted():
    params = make_params([(3,)], F32, "cpu")
    for kwargs in (
        dict(gamma1=0.0),
        dict(eps=0.0),
        dict(total_steps=1, eta_min=0.0),
        dict(total_steps=1, eta_min=1.0),
        dict(reset_every=1),
        dict(gamma2=0.5, gamma3=0.5),
    ):
        fastclip.StableSPAM(params, **kwargs)


# -- f. determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reference", [False, True], ids=["clean", "reference"])
def test_deterministic(reference, device, gen):
    shapes = [(300, 200), (5000,), (3, 7), ()]
    stream = spam_stream(
        gen, 20, shapes=shapes, spikes={5: [(0, 300.0)], 6: [(1, 50.0)], 12: [(2, 1000.0)]}, missing=False
    )
    runs = []
    for _ in range(2):
        params = make_params(shapes, F32, device, torch.Generator().manual_seed(0))
        clipper = fastclip.StableSPAM(params, total_steps=20, reset_every=6, reference=reference)
        runs.append(run_steps(clipper, params, stream, device))
    for k, ((grads_a, res_a), (grads_b, res_b)) in enumerate(zip(*runs)):
        for a, b in zip(grads_a + res_a, grads_b + res_b):
            assert_bitwise(a, b, f"step {k}")


# -- a GPU: no host sync -----------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_sync_on_cuda(gen):
    params = make_params(PARITY_SHAPES[:5], F32, "cuda", gen)
    clipper = fastclip.StableSPAM(params, total_steps=10, reset_every=3, reference=True)
    stream = spam_stream(gen, 4, shapes=PARITY_SHAPES[:5], missing=False)
    place_grads(params, stream[0], F32, "cuda")
    clipper.step()  # the first step creates the state
    grads = [[g.float().cuda() for g in s] for s in stream[1:]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in grads:
            for p, g in zip(params, step):
                p.grad.copy_(g)
            clipper.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# -- g. ranks ----------------------------------------------------------------------------------

DIST_SHAPES = [(9, 5), (7,), (1,), (16, 3, 2), (3,)]  # (1,) and (3,) leave a rank an empty or short shard
DIST_STEPS = 30
DIST_CONFIGS = {"clean": dict(total_steps=DIST_STEPS), "reference": dict(reference=True, total_steps=25, reset_every=9)}


def _dist_grads(step):
    g = torch.Generator().manual_seed(4321 + step)
    scale = 0.1 * (1 + 0.3 * math.sin(step / 9))
    grads = [torch.randn(s, generator=g, dtype=F64).float() * scale for s in DIST_SHAPES]
    if step in (12, 13):
        grads[0] *= 300.0
    if step == 20:
        grads[3].view(-1)[70] *= 500.0  # one element, in the second rank's shard
    if step == 24:
        grads[2] *= 1000.0
    return grads


def _check_stable_spam_across_ranks(rank, world, shard, local, kwargs):
    """Each config on this rank's pieces against the same clipper on the whole tensors (one
    process, no group); every rank ends with bitwise the same state."""
    for name, config in DIST_CONFIGS.items():
        full_params = make_params(DIST_SHAPES, generator=torch.Generator().manual_seed(0))  # the same on every rank
        shard_params = [torch.nn.Parameter(shard(p.detach(), i)) for i, p in enumerate(full_params)]
        whole = fastclip.StableSPAM(full_params, **config)
        sharded = fastclip.StableSPAM(shard_params, **config, **kwargs)
        for step in range(DIST_STEPS):
            full = _dist_grads(step)
            for i, (p, q, t) in enumerate(zip(full_params, shard_params, full)):
                p.grad = t.clone()
                q.grad = shard(t, i)
            expected, result = whole.step(), sharded.step()
            what = f"{name} step {step}"
            check(result.norm, expected.norm, RTOL_SUM[F32], f"{what}: norm")
            check(result.threshold, expected.threshold, RTOL[F32], f"{what}: threshold")
            check(result.coef, expected.coef, RTOL_SUM[F32], f"{what}: coef")
            assert bool(result.clipped) == bool(expected.clipped), f"{what}: clipped (from the whole tensors' maxima)"
            for i, (p, q) in enumerate(zip(full_params, shard_params)):
                ours, theirs = local(q.grad, p.grad, i)
                check(ours, theirs, RTOL_SUM[F32], f"{what}, tensor {i}", atol=1e-9)
        state = sharded.state_dict()
        for key, value in state["state"].items():
            gathered = [torch.empty_like(value) for _ in range(world)]
            dist.all_gather(gathered, value.contiguous())
            for other in gathered:
                assert_bitwise(other, value, f"{name}: state {key} differs across ranks")
        hosts = [None] * world
        dist.all_gather_object(hosts, state.get("host"))
        assert all(h == state.get("host") for h in hosts), f"{name}: host state differs across ranks"


@scenario(2)
def _scenario_stable_spam(rank, world):
    # Plain shards (dim-0 slices) reduced over process_group.
    def plain_shard(t, i):
        return t.tensor_split(world, dim=0)[rank].clone()

    def plain_local(g, full, i):
        return g, plain_shard(full, i)

    _check_stable_spam_across_ranks(rank, world, plain_shard, plain_local, {"process_group": dist.group.WORLD})

    # DTensor grads: sharded and replicated tensors, no group needed.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    placements = [(Shard(0),), (Replicate(),), (Shard(0),)]

    def dtensor_shard(t, i):
        return distribute_tensor(t.clone(), mesh, placements[i % len(placements)], src_data_rank=None)

    def dtensor_local(g, full, i):
        return g.to_local(), dtensor_shard(full, i).to_local()

    _check_stable_spam_across_ranks(rank, world, dtensor_shard, dtensor_local, {})


def test_shards_across_ranks_match_single_process(gloo_ranks):
    outcome = gloo_ranks.run(_scenario_stable_spam, 2)
    assert outcome.passed, outcome.report


# -- the ops themselves ----------------------------------------------------------------------


def op_args(device, gen, n=3):
    """Grads spanning CPU chunks (65,536 elements) and an empty one, state rows that make AdaClip
    rescale the large tensors, and the outputs an update writes."""
    dev = torch.device(device)
    grads = [
        torch.randn(70_000, generator=gen).to(dev),
        torch.randn(4, 3, generator=gen).to(dev),
        torch.empty(0, device=dev),
    ][:n]
    rows = torch.arange(len(grads), device=dev).flip(0)
    state = torch.rand(len(grads), fastclip._layouts.STABLE_SPAM_ROW, dtype=F64, generator=gen).to(dev)
    state[:, fastclip._layouts.StableSPAMRow.STEPS] = 10.0
    return grads, rows, state


@pytest.mark.parametrize("device", DEVICES)
def test_norms_op_against_float64(device, gen):
    grads, rows, state = op_args(device, gen)
    grads[0][12_345] = -40.0  # the largest magnitude, beyond the first chunk
    stats = torch.ops.fastclip.stable_spam_norms(grads, None, rows, state, 0.999).cpu()
    expected = [(g.double().abs().max().item() if g.numel() else 0.0, g.double().square().sum().item()) for g in grads]
    check(stats.T, expected, RTOL_SUM[F64], "max, sum of squares")
    gamma3 = 0.5  # a threshold near this step's largest magnitudes: AdaClip rescales grads[0] and grads[1]
    split = torch.ops.fastclip.stable_spam_norms(grads, stats[0].to(device), rows, state, gamma3).cpu()
    assert (split[1, :2] > 0).all()
    for i, g in enumerate(grads):
        row = state[rows[i]].cpu()
        m_max = gamma3 * row[0].item() + (1 - gamma3) * stats[0, i].item()
        threshold = m_max / (1 - gamma3 ** (row[3].item() + 1))
        g = g.double().cpu()
        high = g.abs() > threshold
        expected = (g[~high].square().sum().item(), g[high].square().sum().item()) if high.any() else (0.0, 0.0)
        check(split[:, i], expected, RTOL_SUM[F64], f"split sums of grads[{i}]")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(rows=a["rows"] * 0), "rows must be distinct"),
        (lambda a: a.update(rows=a["rows"] + 5), "rows must lie in"),
        (lambda a: a.update(state=a["state"][:, :2].contiguous()), "state must have shape"),
        (lambda a: a.update(state=a["state"].float()), "state must be"),
        (lambda a: a.update(stats=a["stats"][:1]), "stats must"),
        (lambda a: a.update(split=a["split"].float()), "split must be"),
        (lambda a: a.update(steps=a["steps"].float()), "steps must be"),
        (lambda a: a.update(coef=a["coef"][:1]), "coef must hold"),
        (lambda a: a.update(gamma3=1.0), "gamma3 must lie in"),
        (lambda a: a.update(gamma1=1.0), "gamma1 must lie in"),
        (lambda a: a.update(eta_min=2.0), "eta_min must lie in"),
        (lambda a: a.update(reset_every=-1), "reset_every must be"),
        (lambda a: a.update(policy="error"), "on_nonfinite must be"),
    ],
    ids=[
        "dup-rows",
        "rows-range",
        "state-shape",
        "state-dtype",
        "stats-shape",
        "split-dtype",
        "steps-dtype",
        "coef-size",
        "gamma3",
        "gamma1",
        "eta_min",
        "reset_every",
        "policy",
    ],
)
def test_update_op_names_bad_arguments(device, change, message, gen):
    if device != "cpu" and "rows" in message:
        pytest.skip("rows are checked where reading them costs no sync")
    grads, rows, state = op_args(device, gen, n=2)
    stats = torch.ops.fastclip.stable_spam_norms(grads, None, rows, state, 0.999)
    a = dict(
        grads=grads,
        stats=stats,
        split=torch.zeros_like(stats),
        rows=rows,
        state=state,
        steps=torch.zeros(1, dtype=F64, device=device),
        result=torch.empty(fastclip._layouts.RESULT_SLOTS, device=device),
        coef=torch.empty(2, device=device),
        threshold=torch.empty(2, device=device),
        gamma1=0.7,
        gamma3=0.999,
        eta_min=0.5,
        reset_every=3,
        policy="skip",
    )
    change(a)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fastclip.stable_spam_update_(
            a["grads"],
            a["stats"],
            a["split"],
            a["rows"],
            a["state"],
            a["steps"],
            a["result"],
            a["coef"],
            a["threshold"],
            a["gamma1"],
            0.9,
            a["gamma3"],
            1e-8,
            0,
            a["eta_min"],
            a["reset_every"],
            a["policy"],
            False,
        )


def test_norms_op_names_bad_arguments(gen):
    grads, rows, state = op_args("cpu", gen, n=2)
    with pytest.raises(RuntimeError, match="maxima must be"):
        torch.ops.fastclip.stable_spam_norms(grads, torch.zeros(2), rows, state, 0.999)
    with pytest.raises(RuntimeError, match="rows must hold 2 elements"):
        torch.ops.fastclip.stable_spam_norms(grads, None, rows[:1], state, 0.999)
    with pytest.raises(RuntimeError, match="gamma3 must lie in"):
        torch.ops.fastclip.stable_spam_norms(grads, None, rows, state, 0.0)
