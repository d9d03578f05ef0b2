"""Plain grads read in C++ (fastclip._grads: fastclip._C.grads_of and the held_<op> forms
of the ops): bit for bit what the Python walk gives, every changed grad picked
up, nothing kept alive, and anything the C++ read cannot see exactly read in Python instead."""

import contextlib
import copy
import pickle
import weakref

import pytest
import torch
from clippers_table import clippers
from conftest import DEVICES, FLOAT_DTYPES, make_params, random_tensors

import fastclip

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

SHAPES = [(4, 3), (7,), (1,), (0,), (5, 2), (3, 65)]

# Two-step warm-ups (the runs are a few steps); clip_grad_norm_ alongside the clippers.
CLIPPERS = {
    "clip_grad_norm_": None,
    **clippers(
        ["zclip", "autoclip", "autoclip-tensor", "adagc", "normclip"],
        {
            "zclip": {"warmup_steps": 2, "max_grad_norm": 1.0},
            "autoclip": {"percentile": 50.0},
            "autoclip-tensor": {"percentile": 50.0, "history_size": 3},
            "adagc": {"warmup_steps": 2, "beta": 0.98},
        },
    ),
}


@pytest.fixture
def cpp_reads(monkeypatch):
    """Whether each C++ read of the grads since the fixture was made gave them (True) or gave way
    to Python (False)."""
    reads, read = [], fastclip._grads._read

    def spy(params, skip_missing):
        held = read(params, skip_missing)
        reads.append(held is not None)
        return held

    monkeypatch.setattr(fastclip._grads, "_read", spy)
    return reads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CLIPPERS)
@pytest.mark.parametrize("on_nonfinite", ["skip", "zero", "propagate", "error", "attached"])
def test_grads_read_in_cpp_clip_as_grads_read_in_python(device, name, on_nonfinite, cpp_reads, gen):
    """Two copies of one model, one clipped with its grads read in C++, the other with them read
    in Python (inside fastclip._grads.read_in_python()):
    bitwise the same grads and results at every step (each on_nonfinite policy; "attached": a
    ZClip or AutoClip attached to an optimizer, the factor folded into its step, "zero" zeroing
    the grads of a non-finite step), while the grads are changed in place,
    replaced one at a time, given another dtype, moved to memory another grad of another size
    held the step before (the caching allocator's reuse), set to None one at a time (skipped by
    clip_grad_norm_'s C++ read; a clipper then reads them in Python), and poisoned with a NaN."""
    if name == "clip_grad_norm_" and on_nonfinite != "skip":
        pytest.skip("clip_grad_norm_ has no policy")
    attached = on_nonfinite == "attached"
    if attached and name not in ("zclip", "autoclip"):
        pytest.skip("only the clippers of the total norm fold their factor into the optimizer")
    ours = make_params(SHAPES, torch.float32, device, gen, scale=3.0)
    theirs = copy.deepcopy(ours)
    for p in ours + theirs:
        p.grad_dtype = None  # the grads change dtype below
    make = CLIPPERS[name]
    clippers = None
    if make is not None:
        policy = "zero" if attached else on_nonfinite
        clippers = make(ours, on_nonfinite=policy), make(theirs, on_nonfinite=policy)
        if attached:  # an optimizer that reads grad_scale/found_inf, as fused Adam does
            for clipper, params in zip(clippers, (ours, theirs)):
                optimizer = torch.optim.SGD(params, lr=0.1)
                optimizer._step_supports_amp_scaling = True
                clipper.attach(optimizer)

    def step():
        if make is None:
            got = fastclip.clip_grad_norm_(iter(ours), 1.0)  # a generator, as model.parameters() is
            with fastclip._grads.read_in_python():
                return [got], [fastclip.clip_grad_norm_(theirs, 1.0)]
        a = clippers[0].step()
        with fastclip._grads.read_in_python():
            b = clippers[1].step()
        return [a.norm, a.coef, a.threshold, a.clipped], [b.norm, b.coef, b.threshold, b.clipped]

    def check(in_cpp=True):
        if on_nonfinite == "error" and any(
            p.grad is not None and not torch.isfinite(p.grad.float()).all() for p in theirs
        ):
            for clipper, read in zip(clippers, (contextlib.nullcontext, fastclip._grads.read_in_python)):
                with read(), pytest.raises(RuntimeError, match="on_nonfinite='error'"):
                    clipper.step()
            assert cpp_reads.pop() == in_cpp and not cpp_reads
            return
        got, want = step()
        assert cpp_reads.pop() == in_cpp and not cpp_reads  # ours read once, theirs not in C++
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
    param = RoutedParameter(torch.randn(6, generator=gen))
    param.grad = torch.randn(6, generator=gen) * 10
    autograd_grad = torch.randn(6, generator=gen) * 10
    torch.Tensor.grad.__set__(param, autograd_grad)
    untouched = autograd_grad.clone()
    expected = param.routed * (1.0 / (float(param.routed.norm()) + 1e-6))
    if CLIPPERS[name] is None:
        fastclip.clip_grad_norm_([param], 1.0)
    else:
        CLIPPERS[name]([param]).step()
    if name in ("normclip", "clip_grad_norm_"):
        torch.testing.assert_close(param.routed, expected)
    assert torch.equal(autograd_grad, untouched)
    assert fastclip._grads.grads_in_cpp([param], skip_missing=True) is None


def test_grads_sharing_memory_are_refused_by_name_before_the_statistics_move(cpp_reads, gen):
    params = make_params(grads=random_tensors([(6,), (4,)], [torch.float32], "cpu", gen))
    clipper = fastclip.ZClip(params, warmup_steps=2)
    clipper.step()
    shared = torch.randn(8, generator=gen)
    params[0].grad, params[1].grad = shared[:6], shared[4:]
    before = clipper.state_dict()
    with pytest.raises(RuntimeError, match=r"grads\[0\] and grads\[1\] share memory"):
        clipper.step()
    after = clipper.state_dict()
    assert before["host"] == after["host"] and set(before["state"]) == set(after["state"])
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        fastclip.clip_grad_norm_(params, 1.0)
    assert cpp_reads == [True, True, True]


def test_grads_are_not_kept_alive_by_the_clipper(cpp_reads, gen):
    params = make_params(grads=random_tensors([(64,)] * 3, [torch.float32], "cpu", gen))
    clipper = fastclip.AutoClip(params, percentile=10.0, scope="tensor")
    clipper.step()
    assert cpp_reads == [True]
    watch = [weakref.ref(p.grad) for p in params]
    for p in params:
        p.grad = None
    assert all(w() is None for w in watch)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))])
def test_a_clipper_that_read_grads_in_cpp_can_be_copied(clone, gen):
    params = make_params(grads=random_tensors([(5,)] * 2, [torch.float32], "cpu", gen, scale=10.0))
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
def test_a_sparse_grad_is_named(name, in_cpp, cpp_reads, gen):
    params = make_params([(3,), (4, 3)], generator=gen)
    params[0].grad = torch.randn(3, generator=gen)
    params[1].grad = torch.randn(4, 3, generator=gen).to_sparse()
    clipper = CLIPPERS[name](params)
    read = contextlib.nullcontext if in_cpp else fastclip._grads.read_in_python
    with read(), pytest.raises(RuntimeError, match=r"parameters\[1\]\.grad has layout torch.sparse_coo"):
        clipper.step()
    assert cpp_reads == ([True] if in_cpp else [])
    with pytest.raises(RuntimeError, match="zclip_update_ got a sparse tensor"):  # the op itself, called raw
        torch.ops.fastclip.zclip_update_(
            [params[1].grad],
            None,
            torch.zeros(8, dtype=torch.float64),
            torch.zeros(16),
            0.9,
            2.0,
            None,
            1e-6,
            2,
            "zscore",
            "adaptive_scaling",
            1.0,
            False,
            "skip",
            False,
            True,
        )


def test_parameters_can_be_swapped_after_a_step(cpp_reads, gen):
    """Nothing holds the parameters between steps: torch.utils.swap_tensors (used by
    Module.to() under torch.__future__.set_swap_module_params_on_conversion) still works, and
    the next step clips the swapped-in values' grads."""
    params = make_params(grads=random_tensors([(4,)] * 2, [torch.float32], "cpu", gen, scale=10.0))
    clipper = fastclip.NormClip(params, 1.0)
    clipper.step()
    fastclip.clip_grad_norm_(params, 1.0)
    (replacement,) = make_params([(4,)], generator=gen)
    replacement.grad = torch.full((4,), 3.0)
    torch.utils.swap_tensors(params[0], replacement)
    params[1].grad = None
    params[1].grad = torch.full((4,), 4.0)
    clipper.step()
    assert cpp_reads == [True, True, True]
    # The total norm is sqrt(4 * 3^2 + 4 * 4^2) = 10: the grads are scaled by 1 / 10.
    torch.testing.assert_close(params[0].grad, torch.full((4,), 0.3), rtol=1e-6, atol=0)
    torch.testing.assert_close(params[1].grad, torch.full((4,), 0.4), rtol=1e-6, atol=0)


def test_a_torch_function_mode_sees_the_grads_read(cpp_reads, gen):
    """Under a TorchFunctionMode the grads are read in Python, where the mode sees each read."""
    from torch.overrides import TorchFunctionMode

    class Reads(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.grads = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.grads += getattr(func, "__self__", None) is torch.Tensor.grad  # the getter of .grad
            return func(*args, **(kwargs or {}))

    params = make_params(grads=random_tensors([(3,)] * 2, [torch.float32], "cpu", gen))
    for clip in (lambda: fastclip.clip_grad_norm_(params, 1.0), fastclip.ZClip(params, warmup_steps=2).step):
        with Reads() as mode:
            clip()
        assert mode.grads >= len(params)
    assert cpp_reads == [False, False]


def test_a_missing_grad_of_a_tensor_that_is_not_a_leaf_warns_as_torch_does(cpp_reads, gen):
    (leaf,) = make_params(grads=random_tensors([(3,)], [torch.float32], "cpu", gen))
    not_leaf = leaf * 2
    with pytest.warns(UserWarning, match="not a leaf Tensor"):
        torch.nn.utils.clip_grad_norm_([leaf, not_leaf], 1.0)
    with pytest.warns(UserWarning, match="not a leaf Tensor"):
        fastclip.clip_grad_norm_([leaf, not_leaf], 1.0)
    assert cpp_reads == [False]


def test_clip_grad_norm_names_a_bad_parameter_before_a_bad_number():
    """Arguments are checked in the order they were before grads were read in C++: the entries
    of ``parameters`` first."""
    with pytest.raises(TypeError, match=r"parameters\[0\] is a int"):
        fastclip.clip_grad_norm_([1, 2], -1.0)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        fastclip.clip_grad_norm_(make_params([(2,)]), -1.0)


def test_a_grad_python_sees_as_a_subclass_is_read_in_python(cpp_reads, gen):
    """A grad that is a tensor subclass with only __torch_function__ (no Python dispatch): the op
    is called from Python, where the subclass sees it."""
    seen = []

    class Watched(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    (param,) = make_params([(5,)], generator=gen)
    param.grad = (torch.randn(5, generator=gen) * 10).as_subclass(Watched)
    fastclip.clip_grad_norm_([param], 1.0)
    assert cpp_reads == [False] and seen


def test_grads_of_a_long_list_are_those_python_reads(gen):
    """A list long enough for every look-ahead of the C++ read, mixing grads and none, leaves,
    tensors that are not leaves (with and without retain_grad) and tensors without autograd
    metadata: the grads read in C++ are the grads Python reads, or None where Python must read."""
    (base,) = make_params([(3,)], generator=gen)
    params = []
    for _ in range(300):
        kind = int(torch.randint(5, (), generator=gen))
        if kind == 0:
            (p,) = make_params(grads=random_tensors([(2,)], [torch.float32], "cpu", gen), generator=gen)
        elif kind == 1:
            (p,) = make_params([(2,)], generator=gen)  # no grad
        elif kind == 2:
            p = torch.randn(4, generator=gen)  # no autograd metadata
        elif kind == 3:
            p = base * 2
            p.retain_grad()
            p.backward(torch.ones(3))
        else:
            (p,) = make_params([(1,)], generator=gen)
            p.grad_dtype = None
            p.grad = torch.randn(1, generator=gen).double()
        params.append(p)
    held = fastclip._grads.grads_in_cpp(params, skip_missing=True)
    present = [p.grad for p in params if p.grad is not None]
    want = fastclip.ops.multi_tensor_norm(present, 2.0, True)
    got = fastclip.ops.multi_tensor_norm(held, 2.0, True)
    assert len(held) == len(present) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert fastclip._C.grads_of(params, False) is None  # some have none: a clipper reads in Python
    params.append(base * 3)  # not a leaf, no grad: Python warns, so Python reads
    assert fastclip._grads.grads_in_cpp(params, skip_missing=True) is None


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated", "ignore:Using backward\\(\\) with create_graph")
def test_modes_tracers_and_differentiable_grads_are_read_in_python(cpp_reads, gen):
    """Where a TorchDispatchMode, torch.jit.trace or a grad that requires grad (create_graph=True)
    would see a difference, the grads are read in Python; torch.set_default_device's mode sees
    neither read nor op, so the grads are still read in C++ under it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    params = make_params(grads=random_tensors([(3,)] * 2, [torch.float32], "cpu", gen))
    with Ops() as mode:
        fastclip.clip_grad_norm_(params, 1.0)
    assert any("multi_tensor_clip_grad_norm_" in op and "held" not in op for op in mode.seen)
    traced = torch.jit.trace(lambda x: fastclip.clip_grad_norm_(params, 1.0) + x, torch.zeros(()), check_trace=False)
    assert traced is not None
    assert cpp_reads == [False, False]
    with torch.device("cpu"):
        fastclip.clip_grad_norm_(params, 1.0)
    assert cpp_reads == [False, False, True]
    (weight,) = make_params([(3,)], generator=gen)
    (weight**3).sum().backward(create_graph=True)
    total = fastclip.clip_grad_norm_([weight], 1e9)
    assert cpp_reads == [False, False, True, False] and total.requires_grad
