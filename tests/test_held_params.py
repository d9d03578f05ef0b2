"""Plain grads read in C++ (fastclip._held_params: torch.classes.fastclip.ParamList and the
held_<op> forms of the ops): bit for bit what the Python walk gives, every changed grad picked
up, nothing kept alive, and anything the C++ read cannot see exactly read in Python instead."""

import copy
import pickle
import weakref

import pytest
import torch

import fastclip

from conftest import DEVICES, FLOAT_DTYPES, random_tensors

SHAPES = [(4, 3), (7,), (1,), (0,), (5, 2), (3, 65)]

CLIPPERS = {
    "clip_grad_norm_": None,
    "ZClip": lambda p, **o: fastclip.ZClip(p, warmup_steps=2, **o),
    "AutoClip": lambda p, **o: fastclip.AutoClip(p, percentile=50.0, **o),
    "AutoClip(tensor)": lambda p, **o: fastclip.AutoClip(p, percentile=50.0, scope="tensor", history_size=3, **o),
    "AdaGC": lambda p, **o: fastclip.AdaGC(p, warmup_steps=2, **o),
    "NormClip": lambda p, **o: fastclip.NormClip(p, 1.0, **o),
}


def _params(values):
    params = [torch.nn.Parameter(t.clone()) for t in values]
    for p in params:
        p.grad_dtype = None  # the grads change dtype below
    return params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CLIPPERS)
@pytest.mark.parametrize("on_nonfinite", ["skip", "zero"])
def test_grads_read_in_cpp_clip_as_grads_read_in_python(device, name, on_nonfinite, monkeypatch, gen):
    """Two copies of one model, one clipped with its grads read in C++, the other with them read
    in Python (a clipper told its parameters are not plain; clip_grad_norm_ without its C++ read):
    bitwise the same grads and results at every step, while the grads are changed in place,
    replaced one at a time, given another dtype, moved to memory another grad of another size
    held the step before (the caching allocator's reuse), set to None one at a time (skipped by
    clip_grad_norm_'s C++ read; a clipper then reads them in Python), and poisoned with a NaN."""
    if name == "clip_grad_norm_" and on_nonfinite == "zero":
        pytest.skip("clip_grad_norm_ has no policy")
    values = random_tensors(SHAPES, [torch.float32], device, gen, scale=3.0)
    ours, theirs = _params(values), _params(values)
    make = CLIPPERS[name]
    clippers = None
    if make is not None:
        clippers = make(ours, on_nonfinite=on_nonfinite), make(theirs, on_nonfinite=on_nonfinite)
        clippers[1]._held_params._plain = False

    def read_in_cpp():
        if make is None:
            return fastclip._held_params.grads_read_in_cpp(ours) is not None
        return clippers[0]._held_params.grads() is not None

    def step():
        if make is None:
            got = fastclip.clip_grad_norm_(iter(ours), 1.0)  # a generator, as model.parameters() is
            with monkeypatch.context() as python_only:
                python_only.setattr(fastclip.clip_grad, "grads_read_in_cpp", lambda params: None)
                return [got], [fastclip.clip_grad_norm_(theirs, 1.0)]
        a, b = clippers[0].step(), clippers[1].step()
        return [a.norm, a.coef, a.threshold, a.clipped], [b.norm, b.coef, b.threshold, b.clipped]

    def check(in_cpp=True):
        assert read_in_cpp() == in_cpp
        got, want = step()
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        for a, b in zip(ours, theirs):
            assert (a.grad is None) == (b.grad is None)
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)

    def set_grad(i, grad):
        ours[i].grad, theirs[i].grad = grad, None if grad is None else grad.clone()

    for i, g in enumerate(random_tensors(SHAPES, FLOAT_DTYPES, device, gen, scale=3.0)):
        set_grad(i, g)
    set_grad(0, ours[0].grad.t().contiguous().t())  # not contiguous (both: the same memory order)
    check()
    for scale in (2.0, 0.1):  # kept, changed in place
        for a, b in zip(ours, theirs):
            a.grad.mul_(scale)
            b.grad.mul_(scale)
        check()
    set_grad(1, torch.randn(7, generator=gen).to(device))  # replaced
    check()
    set_grad(4, torch.randn(5, 2, generator=gen).to(device, torch.bfloat16))  # another dtype
    check()
    # The memory of grad 2 (one element) now holds grad 1 (seven): same address, another size.
    buffer = torch.randn(16, generator=gen).to(device)
    set_grad(2, buffer[:1])
    check()
    set_grad(2, torch.randn(1, generator=gen).to(device))
    ours[1].grad = buffer[:7]
    theirs[1].grad = buffer[:7].clone()
    check()
    for i in (3, 0):  # set to None, one at a time: clip_grad_norm_ skips them, a clipper reads in Python
        set_grad(i, None)
        check(in_cpp=make is None)
    for i, g in enumerate(random_tensors(SHAPES, [torch.float32], device, gen, scale=3.0)):
        set_grad(i, g)
    check()
    ours[5].grad[1, 2] = theirs[5].grad[1, 2] = float("nan")
    check()


class RoutedParameter(torch.nn.Parameter):
    """A parameter whose ``.grad`` in Python is not its autograd grad (as some libraries' own
    parameter classes do): only Python can read it."""

    @property
    def grad(self):
        return self.routed

    @grad.setter
    def grad(self, value):
        self.routed = value


@pytest.mark.parametrize("name", CLIPPERS)
def test_a_parameter_subclass_is_read_in_python(name, gen):
    """A parameter whose Python ``.grad`` differs from its autograd grad: the Python one is clipped."""
    param = RoutedParameter(torch.zeros(6))
    param.grad = torch.randn(6, generator=gen) * 10
    autograd_grad = torch.randn(6, generator=gen) * 10
    torch.Tensor.grad.__set__(param, autograd_grad)
    untouched = autograd_grad.clone()
    expected = param.routed * (1.0 / (float(param.routed.norm()) + 1e-6))
    if CLIPPERS[name] is None:
        fastclip.clip_grad_norm_([param], 1.0)
    else:
        CLIPPERS[name]([param]).step()
    if name in ("NormClip", "clip_grad_norm_"):
        torch.testing.assert_close(param.routed, expected)
    assert torch.equal(autograd_grad, untouched)
    assert fastclip._held_params.grads_read_in_cpp([param]) is None


def test_grads_sharing_memory_are_refused_by_name_before_the_statistics_move(gen):
    params = [torch.nn.Parameter(torch.zeros(6)), torch.nn.Parameter(torch.zeros(4))]
    params[0].grad, params[1].grad = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
    clipper = fastclip.ZClip(params, warmup_steps=2)
    clipper.step()
    shared = torch.randn(8, generator=gen)
    params[0].grad, params[1].grad = shared[:6], shared[4:]
    assert clipper._held_params.grads() is not None
    before = clipper.state_dict()
    with pytest.raises(RuntimeError, match=r"grads\[0\] and grads\[1\] share memory"):
        clipper.step()
    after = clipper.state_dict()
    assert before["host"] == after["host"] and set(before["state"]) == set(after["state"])
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        fastclip.clip_grad_norm_(params, 1.0)


def test_grads_are_not_kept_alive_by_the_clipper(gen):
    params = [torch.nn.Parameter(torch.zeros(64)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(64, generator=gen)
    clipper = fastclip.AutoClip(params, percentile=10.0, scope="tensor")
    clipper.step()
    watch = [weakref.ref(p.grad) for p in params]
    for p in params:
        p.grad = None
    assert all(w() is None for w in watch)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))])
def test_a_clipper_that_read_grads_in_cpp_can_be_copied(clone, gen):
    params = [torch.nn.Parameter(torch.zeros(5)) for _ in range(2)]
    for p in params:
        p.grad = torch.randn(5, generator=gen) * 10
    clipper = fastclip.NormClip(params, 1.0)
    clipper.step()
    twin = clone(clipper)
    for p, q in zip(params, twin._params):
        p.grad.mul_(10.0)
        q.grad = p.grad.clone()
    kept = [p.grad.clone() for p in params]
    twin.step()  # clips the twin's own parameters' grads
    assert all(torch.equal(p.grad, k) for p, k in zip(params, kept))
    assert torch.ops.fastclip.multi_tensor_norm([q.grad for q in twin._params], 2.0, False)[0] <= 1.0 + 1e-5


@pytest.mark.parametrize("name", [n for n in CLIPPERS if n != "clip_grad_norm_"])
@pytest.mark.parametrize("in_cpp", [True, False])
def test_a_sparse_grad_is_named(name, in_cpp, gen):
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4, 3))]
    params[0].grad = torch.randn(3, generator=gen)
    params[1].grad = torch.randn(4, 3, generator=gen).to_sparse()
    clipper = CLIPPERS[name](params)
    clipper._held_params._plain = in_cpp
    with pytest.raises(RuntimeError, match=r"parameters\[1\]\.grad has layout torch.sparse_coo"):
        clipper.step()
    with pytest.raises(RuntimeError, match="zclip_update_ got a sparse tensor"):  # the op itself, called raw
        torch.ops.fastclip.zclip_update_([params[1].grad], None, torch.zeros(8, dtype=torch.float64),
                                         torch.zeros(16), 0.9, 2.0, None, 1e-6, 2, "zscore",
                                         "adaptive_scaling", 1.0, False, "skip", False, True)
