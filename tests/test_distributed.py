"""Norms and clippers across ranks (gloo on the CPU): every rank holds shards of the same tensors;
the norm and the clipped shards must equal the single-process result on the whole tensors, and
every rank must end with bitwise the same clipper state. The scenarios of a world size share one
set of ranks (spawned_ranks.py); each test asserts its own scenario's outcome."""

import math

import pytest
import torch
import torch.distributed as dist
from clippers_table import clippers
from conftest import make_params
from spawned_ranks import scenario

import fastclip

SHAPES = [(9, 5), (7,), (1,), (16, 3, 2), (3,)]  # (1,) and (3,) leave some ranks an empty shard
# Past every clipper's warm-up (ZClip 10 steps, AdaGC 20): two spikes in a row, then two lone ones,
# the first two leaving the tensor-scope AutoClip's 16-step history before the run ends.
STEPS, SPIKES = 64, (30, 31, 45, 58)
RTOL = 2e-5


def _full_grads(step, seed=1234):
    g = torch.Generator().manual_seed(seed + step)
    scale = 0.1 * (1 + 0.3 * math.sin(step / 9)) * (25.0 if step in SPIKES else 1.0)
    return [torch.randn(s, generator=g, dtype=torch.float64).float() * scale for s in SHAPES]


def _shard(t, rank, world):
    return t.tensor_split(world, dim=0)[rank].clone()


def _whole_params():
    """Parameters of the whole tensors' shapes, with the same values on every rank."""
    return make_params(SHAPES, generator=torch.Generator().manual_seed(0))


def _set(params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()


def _check_functions(rank, world, group):
    for norm_type in (2.0, float("inf"), 3.0):
        full = _full_grads(7)
        full_params = make_params(grads=full)
        shard_params = make_params(grads=[_shard(t, rank, world) for t in full])
        expected = torch.nn.utils.clip_grad_norm_(full_params, 0.5, norm_type)
        total = fastclip.clip_grad_norm_(shard_params, 0.5, norm_type, process_group=group)
        torch.testing.assert_close(total, expected, rtol=RTOL, atol=0)
        for p, f in zip(shard_params, full_params):
            torch.testing.assert_close(p.grad, _shard(f.grad, rank, world), rtol=RTOL, atol=1e-8)
        again = fastclip.get_total_norm([_shard(t, rank, world) for t in full], norm_type, process_group=group)
        torch.testing.assert_close(again, expected, rtol=RTOL, atol=0)


# Warm-ups that end before SPIKES; a 16-step history for the tensor scope (see SPIKES).
CLIPPERS = clippers(
    ["zclip", "autoclip", "autoclip-tensor", "adagc", "normclip"],
    {
        "zclip": {"warmup_steps": 10},
        "autoclip": {"percentile": 20.0},
        "autoclip-tensor": {"percentile": 50.0, "history_size": 16},
        "adagc": {"warmup_steps": 20},
    },
)


def _check_clippers(rank, world, group, steps, shard=None, local=None):
    """Each clipper on this rank's pieces (``shard(full, i)``; plain shards by default) against the
    same clipper on the whole tensors; ``local(grad, full, i)`` compares a clipped piece."""
    shard = shard or (lambda t, i: _shard(t, rank, world))
    local = local or (lambda g, f, i: (g, _shard(f, rank, world)))
    kwargs = {} if group is None else {"process_group": group}
    for name, make in CLIPPERS.items():
        full_params = _whole_params()
        shard_params = [torch.nn.Parameter(shard(p.detach(), i)) for i, p in enumerate(full_params)]
        reference, sharded = make(full_params), make(shard_params, **kwargs)
        clipped = set()
        for step in range(steps):
            full = _full_grads(step)
            _set(full_params, full)
            for i, (p, t) in enumerate(zip(shard_params, full)):
                p.grad = shard(t, i)
            expected, result = reference.step(), sharded.step()
            if bool(expected.clipped):
                clipped.add(step)
            torch.testing.assert_close(
                result.norm, expected.norm, rtol=RTOL, atol=0, msg=lambda m: f"{name} step {step}: {m}"
            )
            for i, (p, f) in enumerate(zip(shard_params, full_params)):
                ours, theirs = local(p.grad, f.grad, i)
                torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=1e-8, msg=lambda m: f"{name} step {step}: {m}")
        assert clipped >= set(SPIKES), (
            f"{name} did not clip every spike"
        )  # the spikes took the clipped path (other steps may too)
        for key, value in sharded.state_dict()["state"].items():  # bitwise the same on every rank
            gathered = [torch.empty_like(value) for _ in range(world)]
            dist.all_gather(gathered, value.contiguous())
            for other in gathered:
                assert torch.equal(other.view(torch.uint8), value.view(torch.uint8)), f"{name} {key} differs"


@scenario(2, 4)
def _scenario_sharded(rank, world):
    _check_functions(rank, world, dist.group.WORLD)
    _check_clippers(rank, world, dist.group.WORLD, steps=STEPS)


@scenario(4)
def _scenario_group_list(rank, world):
    # Shards over 4 ranks; reduced over {0,1},{2,3} and then over {0,2},{1,3}: the whole model.
    pairs_a = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    pairs_b = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    groups = [pairs_a[rank // 2], pairs_b[rank % 2]]
    _check_functions(rank, world, groups)
    _check_clippers(rank, world, groups, steps=STEPS)


@scenario(2)
def _scenario_length_mismatch(rank, world):
    params = make_params(grads=_full_grads(0))[: len(SHAPES) - rank]  # rank 1 has one tensor fewer
    clipper = fastclip.AdaGC(params, process_group=dist.group.WORLD)
    with pytest.raises(RuntimeError, match="different lengths"):
        clipper.step()


def _dtensor_checks(rank, world, mesh, placements):
    """DTensor grads with the given placement per tensor: norms, clipped shards and clippers
    against the single-process result on the whole tensors, no process_group needed."""
    from torch.distributed.tensor import distribute_tensor

    def shard(t, i):
        # Every rank holds the same whole tensor: each takes its shard locally (no scatter from rank 0).
        return distribute_tensor(t.clone(), mesh, placements[i % len(placements)], src_data_rank=None)

    def local(g, f, i):
        return g.to_local(), shard(f, i).to_local()

    for norm_type in (2.0, float("inf")):
        full = _full_grads(3)
        params = [torch.nn.Parameter(shard(p.detach(), i)) for i, p in enumerate(_whole_params())]
        for i, (p, t) in enumerate(zip(params, full)):
            p.grad = shard(t, i)
        expected = torch.linalg.vector_norm(torch.cat([t.flatten() for t in full]), norm_type)
        total = fastclip.clip_grad_norm_(params, 0.5, norm_type)
        assert not hasattr(total, "placements")  # the full norm, a plain tensor
        torch.testing.assert_close(total, expected, rtol=RTOL, atol=0)
        coef = min(1.0, 0.5 / (float(expected) + 1e-6))
        for i, (p, t) in enumerate(zip(params, full)):
            torch.testing.assert_close(p.grad.to_local(), shard(t * coef, i).to_local(), rtol=RTOL, atol=1e-8)
    _check_clippers(rank, world, None, steps=STEPS, shard=shard, local=local)


@scenario(2, 4)
def _scenario_dtensor_1d(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard

    mesh = init_device_mesh("cpu", (world,))
    _dtensor_checks(rank, world, mesh, [(Shard(0),), (Replicate(),), (Shard(0),)])


@scenario(4)
def _scenario_dtensor_2d(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard

    mesh = init_device_mesh("cpu", (2, world // 2))
    _dtensor_checks(
        rank,
        world,
        mesh,
        [(Shard(0), Replicate()), (Replicate(), Shard(0)), (Shard(0), Shard(0)), (Replicate(), Replicate())],
    )


@scenario(2)
def _scenario_fsdp2(rank, world):
    """fully_shard on the CPU: fastclip on one copy, torch on an identical one (all Shard(0))."""
    from torch.distributed.fsdp import fully_shard

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
        fully_shard(model)
        models.append(model)
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(rank))
    for model in models:
        model(x).pow(2).sum().backward()
    ours = fastclip.clip_grad_norm_(models[0].parameters(), 0.1)
    theirs = torch.nn.utils.clip_grad_norm_(models[1].parameters(), 0.1)
    torch.testing.assert_close(ours, theirs.full_tensor(), rtol=RTOL, atol=0)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a.grad.to_local(), b.grad.to_local(), rtol=RTOL, atol=1e-8)
    # A clipper on the FSDP2 grads against the same clipper on the gathered full grads.
    model = models[0]
    reference_params = make_params([p.shape for p in model.parameters()])
    clipper = fastclip.ZClip(model.parameters(), warmup_steps=3, max_grad_norm=0.05)
    reference = fastclip.ZClip(reference_params, warmup_steps=3, max_grad_norm=0.05)
    for step in range(20):
        model.zero_grad()
        model(x * (1 + step % 5) * (8.0 if step == 15 else 1.0)).pow(2).sum().backward()
        for r, p in zip(reference_params, model.parameters()):
            r.grad = p.grad.full_tensor()
        result, expected = clipper.step(), reference.step()
        torch.testing.assert_close(result.norm, expected.norm, rtol=RTOL, atol=0)
        for r, p in zip(reference_params, model.parameters()):
            torch.testing.assert_close(p.grad.full_tensor(), r.grad, rtol=RTOL, atol=1e-8)


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_norms_and_clippers_match_single_process(world, gloo_ranks):
    outcome = gloo_ranks.run(_scenario_sharded, world)
    assert outcome.passed, outcome.report


def test_list_of_groups_reduces_in_turn(gloo_ranks):
    outcome = gloo_ranks.run(_scenario_group_list, 4)
    assert outcome.passed, outcome.report


def test_ranks_with_different_lists_get_an_error_not_a_hang(gloo_ranks):
    outcome = gloo_ranks.run(_scenario_length_mismatch, 2)
    assert outcome.passed, outcome.report


@pytest.mark.parametrize("world", [2, 4])
def test_dtensor_grads_on_a_1d_mesh(world, gloo_ranks):
    outcome = gloo_ranks.run(_scenario_dtensor_1d, world)
    assert outcome.passed, outcome.report


def test_dtensor_grads_on_a_2d_mesh(gloo_ranks):
    outcome = gloo_ranks.run(_scenario_dtensor_2d, 4)
    assert outcome.passed, outcome.report


def test_fsdp2_matches_torch(gloo_ranks):
    outcome = gloo_ranks.run(_scenario_fsdp2, 2)
    assert outcome.passed, outcome.report


def test_process_group_needs_initialized_distributed():
    with pytest.raises(RuntimeError, match="not initialized"):
        fastclip.get_total_norm([torch.ones(3)], process_group=[object()])
