"""The contract every op of the ``fastclip`` library keeps, walked from the dispatcher so that a new op
is covered by being defined: it has sample inputs (tests/op_samples.py's SAMPLES; a test fails
naming any op without), its schema, fake kernel and registrations pass ``torch.library.opcheck`` on
every sample (the AOT replay on some only: see WITHOUT_AOT; a held_<op>, which opcheck cannot take,
instead gives bit for bit its list op's results and in-place writes), and it refuses a sparse tensor
with fastclip's own error ("fastclip: ... sparse ..."), not the dispatcher's "Could not run"."""

import pytest
import torch
from conftest import DEVICES
from op_samples import SAMPLES, held_args, library_op_names

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

OPS = library_op_names()
# Every opcheck test runs on each op's first sample; the other samples (the awkward inputs) skip
# test_aot_dispatch_dynamic, the slowest, which checks the op's registration rather than its
# inputs. The statistics ops skip it on every sample, as their opcheck tests always did (ZClip's,
# AutoClip's, AdaGC's and NormClip's steps are traced whole in tests/test_clipper_state.py's
# torch.compile test). So this file takes no longer than the opcheck tests it replaced.
WITHOUT_AOT = ("test_schema", "test_autograd_registration", "test_faketensor")
STATEFUL = {"zclip_update_", "normclip_update_", "autoclip_update_", "adagc_update_", "stable_spam_update_"}
# fastclip's message for a sparse tensor (csrc/ops/op_library.cpp's reject_sparse, or list_plan.cpp's
# check_tensor_list once dispatched to a dense kernel).
SPARSE_MESSAGE = r"^fastclip: .*sparse"


def test_every_op_has_sample_inputs():
    missing = sorted(set(OPS) - set(SAMPLES))
    stale = sorted(set(SAMPLES) - set(OPS))
    assert not missing, f"ops with no sample inputs in tests/op_samples.py's SAMPLES: {missing}"
    assert not stale, f"SAMPLES has entries for ops the fastclip library does not define: {stale}"


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _tensors(value):
    """Every tensor in an op's arguments or outputs, in order (None for an absent one)."""
    if isinstance(value, torch.Tensor) or value is None:
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _assert_bitwise(got, want, what):
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), f"{what}[{i}]"
        if a is None:
            continue
        assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride()), f"{what}[{i}]"
        same = torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
        assert same, f"{what}[{i}] differs: {a} != {b}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, device, gen):
    if not op.startswith("held_"):
        samples = SAMPLES[op](device, gen)
        assert samples, f"{op} has no samples"
        for i, args in enumerate(samples):
            full = i == 0 and op not in STATEFUL
            kwargs = {} if full else {"test_utils": WITHOUT_AOT}
            torch.library.opcheck(getattr(torch.ops.fastclip, op).default, args, **kwargs)
        return
    # opcheck takes no ScriptObject (a held list): a held op must instead do exactly what its list
    # op does, on copies of the list op's last sample (the awkward one): the same outputs and the
    # same in-place writes. (tests/test_held_lists.py compares more lists.)
    list_op = op.removeprefix("held_")
    args = SAMPLES[list_op](device, gen)[-1]
    ours, theirs = _clone(args), _clone(args)
    got = getattr(torch.ops.fastclip, op)(*held_args(ours))
    want = getattr(torch.ops.fastclip, list_op)(*theirs)
    _assert_bitwise(_tensors(got), _tensors(want), "outputs")
    _assert_bitwise(_tensors(list(ours)), _tensors(list(theirs)), "arguments after the call")


def _with_first_tensor_sparse(args):
    """``args`` with the first tensor of the first tensor-list argument (or, without one, the first
    tensor argument) replaced by a sparse COO copy."""
    args = list(args)
    for i, value in enumerate(args):
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            args[i] = [value[0].to_sparse(), *value[1:]]
            return args
    for i, value in enumerate(args):
        if isinstance(value, torch.Tensor):
            args[i] = value.to_sparse()
            return args
    raise AssertionError("no tensor argument")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_refuses_sparse(op, device, gen):
    if op.startswith("held_"):
        # A held list made of the list op's first sample's tensors, the first one sparse.
        args = held_args(_with_first_tensor_sparse(SAMPLES[op.removeprefix("held_")](device, gen)[0]))
    else:
        args = _with_first_tensor_sparse(SAMPLES[op](device, gen)[0])
    with pytest.raises(RuntimeError, match=SPARSE_MESSAGE):
        getattr(torch.ops.fastclip, op)(*args)
