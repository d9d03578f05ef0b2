"""The clippers' state: checkpoint and resume, non-finite steps, validation, attach, determinism,
and torch.compile (the statistics ops' opcheck is in test_op_contract.py)."""

import copy

import pytest
import torch
from clipper_refs import SHAPES, set_grads, spiky_grads, twin_models
from clippers_table import CLIPPERS as ALL_CLIPPERS
from clippers_table import STATELESS, clippers, variant
from conftest import make_params

import fastclip
from fastclip._layouts import RESULT_SLOTS

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

SPIKES = (12, 40, 41, 77)

# Every clipper but StableSPAM, with the table's hyperparameters (warm-ups end before SPIKES).
CLIPPERS = clippers([name for name in ALL_CLIPPERS if name != "stable-spam"])
STATEFUL = [name for name in CLIPPERS if name not in STATELESS]


def run(clipper, params, grads_per_step):
    """Steps the clipper over the grads; returns the clipped grads and results of every step."""
    out = []
    for grads in grads_per_step:
        set_grads(params, grads)
        result = clipper.step()
        out.append(([p.grad.clone() for p in params], result))
    return out


def assert_bitwise(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(
        a.view(-1).view(torch.uint8) if a.numel() else a, b.view(-1).view(torch.uint8) if b.numel() else b
    )


def assert_state_bitwise(s1, s2):
    assert s1.keys() == s2.keys()
    for k in s1:
        assert_bitwise(s1[k], s2[k])


@pytest.mark.parametrize("name", STATEFUL)
def test_state_dict_resume_is_bitwise(name, gen):
    """50 steps, save, rebuild, load, 50 more == 100 uninterrupted."""
    steps = spiky_grads(gen, SHAPES, 100, SPIKES)
    straight_model, first_model, resumed_model = twin_models(n=3)
    straight = run(CLIPPERS[name](straight_model.parameters()), list(straight_model.parameters()), steps)
    first = CLIPPERS[name](first_model.parameters())
    run(first, list(first_model.parameters()), steps[:50])
    saved = copy.deepcopy(first.state_dict())
    del first
    resumed = CLIPPERS[name](resumed_model.parameters())
    resumed.load_state_dict(saved)
    second = run(resumed, list(resumed_model.parameters()), steps[50:])
    for (grads_a, res_a), (grads_b, res_b) in zip(straight[50:], second):
        for a, b in zip(grads_a, grads_b):
            assert_bitwise(a, b)
        assert_bitwise(res_a._values, res_b._values)


@pytest.mark.parametrize("name", STATEFUL)
def test_load_state_dict_rejects_other_config(name):
    (model,) = twin_models(n=1)
    clipper = CLIPPERS[name](model.parameters())
    other = fastclip.NormClip(model.parameters(), max_norm=3.0)
    with pytest.raises(ValueError, match="checkpoint"):
        clipper.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        clipper.load_state_dict({"nonsense": 1})


@pytest.mark.parametrize("name", STATEFUL)
def test_reset_forgets_everything(name, gen):
    steps = spiky_grads(gen, SHAPES, 30, SPIKES)
    model_a, model_b = twin_models()
    a = CLIPPERS[name](model_a.parameters())
    run(a, list(model_a.parameters()), steps[:15])
    a.reset()
    fresh = CLIPPERS[name](model_b.parameters())
    for (ga, ra), (gb, rb) in zip(
        run(a, list(model_a.parameters()), steps[15:]), run(fresh, list(model_b.parameters()), steps[15:])
    ):
        assert_bitwise(ra._values, rb._values)
        for x, y in zip(ga, gb):
            assert_bitwise(x, y)


def nan_grads(shapes):
    grads = [torch.randn(s) for s in shapes]
    grads[0].view(-1)[0] = float("nan")
    return grads


@pytest.mark.parametrize("name", STATEFUL + ["normclip"])
@pytest.mark.parametrize("policy", ["skip", "zero", "propagate"])
def test_nonfinite_step_leaves_statistics_untouched(name, policy, gen):
    """A NaN step in the middle: the statistics end as if it never happened, and the grads of
    that step follow the policy."""
    steps = spiky_grads(gen, SHAPES, 40, SPIKES)
    model_a, model_b = twin_models()
    a = CLIPPERS[name](model_a.parameters())
    a.on_nonfinite = policy
    b = CLIPPERS[name](model_b.parameters())
    b.on_nonfinite = policy
    params_a = list(model_a.parameters())
    run(a, params_a, steps[:20])
    bad = nan_grads(SHAPES)
    set_grads(params_a, bad)
    result = a.step()
    assert bool(result.nonfinite)
    if policy == "skip":
        for p, g in zip(params_a, bad):
            torch.testing.assert_close(p.grad, g, equal_nan=True, rtol=0, atol=0)
    elif policy == "zero":
        assert all(torch.count_nonzero(p.grad) == 0 for p in params_a)
    else:
        assert all(torch.isnan(p.grad).all() for p in params_a)
    after_a = run(a, params_a, steps[20:])
    after_b = run(b, list(model_b.parameters()), steps)[20:]
    for (ga, ra), (gb, rb) in zip(after_a, after_b):
        assert_bitwise(ra._values, rb._values)
        for x, y in zip(ga, gb):
            assert_bitwise(x, y)
    assert_state_bitwise(a.state_dict()["state"], b.state_dict()["state"])


@pytest.mark.parametrize("name", STATEFUL)
def test_nonfinite_error_raises_and_touches_nothing(name, gen):
    (model,) = twin_models(n=1)
    params = list(model.parameters())
    clipper = CLIPPERS[name](params)
    clipper.on_nonfinite = "error"
    run(clipper, params, spiky_grads(gen, SHAPES, 12))
    before = copy.deepcopy(clipper.state_dict())
    bad = nan_grads(SHAPES)
    set_grads(params, bad)
    with pytest.raises(RuntimeError, match="nan"):
        clipper.step()
    assert_state_bitwise(before["state"], clipper.state_dict()["state"])
    for p, g in zip(params, bad):
        torch.testing.assert_close(p.grad, g, equal_nan=True, rtol=0, atol=0)


def test_zclip_reference_mode_is_poisoned_like_the_package(gen):
    import zclip

    ours_model, peer_model = twin_models()
    kwargs = dict(warmup_steps=5, max_grad_norm=None)
    ours = fastclip.ZClip(ours_model.parameters(), reference=True, **kwargs)
    peer = zclip.ZClip(**kwargs)
    steps = spiky_grads(gen, SHAPES, 30, SPIKES)
    steps[10] = nan_grads(SHAPES)
    for grads in steps:
        set_grads(ours_model.parameters(), grads)
        set_grads(peer_model.parameters(), grads)
        peer.step(peer_model)
        result = ours.step()
        for a, b in zip(ours_model.parameters(), peer_model.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=2e-5, atol=1e-7, equal_nan=True)
    assert peer.mean != peer.mean and torch.isnan(result.mean)  # both poisoned for good


def test_autoclip_reference_mode_is_poisoned(gen):
    (model,) = twin_models(n=1)
    clipper = fastclip.AutoClip(model.parameters(), reference=True, on_nonfinite="propagate")
    steps = spiky_grads(gen, SHAPES, 20)
    steps[5] = nan_grads(SHAPES)
    results = run(clipper, list(model.parameters()), steps)
    assert all(torch.isnan(r.threshold) for _, r in results[5:])
    assert all(torch.isnan(g).all() for grads, _ in results[6:] for g in grads)


BAD_HYPERPARAMETERS = [
    (fastclip.ZClip, dict(alpha=1.0), "alpha"),
    (fastclip.ZClip, dict(alpha=0.0), "alpha"),
    (fastclip.ZClip, dict(z_thresh=-1), "z_thresh"),
    (fastclip.ZClip, dict(mode="median"), "mode"),
    (fastclip.ZClip, dict(clip_option="max"), "clip_option"),
    (fastclip.ZClip, dict(max_grad_norm=0.0), "max_grad_norm"),
    (fastclip.ZClip, dict(warmup_steps=-1), "warmup_steps"),
    (fastclip.ZClip, dict(warmup_steps=2.5), "warmup_steps"),
    (fastclip.ZClip, dict(clip_factor=float("nan")), "clip_factor"),
    (fastclip.ZClip, dict(on_nonfinite="ignore"), "on_nonfinite"),
    (fastclip.AutoClip, dict(percentile=101), "percentile"),
    (fastclip.AutoClip, dict(percentile=-0.5), "percentile"),
    (fastclip.AutoClip, dict(percentile="ten"), "percentile"),
    (fastclip.AutoClip, dict(history_size=0), "history_size"),
    (fastclip.AutoClip, dict(scope="layer"), "scope"),
    (fastclip.AutoClip, dict(lag=2), "lag"),
    (fastclip.AdaGC, dict(beta=1.5), "beta"),
    (fastclip.AdaGC, dict(lambda_rel=0), "lambda_rel"),
    (fastclip.AdaGC, dict(lambda_abs=float("inf")), "lambda_abs"),
    (fastclip.AdaGC, dict(eps=-1e-6), "eps"),
    (fastclip.AGC, dict(clip_factor=0), "clip_factor"),
    (fastclip.NormClip, dict(max_norm=-1), "max_norm"),
]


@pytest.mark.parametrize("cls, kwargs, arg", BAD_HYPERPARAMETERS, ids=lambda x: str(x))
def test_hyperparameters_are_validated(cls, kwargs, arg):
    (model,) = twin_models(n=1)
    if cls is fastclip.NormClip:
        kwargs = dict(kwargs)
        with pytest.raises((ValueError, TypeError), match=arg):
            cls(model.parameters(), **kwargs)
        return
    with pytest.raises((ValueError, TypeError), match=arg):
        cls(model.parameters(), **kwargs)


@pytest.mark.parametrize(
    "params, match", [([], "empty"), ([1.0], "parameters\\[0\\]"), (None, "iterable"), ([{"lr": 1}], "params")]
)
def test_parameters_are_validated(params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastclip.ZClip(params)


def test_param_groups_and_no_grads():
    (model,) = twin_models(n=1)
    params = list(model.parameters())
    clipper = fastclip.ZClip([{"params": params[:2], "lr": 0.1}, {"params": params[2:]}])
    result = clipper.step()  # no grads yet: nothing to do, nothing recorded
    assert float(result.norm) == 0 and float(result.coef) == 1
    assert clipper.state_dict()["state"] == {}


def make_opt_pair(fused_model, plain_model, **kw):
    return (
        torch.optim.AdamW(fused_model.parameters(), lr=1e-2, fused=True, **kw),
        torch.optim.AdamW(plain_model.parameters(), lr=1e-2, fused=True, **kw),
    )


@pytest.mark.parametrize("name", ["zclip", "autoclip", "normclip", "adagc"])
def test_attach_fused_adamw_matches_clip_then_step(name, gen):
    attached_model, plain_model = twin_models()
    attached_opt, plain_opt = make_opt_pair(attached_model, plain_model)
    attached = CLIPPERS[name](attached_model.parameters()).attach(attached_opt)
    plain = CLIPPERS[name](plain_model.parameters())
    for step, grads in enumerate(spiky_grads(gen, SHAPES, 40, SPIKES)):
        set_grads(attached_model.parameters(), grads)
        set_grads(plain_model.parameters(), grads)
        attached.step()
        plain.step()
        if attached.folds_into_optimizer:  # the grads themselves are left as they were
            for p, g in zip(attached_model.parameters(), grads):
                assert torch.equal(p.grad, g)
        attached_opt.step()
        plain_opt.step()
        for a, b in zip(attached_model.parameters(), plain_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")
    assert not hasattr(attached_opt, "grad_scale") and not hasattr(attached_opt, "found_inf")


@pytest.mark.parametrize("name", ["zclip", "adagc", "autoclip-tensor"])
def test_attach_skips_nonfinite_step(name, gen):
    """Folded (ZClip) or not (per-tensor clippers), a non-finite step reaches the optimizer as found_inf."""
    (model,) = twin_models(n=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    clipper = CLIPPERS[name](model.parameters()).attach(opt)
    for grads in spiky_grads(gen, SHAPES, 5):
        set_grads(model.parameters(), grads)
        clipper.step()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    steps_before = [opt.state[p]["step"].clone() for p in model.parameters()]
    set_grads(model.parameters(), nan_grads(SHAPES))
    clipper.step()
    opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    for p, s in zip(model.parameters(), steps_before):
        assert torch.equal(opt.state[p]["step"], s)


def test_attach_composes_with_grad_scaler(gen):
    attached_model, plain_model = twin_models()
    attached_opt, plain_opt = make_opt_pair(attached_model, plain_model)
    attached = fastclip.NormClip(attached_model.parameters(), max_norm=0.5).attach(attached_opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(SHAPES[0][1], generator=gen)
    for step in range(10):
        # A loss through the first weight: the scaler's scale reaches the grads and must be undone.
        for model in (attached_model, plain_model):
            model.zero_grad()
        loss_a = (attached_model.weights[0] @ x).pow(2).sum() + sum(p.sum() for p in attached_model.parameters())
        scaler.scale(loss_a).backward()
        scaler.unscale_(attached_opt)
        attached.step()
        scaler.step(attached_opt)
        scaler.update()
        loss_b = (plain_model.weights[0] @ x).pow(2).sum() + sum(p.sum() for p in plain_model.parameters())
        loss_b.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 0.5)
        plain_opt.step()
        for a, b in zip(attached_model.parameters(), plain_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")


def test_attach_requires_single_attachment():
    (model,) = twin_models(n=1)
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    clipper = fastclip.ZClip(model.parameters()).attach(opt)
    with pytest.raises(RuntimeError, match="already attached"):
        clipper.attach(opt)
    clipper.detach()
    clipper.attach(opt)


@pytest.mark.parametrize("name", list(CLIPPERS))
def test_clippers_are_deterministic(name, gen):
    shapes = [(300, 200), (5000,), (3, 7)]
    steps = spiky_grads(gen, shapes, 30, SPIKES)
    results = []
    for _ in range(2):
        params = make_params(shapes, generator=torch.Generator().manual_seed(0))
        results.append(run(CLIPPERS[name](params), params, steps))
    for (ga, ra), (gb, rb) in zip(*results):
        for a, b in zip(ga, gb):
            assert_bitwise(a, b)
        assert_bitwise(ra._values, rb._values)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_grads_keep_float32_statistics(dtype, gen):
    (model,) = twin_models(dtype=dtype, n=1)
    clipper = fastclip.ZClip(model.parameters(), warmup_steps=5)
    run(clipper, list(model.parameters()), spiky_grads(gen, SHAPES, 20, (15,), dtype=dtype))
    assert clipper.state_dict()["state"]["stats"].dtype == torch.float64
    assert all(p.grad.dtype == dtype and torch.isfinite(p.grad).all() for p in model.parameters())


def test_statistics_ops_name_bad_arguments():
    norm = torch.tensor(1.0)
    result = torch.empty(RESULT_SLOTS)
    f64 = torch.float64

    def zclip(norm, state, on_nonfinite="skip"):
        options = (0.9, 2.5, 1.0, 1e-6, 3, "zscore", "mean", 1.0, False, on_nonfinite, False)
        fastclip._ops.zclip_update_(norm, state, result, *options)

    def adagc(norms, rows, **grads):
        n = len(rows)
        state = (torch.zeros(n, 2, dtype=f64), torch.zeros(1, dtype=f64), result, torch.empty(n), torch.empty(n))
        fastclip._ops.adagc_update_(norm, norms, rows, *state, 1.0, 1.05, 0.98, 2, 1e-6, "skip", False, **grads)

    with pytest.raises(RuntimeError, match="state must hold 7 elements"):
        zclip(norm, torch.zeros(5, dtype=f64))
    with pytest.raises(RuntimeError, match="state must be Double"):
        zclip(norm, torch.zeros(7))
    with pytest.raises(RuntimeError, match="on_nonfinite"):
        zclip(norm, torch.zeros(7, dtype=f64), "error")
    with pytest.raises(RuntimeError, match="rows must lie in"):
        adagc(torch.ones(2), torch.tensor([0, 5]))
    with pytest.raises(RuntimeError, match="rows must be distinct"):  # two entries would update one row at once
        adagc(torch.ones(2), torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="grads must not be empty when norm is None"):
        zclip(None, torch.zeros(7, dtype=f64))
    with pytest.raises(RuntimeError, match="total_norm and norms must both be given or both be None"):
        adagc(None, torch.tensor([0]), grads=[torch.ones(3)])
    with pytest.raises(RuntimeError, match="grads has 1 tensors but there are 2 norms"):
        adagc(torch.ones(2), torch.tensor([0, 1]), grads=[torch.ones(3)])
    with pytest.raises(RuntimeError, match="max_norm must be"):
        fastclip._ops.normclip_update_(None, result, -1.0, 2.0, "skip", grads=[torch.ones(3)])
    with pytest.raises(RuntimeError, match=r"grads\[1\] has shape"):
        fastclip.ops.agc_clip_([torch.ones(3), torch.ones(4)], [torch.ones(3), torch.ones(5)], 0.01, 1e-3)


COMPILED = dict(
    CLIPPERS,
    autoclip=variant("autoclip", reserve_steps=100),
    **{"autoclip-tensor": variant("autoclip-tensor", reserve_steps=15)},
)


@pytest.mark.parametrize("name", list(COMPILED))
def test_clipper_under_torch_compile(name, gen):
    """step() traced whole (fullgraph): same norms and grads as eager, no recompile per step."""
    torch._dynamo.reset()
    model, twin = twin_models()
    clipper = COMPILED[name](model.parameters())
    eager = COMPILED[name](twin.parameters())

    @torch.compile(fullgraph=True, backend="aot_eager")
    def clip():
        return clipper.step().norm

    with torch._dynamo.config.patch(recompile_limit=3):  # the first step creates the state: one recompile
        for step, grads in enumerate(spiky_grads(gen, SHAPES, 15, (12,))):
            set_grads(model.parameters(), grads)
            set_grads(twin.parameters(), grads)
            torch.testing.assert_close(clip(), eager.step().norm, rtol=0, atol=0, equal_nan=True)
            for a, b in zip(model.parameters(), twin.parameters()):
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=lambda m: f"step {step}: {m}")


def test_whole_history_under_compile_needs_reserve_steps(gen):
    torch._dynamo.reset()
    (model,) = twin_models(n=1)
    clipper = fastclip.AutoClip(model.parameters())
    set_grads(model.parameters(), spiky_grads(gen, SHAPES, 1)[0])
    with pytest.raises(Exception, match="reserve_steps"):
        torch.compile(lambda: clipper.step().norm, fullgraph=True, backend="aot_eager")()
