"""fastclip.StepSkipper and its op, skip_step_update_: the same decisions as OLMo-core's own
``SkipStepOptimizer.get_step_factor`` (reference mode, NaN included) and as a float64 port of it with
non-finite values kept out of the history (default mode); warm-up, one-sidedness, checkpoints,
``attach`` to a fused optimizer alone and beside a clipper and GradScaler, errors (the op's opcheck is in
test_op_contract.py)."""

import importlib.metadata
import importlib.util
import io
import math
import sys
import types
import warnings

import pytest
import torch
from clipper_refs import set_grads, spiky_grads, twin_models
from conftest import DEVICES, make_params

import fastclip
from fastclip._layouts import SKIP_STEP_COUNTERS, SKIP_STEP_RESULT_SLOTS, SkipStepCounter, SkipStepResult

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

ops = torch.ops.fastclip
DTYPES = [torch.float32, torch.float64]
NAN, INF = math.nan, math.inf


# ---- the references ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def olmo_skip_step_optimizer():
    """OLMo-core's own SkipStepOptimizer class (ai2-olmo-core, installed with --no-deps: the
    README's test command). Its module is loaded from the installed package by itself: importing
    the package runs olmo_core/__init__.py and olmo_core.utils, which pull in cloud-storage
    clients; the module needs only get_default_device and move_to_device from olmo_core.utils,
    stood in for while it loads."""
    try:
        dist = importlib.metadata.distribution("ai2-olmo-core")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ai2-olmo-core is not installed (pip install --no-deps ai2-olmo-core==3.0.0)")
    path = dist.locate_file("olmo_core/optim/skip_step_optimizer.py")
    utils = types.ModuleType("olmo_core.utils")
    utils.get_default_device = lambda: torch.device("cpu")
    utils.move_to_device = lambda t, device: t.to(device)
    package = types.ModuleType("olmo_core")
    package.__path__ = []
    package.utils = utils
    saved = {name: sys.modules.get(name) for name in ("olmo_core", "olmo_core.utils")}
    sys.modules.update({"olmo_core": package, "olmo_core.utils": utils})
    try:
        spec = importlib.util.spec_from_file_location("_olmo_core_skip_step_optimizer", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return module.SkipStepOptimizer


def olmo_decisions(cls, losses, norms, window, sigma):
    """Skip (True) or keep per step, from OLMo-core's get_step_factor as its trainer drives it:
    latest_loss and latest_grad_norm set, then the factor read."""
    optimizer = cls(make_params([(1,)]), {}, rolling_interval_length=window, sigma_factor=sigma)
    out = []
    with warnings.catch_warnings():  # the std of one value: torch warns, the NaN skips the step
        warnings.filterwarnings("ignore", message="std_mean\\(\\): degrees of freedom")
        for loss, norm in zip(losses, norms):
            optimizer.latest_loss = loss
            optimizer.latest_grad_norm = norm
            out.append(float(optimizer.get_step_factor()) == 0.0)
    return out


def port_decisions(losses, norms, window, sigma, reference):
    """A float64 port of get_step_factor (REFERENCE.md's rule) on lists kept window + 1 long.
    Default mode (reference=False): a non-finite value skips its step and enters no list, and a
    decision with fewer than two earlier values keeps. Also returns each step's statistics of the
    earlier values (loss mean and std, norm mean and std), NaN where there are too few."""
    kept_losses, kept_norms, out, stats = [], [], [], []
    for loss, norm in zip(losses, norms):
        loss, norm = float(loss), float(norm)
        finite = math.isfinite(loss) and math.isfinite(norm)
        if not reference and not finite:
            out.append(True)
            stats.append(moments(kept_losses[-window:]) + moments(kept_norms[-window:]))
            continue
        kept_losses = (kept_losses + [loss])[-(window + 1) :]
        kept_norms = (kept_norms + [norm])[-(window + 1) :]
        stats.append(moments(kept_losses[:-1]) + moments(kept_norms[:-1]))
        if len(kept_losses) < max(2, window // 2) or (not reference and len(kept_losses) < 3):
            out.append(False)
            continue
        keep = True
        for values in (kept_losses, kept_norms):
            std, mean = torch.std_mean(torch.tensor(values[:-1], dtype=torch.float64))
            keep = keep and bool((values[-1] - mean) <= sigma * std)
        out.append(not keep)
    return out, stats


def moments(values):
    if not values:
        return [NAN, NAN]
    t = torch.tensor(values, dtype=torch.float64)
    return [float(t.mean()), float(t.std()) if len(values) > 1 else NAN]


def sequence(gen, steps, dtype, nonfinite=()):
    """Losses around 2.3 drifting down and norms around 1 (both noisy), with spikes up in each and
    drops (which never skip), and non-finite values at the given steps: {step: (loss, norm)}."""
    noise = torch.randn(2, steps, generator=gen, dtype=torch.float64)
    t = torch.arange(steps, dtype=torch.float64)
    losses = 2.3 - 0.3 * t / steps + 0.05 * noise[0]
    norms = 1.0 + 0.1 * noise[1] + 0.2 * torch.sin(t / 20)
    picks = torch.randperm(steps - 10, generator=gen)[: steps // 10] + 10
    for i, step in enumerate(picks.tolist()):
        kind = i % 5
        factor = 1.0 + 9.0 * float(torch.rand((), generator=gen, dtype=torch.float64))
        if kind == 0:
            losses[step] *= 1.0 + 0.5 * factor
        elif kind == 1:
            norms[step] *= 5.0 * factor
        elif kind == 2:
            losses[step] *= 0.1  # a drop: kept
        elif kind == 3:
            norms[step] *= 0.01
        else:
            losses[step] *= 2.0
            norms[step] *= 20.0
    for step, (loss, norm) in dict(nonfinite).items():
        losses[step], norms[step] = loss, norm
    return losses.to(dtype), norms.to(dtype)


def run_skipper(skipper, losses, norms, device):
    """Per step (skip, result values): every value handed over as a 0-d device tensor."""
    losses, norms = losses.to(device), norms.to(device)
    results = [skipper.step(losses[i], norms[i]) for i in range(len(losses))]
    values = torch.stack([r._values for r in results]).cpu()
    return (values[:, SkipStepResult.SKIPPED] != 0).tolist(), values


# ---- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [16, 128])
def test_reference_mode_matches_olmo_core(olmo_skip_step_optimizer, device, dtype, window, gen):
    nonfinite = {250: (2.0, NAN)} if window == 16 else {}  # the NaN leaves the window of 16 before the end
    losses, norms = sequence(gen, 400, dtype, nonfinite)
    expected = olmo_decisions(olmo_skip_step_optimizer, list(losses), list(norms), window, 6.0)
    got, _ = run_skipper(fastclip.StepSkipper(window=window, reference=True), losses, norms, device)
    assert got == expected
    warm = max(2, window // 2) - 1
    assert not any(got[:warm]) and any(got[warm:]) and not all(got[warm:])
    if nonfinite:  # OLMo-core's poisoning: the NaN skips every step until it leaves the window
        assert all(got[250 : 250 + window + 1]) and not all(got[250 + window + 1 :])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_mode_matches_olmo_core_on_nan_and_inf(olmo_skip_step_optimizer, device, dtype, gen):
    """NaN and infinities, during the warm-up (kept there) and after it; sigma other than 6."""
    nonfinite = {3: (NAN, 1.0), 40: (INF, 1.0), 70: (-INF, 1.0), 100: (2.0, INF), 130: (NAN, NAN)}
    losses, norms = sequence(gen, 200, dtype, nonfinite)
    for window, sigma in ((16, 3.0), (9, 6.0), (4, 6.0), (1, 2.5)):
        expected = olmo_decisions(olmo_skip_step_optimizer, list(losses), list(norms), window, sigma)
        got, _ = run_skipper(fastclip.StepSkipper(window=window, sigma=sigma, reference=True), losses, norms, device)
        assert got == expected, (window, sigma)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [16, 128])
def test_default_mode_keeps_nonfinite_values_out_of_the_history(device, dtype, window, gen):
    nonfinite = {60: (NAN, 1.0), 61: (2.0, INF), 150: (-INF, 1.0), 151: (NAN, NAN), 300: (2.0, NAN)}
    losses, norms = sequence(gen, 400, dtype, nonfinite)
    skipper = fastclip.StepSkipper(window=window)
    got, values = run_skipper(skipper, losses, norms, device)
    expected, stats = port_decisions(losses.tolist(), norms.tolist(), window, 6.0, reference=False)
    assert got == expected
    assert all(got[s] for s in nonfinite) and (
        values[:, SkipStepResult.NONFINITE] != 0
    ).nonzero().flatten().tolist() == sorted(nonfinite)
    after = [s + 1 for s in nonfinite if s + 1 not in nonfinite]
    assert not all(got[s] for s in after)  # no poisoning: the next steps are decided on finite values
    # The statistics each step was compared with, as torch.std_mean computes them in float64.
    torch.testing.assert_close(
        values[:, SkipStepResult.LOSS_MEAN :].double(),
        torch.tensor(stats, dtype=torch.float64),
        rtol=1e-6,
        atol=0.0,
        equal_nan=True,
    )
    counters = skipper.state_dict()["state"]["counters"]
    assert counters[SkipStepCounter.STEPS] == 400 and counters[SkipStepCounter.SKIPPED] == sum(got)
    assert counters[SkipStepCounter.FILLED] == window


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reference", [False, True], ids=["default", "reference"])
@pytest.mark.parametrize("window", [1, 2, 4, 5, 6, 16, 17])
def test_warmup_length(device, reference, window):
    """Each value ten times the last: every decided step is an outlier. OLMo-core decides from
    max(2, window // 2) values on (this one included), skipping where there is one earlier value
    (its std is NaN); default mode needs two earlier values, so a window of 1 never skips."""
    values = torch.tensor([10.0**k for k in range(24)], dtype=torch.float64)
    got, _ = run_skipper(fastclip.StepSkipper(window=window, reference=reference), values, values.clone(), device)
    first = max(2, window // 2) - 1
    if not reference:
        first = max(first, 2) if window >= 2 else 24
    assert got == [False] * first + [True] * (24 - first)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sided(device, dtype, gen):
    """Far below the mean never skips; far above skips, in the loss or in the norm alone."""
    base_losses, base_norms = 2.0 + 0.01 * torch.randn(2, 40, generator=gen, dtype=torch.float64)
    for loss, norm, skip in (
        (0.001, 1.0, False),
        (2.0, 1e-6, False),
        (-50.0, -50.0, False),
        (5.0, 1.0, True),
        (2.0, 40.0, True),
    ):
        losses = torch.cat([base_losses, torch.tensor([loss], dtype=torch.float64)]).to(dtype)
        norms = torch.cat([base_norms - 1.0, torch.tensor([norm], dtype=torch.float64)]).to(dtype)
        got, values = run_skipper(fastclip.StepSkipper(window=32), losses, norms, device)
        assert not any(got[:40]) and got[40] == skip, (loss, norm)
        assert values[40, SkipStepResult.FACTOR] == (0.0 if skip else 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_inputs_of_any_float_dtype_shape_and_python_numbers(dtype, gen):
    losses, norms = sequence(gen, 60, torch.float64)
    ref, _ = run_skipper(fastclip.StepSkipper(window=8), losses.to(dtype), norms.to(dtype), "cpu")
    skipper = fastclip.StepSkipper(window=8)
    got = [
        bool(skipper.step(float(loss), norm.reshape(1)).skip) for loss, norm in zip(losses.to(dtype), norms.to(dtype))
    ]
    assert got == ref
    result = fastclip.StepSkipper().step(2.5, 1)
    assert result.skip.dtype == torch.bool and result.skip.shape == () and result.factor.dtype == torch.float32
    assert float(result.factor) == 1.0 and not bool(result.skip) and not bool(result.nonfinite)


def test_loss_that_requires_grad_and_steps_counters(gen):
    model = torch.nn.Linear(3, 1)
    skipper = fastclip.StepSkipper(window=4)
    assert int(skipper.steps) == 0 and int(skipper.skipped_steps) == 0
    for _ in range(5):
        loss = model(torch.randn(2, 3, generator=gen)).square().mean()
        skipper.step(loss, torch.tensor(1.0))
    skipper.step(torch.tensor(NAN), 1.0)
    assert int(skipper.steps) == 6 and int(skipper.skipped_steps) >= 1


# ---- state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reference", [False, True], ids=["default", "reference"])
def test_state_dict_resumes_exactly(device, reference, gen):
    losses, norms = sequence(gen, 300, torch.float32, {100: (NAN, 1.0), 200: (2.0, INF)})
    whole = fastclip.StepSkipper(window=32, reference=reference)
    expected, expected_values = run_skipper(whole, losses, norms, device)
    for cut in (5, 31, 150):
        first = fastclip.StepSkipper(window=32, reference=reference)
        got_a, values_a = run_skipper(first, losses[:cut], norms[:cut], device)
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        second = fastclip.StepSkipper(window=32, reference=reference)
        second.load_state_dict(torch.load(buffer))
        got_b, values_b = run_skipper(second, losses[cut:], norms[cut:], device)
        assert got_a + got_b == expected
        assert torch.equal(torch.cat([values_a, values_b]).view(torch.int32), expected_values.view(torch.int32))
    assert all(
        torch.equal(a.cpu(), b.cpu())
        for a, b in zip(whole.state_dict()["state"].values(), second.state_dict()["state"].values())
    )


def test_state_dict_and_reset_edge_cases(gen):
    skipper = fastclip.StepSkipper(window=8)
    assert skipper.state_dict() == {"config": {"window": 8, "sigma": 6.0, "reference": False}, "state": {}}
    fresh = fastclip.StepSkipper(window=8)
    fresh.load_state_dict(skipper.state_dict())  # an empty checkpoint: still fresh
    losses, norms = sequence(gen, 40, torch.float64)
    first, _ = run_skipper(skipper, losses, norms, "cpu")
    skipper.reset()
    assert skipper.state_dict()["state"] == {}
    again, _ = run_skipper(skipper, losses, norms, "cpu")
    assert again == first
    with pytest.raises(ValueError, match="window"):
        fastclip.StepSkipper(window=16).load_state_dict(skipper.state_dict())
    with pytest.raises(ValueError, match="reference"):
        fastclip.StepSkipper(window=8, reference=True).load_state_dict(skipper.state_dict())
    with pytest.raises(ValueError, match="'config' and 'state'"):
        fastclip.StepSkipper(window=8).load_state_dict({"state": {}})
    bad = skipper.state_dict()
    bad["state"]["counters"][SkipStepCounter.HEAD] = 8
    with pytest.raises(ValueError, match="out of range"):
        fastclip.StepSkipper(window=8).load_state_dict(bad)
    bad = skipper.state_dict()
    bad["state"]["history"] = bad["state"]["history"].float()
    with pytest.raises(ValueError, match="float64 history"):
        fastclip.StepSkipper(window=8).load_state_dict(bad)


# ---- attach ------------------------------------------------------------------------------------


def snapshot(model, optimizer):
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    return params, state


def assert_same(a, b):
    (params_a, state_a), (params_b, state_b) = a, b
    assert all(torch.equal(x, y) for x, y in zip(params_a, params_b))
    for sa, sb in zip(state_a, state_b):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def no_leftover_attributes(optimizer):
    return not hasattr(optimizer, "grad_scale") and not hasattr(optimizer, "found_inf")


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, torch.optim.SGD])
def test_attach_skips_the_fused_step_on_the_device(optimizer_class, gen):
    """A skipped step leaves params and optimizer state bitwise as they were; a kept one updates them."""
    (model,) = twin_models(n=1)
    kwargs = {"momentum": 0.9} if optimizer_class is torch.optim.SGD else {}
    optimizer = optimizer_class(model.parameters(), lr=1e-2, fused=True, **kwargs)
    skipper = fastclip.StepSkipper(window=8).attach(optimizer)
    grads = spiky_grads(gen, [p.shape for p in model.parameters()], 30, spikes={12, 25})
    losses, norms, skipped = [], [], []
    for step, step_grads in enumerate(grads):
        set_grads(model.parameters(), step_grads)
        losses.append(2.0 + 0.01 * float(torch.randn((), generator=gen)) + (50.0 if step == 20 else 0.0))
        norms.append(torch.stack([g.double().norm() for g in step_grads]).norm())
        result = skipper.step(torch.tensor(losses[-1]), norms[-1])
        before = snapshot(model, optimizer)
        optimizer.step()
        skipped.append(bool(result.skip))
        if skipped[-1]:
            assert_same(snapshot(model, optimizer), before)
        else:
            after = snapshot(model, optimizer)
            assert all(not torch.equal(a, b) for a, b in zip(before[0], after[0]))
        assert no_leftover_attributes(optimizer)
    assert skipped == port_decisions(losses, [float(n) for n in norms], 8, 6.0, reference=False)[0]
    assert skipped[12] and skipped[20] and skipped[25]  # the two norm spikes and the loss spike


def test_attach_refuses_an_optimizer_that_cannot_read_found_inf():
    (model,) = twin_models(n=1)
    with pytest.raises(ValueError, match="fused=True"):
        fastclip.StepSkipper().attach(torch.optim.AdamW(model.parameters()))
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    skipper = fastclip.StepSkipper().attach(optimizer)
    with pytest.raises(RuntimeError, match="already attached"):
        skipper.attach(optimizer)
    skipper.detach()
    skipper.attach(optimizer)


def clipper_and_skipper_run(gen, order, spikes, scaler=False):
    """A ZClip and a StepSkipper attached (in `order`) to one fused AdamW, against a twin whose
    ZClip clips the grads itself and whose step is skipped on the host."""
    attached_model, plain_model = twin_models()
    attached_opt = torch.optim.AdamW(attached_model.parameters(), lr=1e-2, fused=True)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, fused=True)
    clipper = fastclip.ZClip(attached_model.parameters(), warmup_steps=5)
    skipper = fastclip.StepSkipper(window=8)
    for thing in (clipper, skipper) if order == "clipper first" else (skipper, clipper):
        thing.attach(attached_opt)
    plain_clipper = fastclip.ZClip(plain_model.parameters(), warmup_steps=5)
    plain_skipper = fastclip.StepSkipper(window=8)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaler else None
    if grad_scaler is not None:
        grad_scaler.scale(torch.tensor(1.0))  # creates its scale, as scaling the first loss would
    shapes = [p.shape for p in attached_model.parameters()]
    decisions = []
    for step, grads in enumerate(spiky_grads(gen, shapes, 30, spikes)):
        loss = torch.tensor(2.0 + 0.01 * math.sin(step) + (30.0 if step == 22 else 0.0))
        if step == 26:
            grads[0] = grads[0].clone().fill_(NAN)
        if grad_scaler is not None:  # the scaler's own scale on the grads, undone by unscale_
            set_grads(attached_model.parameters(), [g * grad_scaler.get_scale() for g in grads])
            grad_scaler.unscale_(attached_opt)
        else:
            set_grads(attached_model.parameters(), grads)
        skipper.step(loss, clipper.step().norm)
        if grad_scaler is not None:
            grad_scaler.step(attached_opt)
            grad_scaler.update()
        else:
            attached_opt.step()
        assert no_leftover_attributes(attached_opt), step
        set_grads(plain_model.parameters(), grads)
        result = plain_skipper.step(loss, plain_clipper.step().norm)
        decisions.append(bool(result.skip))
        if not decisions[-1]:
            plain_opt.step()
        for a, b in zip(attached_model.parameters(), plain_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"step {step}: {m}")
    return decisions


@pytest.mark.parametrize("order", ["clipper first", "skipper first"])
def test_attached_beside_a_clipper(order, gen):
    decisions = clipper_and_skipper_run(gen, order, spikes={15})
    assert decisions[22] and decisions[26] and not all(decisions[8:])


@pytest.mark.parametrize("order", ["clipper first", "skipper first"])
def test_attached_beside_a_clipper_and_grad_scaler(order, gen):
    decisions = clipper_and_skipper_run(gen, order, spikes={15}, scaler=True)
    assert decisions[22] and decisions[26]


def test_feed_restores_attributes_set_before_the_step(gen):
    """What was on the optimizer before its step (GradScaler's, or anyone's) is there after it,
    with one or two sources attached in either order; both sources' values reach the step."""
    (model,) = twin_models(n=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    set_grads(model.parameters(), spiky_grads(gen, [p.shape for p in model.parameters()], 1)[0])
    clipper = fastclip.NormClip(model.parameters(), max_norm=1e-3).attach(optimizer)
    skipper = fastclip.StepSkipper(window=4).attach(optimizer)
    seen = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append((getattr(opt, "grad_scale", None), getattr(opt, "found_inf", None)))
    )
    mine_scale, mine_inf = torch.tensor(2.0), torch.tensor(0.0)
    optimizer.grad_scale, optimizer.found_inf = mine_scale, mine_inf
    result = clipper.step()
    skipper.step(torch.tensor(1.0), result.norm)
    optimizer.step()
    assert optimizer.grad_scale is mine_scale and optimizer.found_inf is mine_inf
    grad_scale, found_inf = seen[-1]
    assert torch.equal(grad_scale, mine_scale * result._values[fastclip._layouts.ResultSlot.GRAD_SCALE])
    assert float(found_inf) == 0.0
    clipper.detach()
    skipper.detach()
    del optimizer.grad_scale, optimizer.found_inf
    optimizer.step()
    assert seen[-1] == (None, None) and no_leftover_attributes(optimizer)
    assert len(optimizer._optimizer_step_pre_hooks) == 1 and not optimizer._optimizer_step_post_hooks


def test_a_step_that_raised_leaves_nothing_behind(gen):
    """torch runs no post hook after a step that raised: the next step must not take that step's
    found_inf for the optimizer's own (every later step would be skipped)."""
    (param,) = make_params([(8,)], generator=gen)
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=True)
    skipper = fastclip.StepSkipper(window=4).attach(optimizer)

    def fail(opt, args, kwargs):
        raise RuntimeError("the step failed")

    param.grad = torch.randn(8, generator=gen)
    assert bool(skipper.step(float("nan"), 1.0).skip)  # a non-finite loss: skipped
    failing = optimizer.register_step_pre_hook(fail)
    with pytest.raises(RuntimeError, match="the step failed"):
        optimizer.step()
    failing.remove()
    before = param.detach().clone()
    assert not bool(skipper.step(1.0, 1.0).skip)
    optimizer.step()
    assert not torch.equal(param.detach(), before)  # taken
    assert no_leftover_attributes(optimizer)


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": 0}, "window"),
        ({"window": -3}, "window"),
        ({"window": 2.5}, "window"),
        ({"window": True}, "window"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": NAN}, "sigma"),
        ({"sigma": INF}, "sigma"),
        ({"sigma": None}, "sigma"),
    ],
)
def test_hyperparameters_are_checked(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastclip.StepSkipper(**kwargs)


def test_step_arguments_are_checked():
    skipper = fastclip.StepSkipper()
    with pytest.raises(TypeError, match="loss"):
        skipper.step("2.0", 1.0)
    with pytest.raises(TypeError, match="norm"):
        skipper.step(2.0, None)
    with pytest.raises(RuntimeError, match="loss must be float32"):
        skipper.step(torch.tensor(2), 1.0)
    with pytest.raises(RuntimeError, match="norm must hold 1 elements"):
        skipper.step(2.0, torch.ones(3))


def op_args(device="cpu", window=8, **replace):
    args = {
        "loss": torch.tensor(2.0, device=device),
        "norm": torch.tensor(1.0, device=device),
        "history": torch.zeros(2, window, dtype=torch.float64, device=device),
        "counters": torch.zeros(SKIP_STEP_COUNTERS, dtype=torch.int64, device=device),
        "result": torch.empty(SKIP_STEP_RESULT_SLOTS, dtype=torch.float32, device=device),
        "window": window,
        "sigma": 6.0,
        "reference": False,
    }
    args.update(replace)
    return list(args.values())


@pytest.mark.parametrize(
    "replace, match",
    [
        ({"loss": torch.tensor([1.0, 2.0])}, "loss must hold 1 elements"),
        ({"norm": torch.tensor(1, dtype=torch.int32)}, "norm must be float32"),
        ({"history": torch.zeros(2, 8)}, "history must be Double"),
        ({"history": torch.zeros(2, 7, dtype=torch.float64)}, "history must have shape \\[2, window\\] = \\[2, 8\\]"),
        ({"history": torch.zeros(8, 2, dtype=torch.float64).t()}, "history must be contiguous"),
        ({"counters": torch.zeros(SKIP_STEP_COUNTERS, dtype=torch.int32)}, "counters must be Long"),
        ({"counters": torch.tensor([9, 0, 0, 0])}, "counters hold count 9"),
        ({"result": torch.empty(3)}, "result must hold"),
        ({"window": 0, "history": torch.zeros(2, 0, dtype=torch.float64)}, "window must be >= 1"),
        ({"sigma": 0.0}, "sigma must be finite and > 0"),
        ({"sigma": NAN}, "sigma must be finite and > 0"),
        ({"loss": torch.tensor(2.0, device="meta")}, "loss is on meta"),
    ],
)
def test_op_errors_name_the_argument(replace, match):
    with pytest.raises(RuntimeError, match=match):
        ops.skip_step_update_(*op_args(**replace))


# ---- on a GPU ----------------------------------------------------------------------------------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
@pytest.mark.parametrize("reference", [False, True], ids=["default", "reference"])
def test_cuda_gives_the_cpu_bits(reference, gen):
    """The statistics are one shared header (nvcc with --fmad=false): the same bits on both."""
    losses, norms = sequence(gen, 300, torch.float32, {100: (NAN, 1.0), 200: (2.0, INF)})
    _, on_cpu = run_skipper(fastclip.StepSkipper(window=64, reference=reference), losses, norms, "cpu")
    _, on_gpu = run_skipper(fastclip.StepSkipper(window=64, reference=reference), losses, norms, "cuda")
    assert torch.equal(on_cpu.view(torch.int32), on_gpu.view(torch.int32))


@needs_gpu
def test_cuda_no_host_sync_alone_or_attached_beside_a_clipper(gen):
    (model,) = twin_models(n=1)
    model.cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    clipper = fastclip.ZClip(model.parameters()).attach(optimizer)
    skipper = fastclip.StepSkipper(window=8).attach(optimizer)
    alone = fastclip.StepSkipper(window=8)
    grads = [[g.cuda() for g in step] for step in spiky_grads(gen, [p.shape for p in model.parameters()], 6)]
    losses = (2.0 + torch.rand(6, generator=gen)).cuda()

    def step(i):
        for p, g in zip(model.parameters(), grads[i]):
            p.grad = g.clone()
        result = skipper.step(losses[i], clipper.step().norm)
        alone.step(losses[i], result.norm_mean)
        optimizer.step()

    step(0)  # allocates the states
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1, 6):
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_gpu
def test_cuda_graph_capture_replays_steps(gen):
    losses, norms = sequence(gen, 60, torch.float32)
    losses, norms = losses.cuda(), norms.cuda()
    eager, captured = fastclip.StepSkipper(window=16), fastclip.StepSkipper(window=16)
    static_loss, static_norm = losses[0].clone(), norms[0].clone()
    first = captured.step(static_loss, static_norm)  # allocates the state outside the graph
    torch.testing.assert_close(first._values, eager.step(losses[0], norms[0])._values, rtol=0, atol=0, equal_nan=True)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            out = captured.step(static_loss, static_norm)
    torch.cuda.current_stream().wait_stream(stream)
    for i in range(1, 60):
        static_loss.copy_(losses[i])
        static_norm.copy_(norms[i])
        graph.replay()
        torch.testing.assert_close(
            out._values,
            eager.step(losses[i], norms[i])._values,
            rtol=0,
            atol=0,
            equal_nan=True,
            msg=lambda m: f"step {i}: {m}",
        )
