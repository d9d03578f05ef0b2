"""Held lists (fastclip.ops.held_list) and the DTensor grads kept across steps
(fastclip._grads.DTensorShardCache): the same results as the list ops, bit for bit, and a
changed list always picked up."""

import copy
import gc
import weakref

import pytest
import torch
from clippers_table import clippers
from conftest import DEVICES, FLOAT_DTYPES, make_params, random_tensors

import fastclip
from fastclip import ops
from fastclip._grads import DTensorShardCache

# Also run on the CUDA kernels executed on the CPU (README: the cuda-on-cpu command).
pytestmark = pytest.mark.cuda_kernels

SHAPES = [(1,), (7,), (3, 5), (0,), (129, 65), (2, 3, 4, 5), (70001,)]


def _pair(device, gen):
    """Two copies of one random mixed-dtype list (one of them transposed: not contiguous)."""
    tensors = random_tensors(SHAPES, FLOAT_DTYPES, device, gen)
    tensors[2] = tensors[2].t()
    return tensors, [t.clone() for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 0.5])
def test_held_norm_is_the_list_norm(device, norm_type, gen):
    tensors, _ = _pair(device, gen)
    held = ops.held_list(tensors)
    for _ in range(2):  # the second call finds the plan remembered
        got = ops.multi_tensor_norm(held, norm_type, True)
        want = ops.multi_tensor_norm(tensors, norm_type, True)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        for t in tensors:
            t.mul_(3.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_tensor", [False, True])
def test_held_scale_and_clip_by_norm_write_what_the_list_ops_write(device, per_tensor, gen):
    ours, theirs = _pair(device, gen)
    held = ops.held_list(ours)
    scale = torch.rand(len(ours) if per_tensor else (), generator=gen).to(device)
    if per_tensor:
        scale[1] = 0.0  # cleared, NaN and inf included
        ours[1][0] = theirs[1][0] = float("nan")
    ops.multi_tensor_scale_(held, scale, clear_on_zero=True)
    ops.multi_tensor_scale_(theirs, scale, clear_on_zero=True)
    total = torch.tensor(40.0, device=device)
    ops.multi_tensor_clip_by_norm_(held, total, 3.0)
    ops.multi_tensor_clip_by_norm_(theirs, total, 3.0)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_a_held_tensor_changed_in_place_is_seen_and_a_bad_one_named():
    """The ops check and plan the held tensors at every call: a tensor resized in place since the
    list was held is read at its new size, and one that no longer qualifies is refused by name."""
    tensors = [torch.ones(5), torch.ones(3)]
    held = ops.held_list(tensors)
    assert float(ops.multi_tensor_norm(held, 1.0)[0]) == 8.0
    tensors[0].resize_(50).fill_(1.0)
    assert float(ops.multi_tensor_norm(held, 1.0)[0]) == 53.0
    bad = ops.held_list([torch.ones(2), torch.ones(2, dtype=torch.int32)])
    with pytest.raises(RuntimeError, match=r"tensors\[1\] has dtype Int"):
        ops.multi_tensor_norm(bad, 2.0)
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        shared = torch.ones(4)
        ops.multi_tensor_scale_(ops.held_list([shared, shared[1:]]), torch.tensor(0.5))


@pytest.fixture
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _sharded(tensors, mesh):
    from torch.distributed.tensor import DTensor, Shard

    return [DTensor.from_local(t.clone(), mesh, [Shard(0)], run_check=False) for t in tensors]


# Two-step warm-ups (the runs are a few steps); clip_grad_norm_ alongside the clippers.
CLIPPERS = {
    "clip_grad_norm_": None,
    **clippers(
        ["zclip", "autoclip", "autoclip-tensor", "adagc", "normclip"],
        {
            "zclip": {"warmup_steps": 2, "max_grad_norm": 1.0},
            "autoclip": {"percentile": 50.0},
            "autoclip-tensor": {"percentile": 50.0},
            "adagc": {"warmup_steps": 2, "beta": 0.98},
        },
    ),
}


@pytest.mark.parametrize("name", CLIPPERS)
@pytest.mark.parametrize("on_nonfinite", ["skip", "zero"])
def test_dtensor_grads_kept_across_steps_clip_as_the_list_path_does(mesh, name, on_nonfinite, gen):
    """DTensor grads (one-rank mesh) against the same values as plain grads, which take the list
    path (both reduced over the same one-rank group): bitwise the same grads and results at every step,
    while the DTensor grads are kept (values changed in place), replaced one at a time, all set to
    None, replaced with another dtype, and poisoned with a NaN."""
    import torch.distributed as dist

    shapes = [(4, 3), (7,), (1,), (0,), (5, 2)]
    dparams = make_params(shapes, torch.float32, "cpu", gen, scale=3.0)  # the parameters themselves stay plain
    params = copy.deepcopy(dparams)
    for p in dparams + params:
        p.grad_dtype = None  # the grads change dtype below
    make = CLIPPERS[name]
    options = {} if name in ("clip_grad_norm_",) else {"on_nonfinite": on_nonfinite}
    if name == "clip_grad_norm_" and on_nonfinite == "zero":
        pytest.skip("clip_grad_norm_ has no policy")
    # Both reduce over the group: a step with no grads at all then reduces on both sides too.
    world = dist.group.WORLD
    ours = None if make is None else make(dparams, process_group=world, **options)
    theirs = None if make is None else make(params, process_group=world, **options)

    def step():
        if make is None:
            return (
                [fastclip.clip_grad_norm_(dparams, 1.0, process_group=world)],
                [fastclip.clip_grad_norm_(params, 1.0, process_group=world)],
            )
        a, b = ours.step(), theirs.step()
        return [a.norm, a.coef, a.threshold, a.clipped], [b.norm, b.coef, b.threshold, b.clipped]

    def check():
        got, want = step()
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        for dp, p in zip(dparams, params):
            if p.grad is None:
                assert dp.grad is None
            else:
                torch.testing.assert_close(dp.grad._local_tensor, p.grad, rtol=0, atol=0, equal_nan=True)

    def set_grads(grads, only=None):
        for i, (dp, p, g) in enumerate(zip(dparams, params, grads)):
            if only is None or i == only:
                dp.grad, p.grad = _sharded([g], mesh)[0], g.clone()

    held_of = (lambda: fastclip.clip_grad._SHARD_CACHE._last) if make is None else (lambda: ours._shard_cache._last)
    set_grads(random_tensors(shapes, [torch.float32], "cpu", gen, scale=3.0))
    check()
    first = held_of()
    assert first is not None
    for scale in (2.0, 0.1):  # kept: the same held list, the new values
        for dp, p in zip(dparams, params):
            dp.grad._local_tensor.mul_(scale)
            p.grad.mul_(scale)
        check()
        assert held_of() is first
    watch = weakref.ref(first[1][0])  # the first grad's shard, held
    set_grads(random_tensors(shapes, [torch.float32], "cpu", gen), only=1)  # one replaced
    assert held_of() is None  # the replaced grad's death dropped the held list
    del first
    check()
    for dp, p in zip(dparams, params):  # zero_grad(set_to_none=True)
        dp.grad = p.grad = None
    assert held_of() is None and watch() is None
    check()
    set_grads(random_tensors(shapes, [torch.bfloat16], "cpu", gen, scale=3.0))  # another dtype
    check()
    dparams[0].grad._local_tensor[0, 0] = params[0].grad[0, 0] = float("nan")
    check()


def test_dtensor_shards_are_freed_with_their_grads(mesh, gen):
    """The held list keeps the local shards alive only while their DTensors live: once the grads
    are set to None, the shards are gone (no copy of the model's grads lingers until the next step)."""
    grads = _sharded(random_tensors([(64,), (3, 3)], [torch.float32], "cpu", gen), mesh)
    params = make_params([g.shape for g in grads], generator=gen)
    for p, g in zip(params, grads):
        p.grad = g
    clipper = fastclip.ZClip(params, warmup_steps=2)
    clipper.step()
    shards = [weakref.ref(g._local_tensor) for g in grads]
    del grads, g
    for p in params:
        p.grad = None
    assert all(s() is None for s in shards)
    gc.collect()
    assert clipper._shard_cache._last is None


def test_lists_that_mix_plain_tensors_and_dtensors_are_not_held(mesh, gen):
    plain = random_tensors([(5,)], [torch.float32], "cpu", gen)
    mixed = plain + _sharded(random_tensors([(4,)], [torch.float32], "cpu", gen), mesh)
    local, keys, held = DTensorShardCache().split(mixed)
    assert held is None and keys[0] is None and local[0] is plain[0]


def test_shards_sharing_memory_are_refused_before_the_statistics_move(mesh, gen):
    """A held list is scaled after the step; shards that share memory must be refused before the
    step reads them, leaving the clipper's state as it was."""
    shared = torch.randn(6, generator=gen)
    params = make_params([(6,), (4,)], generator=gen)
    params[0].grad, params[1].grad = _sharded([shared], mesh)[0], _sharded([shared[2:]], mesh)[0]
    params[1].grad._local_tensor = params[0].grad._local_tensor[2:]  # the same memory, as a view
    clipper = fastclip.ZClip(params, warmup_steps=2)
    before = clipper.state_dict()
    with pytest.raises(RuntimeError, match="share memory"):
        clipper.step()
    after = clipper.state_dict()
    assert before["host"] == after["host"]
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert set(before["state"]) == set(after["state"])


def test_a_clipper_that_held_dtensor_grads_can_be_copied(mesh, gen):
    params = make_params([(5,)], generator=gen)
    params[0].grad = _sharded(random_tensors([(5,)], [torch.float32], "cpu", gen), mesh)[0]
    clipper = fastclip.AdaGC(params, warmup_steps=2)
    clipper.step()
    twin = copy.deepcopy(clipper)
    assert twin._shard_cache._last is None
    assert all(
        torch.equal(a, b) for a, b in zip(clipper.state_dict()["state"].values(), twin.state_dict()["state"].values())
    )
