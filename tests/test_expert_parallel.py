"""Expert parallelism on 4 gloo ranks: param groups carrying their own process_group, and the
Megatron-core integration's dense and expert optimizers (a real ChainedOptimizer of FP32Optimizers).

The layout (Megatron's MoE with 2-way expert parallelism on 4 ranks): expert-parallel groups
{0,1} and {2,3} (each rank holds the experts of its EP rank, r % 2), expert-data-parallel groups
{0,2} and {1,3} (ranks r and r + 2 hold the same experts). Every result is checked against one
process holding the whole model (the norm in float64 from the full tensors), and every clipper's
state must be bitwise the same on every rank. Both scenarios share the 4-rank spawn of the other
test files (spawned_ranks.py)."""

import math

import pytest
import torch
import torch.distributed as dist
from clippers_table import clippers
from conftest import make_params
from spawned_ranks import scenario

import fastclip

RTOL = 2e-5
# Past every clipper's warm-up (ZClip 6 steps, AdaGC 8): two spikes in a row, then a lone one.
STEPS, SPIKES = 24, (12, 13, 20)

# The whole model, one tensor per entry: dense tensors (sharded 4 ways along dim 0, as a
# distributed optimizer holds them: reduced over the world), expert tensors of shape
# (2 EP ranks, ...) sharded over EP and expert-DP (reduced over both), expert tensors replicated
# over expert-DP (a non-distributed optimizer: reduced over EP only), a router every rank holds
# whole (not reduced) and a tensor in a group without the key (the call's process_group: the world).
DENSE = [(9, 5), (7,), (3,)]  # (3,) leaves a rank an empty shard
EXPERT_SHARDED = [(2, 6, 4), (2, 4, 6)]
EXPERT_REPLICATED = [(2, 5), (2, 3, 2)]
ROUTER = [(4, 6)]
OTHER = [(6, 2)]
SHAPES = DENSE + EXPERT_SHARDED + EXPERT_REPLICATED + ROUTER + OTHER


def _full_grads(step, seed=4321):
    g = torch.Generator().manual_seed(seed + step)
    scale = 0.1 * (1 + 0.3 * math.sin(step / 5)) * (25.0 if step in SPIKES else 1.0)
    return [torch.randn(s, generator=g, dtype=torch.float64).float() * scale for s in SHAPES]


def _pieces(full, rank):
    """This rank's piece of each whole tensor, in SHAPES' order, grouped as the param groups list them."""
    ep, edp = rank % 2, rank // 2
    it = iter(full)
    dense = [next(it).tensor_split(4, dim=0)[rank] for _ in DENSE]
    sharded = [next(it)[ep].tensor_split(2, dim=0)[edp] for _ in EXPERT_SHARDED]
    replicated = [next(it)[ep] for _ in EXPERT_REPLICATED]
    router = [next(it) for _ in ROUTER]
    other = [next(it).tensor_split(4, dim=0)[rank] for _ in OTHER]
    return [t.clone() for t in dense + sharded + replicated + router + other]


class Layout:
    def __init__(self, rank):
        eps = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        edps = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        self.ep, self.edp = eps[rank // 2], edps[rank % 2]
        self.rank = rank

    def groups(self, params):
        """Param groups over this rank's parameters (in SHAPES' order)."""
        n = [len(DENSE), len(EXPERT_SHARDED), len(EXPERT_REPLICATED), len(ROUTER)]
        cut = [sum(n[:i]) for i in range(len(n) + 1)]
        return [
            {"params": params[cut[0] : cut[1]], "process_group": dist.group.WORLD, "lr": 1e-3},
            {"params": params[cut[1] : cut[2]], "process_group": [self.ep, self.edp]},
            {"params": params[cut[2] : cut[3]], "process_group": self.ep, "is_expert_parallel": True},
            {"params": params[cut[3] : cut[4]], "process_group": None},
            {"params": params[cut[4] :]},
        ]  # no key: the call's process_group


def _check_functions(layout, rank):
    full = _full_grads(3)
    for norm_type in (2.0, float("inf")):
        expected = torch.linalg.vector_norm(torch.cat([t.double().flatten() for t in full]), norm_type)
        params = make_params(grads=_pieces(full, rank))
        total = fastclip.clip_grad_norm_(layout.groups(params), 0.5, norm_type, process_group=dist.group.WORLD)
        torch.testing.assert_close(total.double(), expected, rtol=RTOL, atol=0)
        coef = min(1.0, 0.5 / (float(expected) + 1e-6))
        for p, e in zip(params, _pieces([t * coef for t in full], rank)):
            torch.testing.assert_close(p.grad, e, rtol=RTOL, atol=1e-8)
        again = fastclip.get_total_norm(layout.groups(_pieces(full, rank)), norm_type, process_group=dist.group.WORLD)
        torch.testing.assert_close(again.double(), expected, rtol=RTOL, atol=0)
    # A grad missing everywhere (the router's) still leaves every rank the same collectives.
    params = make_params(grads=_pieces(full, rank))
    params[len(DENSE) + len(EXPERT_SHARDED) + len(EXPERT_REPLICATED)].grad = None
    kept = [t for i, t in enumerate(full) if i != len(DENSE) + len(EXPERT_SHARDED) + len(EXPERT_REPLICATED)]
    expected = torch.linalg.vector_norm(torch.cat([t.double().flatten() for t in kept]))
    total = fastclip.clip_grad_norm_(layout.groups(params), 1e9, process_group=dist.group.WORLD)
    torch.testing.assert_close(total.double(), expected, rtol=RTOL, atol=0)


# Warm-ups that end before SPIKES.
CLIPPERS = clippers(
    ["zclip", "autoclip", "autoclip-tensor", "adagc", "normclip", "stable-spam"],
    {
        "zclip": {"warmup_steps": 6},
        "autoclip": {"percentile": 20.0},
        "autoclip-tensor": {"percentile": 50.0, "history_size": 8},
        "adagc": {"warmup_steps": 8},
    },
)


def _same_on_every_rank(tensor, what):
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    for other in gathered:
        assert torch.equal(other.view(torch.uint8), tensor.view(torch.uint8)), f"{what} differs between ranks"


def _check_clippers(layout, rank):
    for name, make in CLIPPERS.items():
        reference_params = make_params(SHAPES)
        params = make_params([t.shape for t in _pieces(_full_grads(0), rank)])
        reference = make(reference_params)
        clipper = make(layout.groups(params), process_group=dist.group.WORLD)
        clipped = set()
        for step in range(STEPS):
            full = _full_grads(step)
            for p, g in zip(reference_params + params, full + _pieces(full, rank)):
                p.grad = g.clone()
            expected, result = reference.step(), clipper.step()
            if bool(expected.clipped):
                clipped.add(step)
            torch.testing.assert_close(
                result.norm, expected.norm, rtol=RTOL, atol=0, msg=lambda m: f"{name} step {step}: {m}"
            )
            if expected.coef.dim():  # per-tensor clippers: each whole tensor's factor
                torch.testing.assert_close(
                    result.coef, expected.coef, rtol=RTOL, atol=0, msg=lambda m: f"{name} step {step}: {m}"
                )
            for p, e in zip(params, _pieces([p.grad for p in reference_params], rank)):
                torch.testing.assert_close(p.grad, e, rtol=RTOL, atol=1e-8, msg=lambda m: f"{name} step {step}: {m}")
        if name != "stable-spam":  # (it rescales every step: `clipped` is its AdaClip's)
            assert clipped >= set(SPIKES), f"{name} did not clip every spike"
        for key, value in clipper.state_dict()["state"].items():
            _same_on_every_rank(value, f"{name} {key}")


def _check_errors(layout, rank):
    params = make_params(grads=_pieces(_full_grads(0), rank))
    bad = [{"params": params[:2]}, {"params": params[2:], "process_group": "world"}]
    with pytest.raises(TypeError, match="param group 1's process_group is a str"):
        fastclip.clip_grad_norm_(bad, 1.0)
    with pytest.raises(TypeError, match=r"param group 0's process_group\[1\] is a int"):
        fastclip.ZClip([{"params": params, "process_group": [dist.group.WORLD, 3]}])
    # Rank 3 lists one expert tensor fewer: every rank gets the error (not only 2 and 3), no hang.
    groups = layout.groups(params)
    if rank == 3:
        groups[1]["params"] = groups[1]["params"][:-1]
    clipper = fastclip.AdaGC(groups, process_group=dist.group.WORLD)
    with pytest.raises(RuntimeError, match="different lengths"):
        clipper.step()


def _check_dtensors(layout, rank):
    """DTensor grads in a param group carrying process_group: reduced over the mesh's sharded dims,
    then over the group's (a group given in both counted once). Each expert-DP rank pair holds one
    half of the experts (r // 2), as a DTensor sharded over the mesh's second dim ({0,1}, {2,3})."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2, 2))
    edp_of_half = [dist.new_group([0, 2]), dist.new_group([1, 3])][rank % 2]  # joins the two halves
    full = [t.reshape(2, -1, t.shape[-1]) for t in _full_grads(5)[len(DENSE) : len(DENSE) + len(EXPERT_SHARDED)]]

    def local(t):
        return distribute_tensor(t[rank // 2].clone(), mesh, (Replicate(), Shard(0)), src_data_rank=None)

    expected = torch.linalg.vector_norm(torch.cat([t.double().flatten() for t in full]))
    coef = min(1.0, 0.5 / (float(expected) + 1e-6))
    for process_group in (edp_of_half, [mesh.get_group(1), edp_of_half]):
        params = [torch.nn.Parameter(local(p.detach())) for p in make_params([t.shape for t in full])]
        for p, t in zip(params, full):
            p.grad = local(t)
        total = fastclip.clip_grad_norm_([{"params": params, "process_group": process_group}], 0.5)
        torch.testing.assert_close(total.double(), expected, rtol=RTOL, atol=0)
        for p, t in zip(params, full):
            torch.testing.assert_close(p.grad.to_local(), local(t * coef).to_local(), rtol=RTOL, atol=1e-8)
    reference_params = make_params(grads=full)
    reference = fastclip.AdaGC(reference_params)
    clipper = fastclip.AdaGC([{"params": params, "process_group": edp_of_half}])
    for p, t in zip(params, full):
        p.grad = local(t)
    torch.testing.assert_close(clipper.step().coef, reference.step().coef, rtol=RTOL, atol=0)


def _check_agc(layout, rank):
    """AGC takes no norm across ranks: a group's process_group changes nothing."""
    values = _pieces(_full_grads(1), rank)
    plain, grouped = make_params(grads=values), make_params(grads=values)
    for a, b, v in zip(plain, grouped, values):
        a.data.copy_(v * 3)
        b.data.copy_(v * 3)
    fastclip.AGC(plain, clip_factor=0.2).step()
    fastclip.AGC(layout.groups(grouped), clip_factor=0.2).step()
    for a, b in zip(plain, grouped):
        assert torch.equal(a.grad, b.grad)


@scenario(4)
def _scenario_param_group_process_groups(rank, world):
    layout = Layout(rank)
    _check_functions(layout, rank)
    _check_clippers(layout, rank)
    _check_dtensors(layout, rank)
    _check_agc(layout, rank)
    _check_errors(layout, rank)


def test_param_groups_reduced_over_their_own_groups(gloo_ranks):
    """Dense grads over the world, experts over EP x expert-DP or EP alone, a router not reduced:
    clip_grad_norm_, get_total_norm and every clipper against one process, state equal on every
    rank; DTensor grads in such a group; AGC unchanged; a wrong process_group type and ranks
    listing different tensors give clear errors."""
    outcome = gloo_ranks.run(_scenario_param_group_process_groups, 4)
    assert outcome.passed, outcome.report


def test_param_group_process_group_needs_distributed():
    (p,) = make_params([(3,)])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="param group 1's process_group was given but torch.distributed"):
        fastclip.clip_grad_norm_([{"params": []}, {"params": [p], "process_group": [object()]}], 1.0)
    # None in a group: its grads are whole, nothing reduced; works without torch.distributed.
    total = fastclip.clip_grad_norm_([{"params": [p], "process_group": None, "lr": 0.1}], 1.0)
    torch.testing.assert_close(total, torch.tensor(math.sqrt(3.0)))
    clipper = fastclip.AdaGC([{"params": [p], "process_group": None}])
    torch.testing.assert_close(clipper.step().norm, torch.tensor(1.0), rtol=1e-6, atol=0)


# -- Megatron-core: dense and expert optimizers in a ChainedOptimizer -------------------------
# TP = PP = 1, a non-distributed FP32 optimizer per kind, as Megatron-core builds them: dense
# grads whole on every rank (all-reduced over data parallel), grad stats over the model-parallel
# group (here each rank alone); expert grads whole on each rank of an expert-DP group, grad stats
# over the expert tensor x expert x pipeline group (here the EP group). The dense optimizer also
# holds an output layer tied to the embedding (shared: scaled, not counted) and a multi-token
# prediction head tagged grad_norm_group="mtp".
M_DENSE = {"embedding": (10, 4), "layer": (4, 4)}
M_EXPERTS = [(4, 6), (6, 4)]  # each EP rank's experts; the whole model has both ranks'
M_MTP = (3, 4)
M_STEPS, M_SPIKES = 16, (9, 13)


def _megatron_grads(step):
    g = torch.Generator().manual_seed(777 + step)
    scale = 0.2 * (1 + 0.3 * math.sin(step / 3)) * (20.0 if step in M_SPIKES else 1.0)
    dense = {k: torch.randn(s, generator=g) * scale for k, s in M_DENSE.items()}
    experts = [[torch.randn(s, generator=g) * scale for s in M_EXPERTS] for _ in range(2)]
    return dense, experts, torch.randn(M_MTP, generator=g) * scale * 3


class MegatronModel:
    """This rank's parameters, their grads set from the whole model's, and a ChainedOptimizer."""

    def __init__(self, rank, mp_group, ep_group, clip_grad=1.0):
        from megatron.core.optimizer.optimizer import ChainedOptimizer, FP32Optimizer, MegatronOptimizer
        from megatron.core.optimizer.optimizer_config import OptimizerConfig

        self.ep_rank = rank % 2
        self.dense = dict(zip(M_DENSE, make_params(list(M_DENSE.values()))))
        (self.output,) = make_params([M_DENSE["embedding"]])  # tied to the embedding
        self.output.shared = True
        (self.mtp,) = make_params([M_MTP])
        self.mtp.grad_norm_group = "mtp"
        self.experts = make_params(M_EXPERTS)
        for p in self.experts:
            p.allreduce = False  # how Megatron marks expert parameters
        config = OptimizerConfig(clip_grad=clip_grad)

        def optimizer(params, stats_group):
            # FP32Optimizer's constructor makes a CUDA tensor; its methods run on the CPU.
            made = FP32Optimizer.__new__(FP32Optimizer)
            MegatronOptimizer.__init__(made, torch.optim.SGD(params, lr=0.0), config)
            made.is_stub_optimizer = False
            made.grad_stats_parallel_group = stats_group
            made.tp_group = mp_group  # TP = 1: every parameter counts
            return made

        dense = [*self.dense.values(), self.output, self.mtp]
        self.optimizer = ChainedOptimizer([optimizer(dense, mp_group), optimizer(self.experts, ep_group)])

    def set_grads(self, step):
        dense, experts, mtp = _megatron_grads(step)
        for k, p in self.dense.items():
            p.main_grad = dense[k].clone()
        self.output.main_grad = dense["embedding"].clone()
        self.mtp.main_grad = mtp.clone()
        for p, g in zip(self.experts, experts[self.ep_rank]):
            p.main_grad = g.clone()

    def check(self, step, coef, mtp_coef):
        dense, experts, mtp = _megatron_grads(step)
        pairs = [(p, dense[k]) for k, p in self.dense.items()] + [(self.output, dense["embedding"])]
        pairs += list(zip(self.experts, experts[self.ep_rank]))
        for p, g in pairs:
            torch.testing.assert_close(p.grad, g * coef, rtol=RTOL, atol=1e-8, msg=lambda m: f"step {step}: {m}")
        torch.testing.assert_close(self.mtp.grad, mtp * mtp_coef, rtol=RTOL, atol=1e-8)


def _megatron_norms(step):
    """float64: the norm Megatron-core 0.16.1 counts (dense without the tied copy, MTP included,
    both EP ranks' experts), the main norm without MTP, and MTP's own."""
    dense, experts, mtp = _megatron_grads(step)
    main = sum(float(g.double().square().sum()) for g in [*dense.values(), *experts[0], *experts[1]])
    mtp_sq = float(mtp.double().square().sum())
    return math.sqrt(main + mtp_sq), math.sqrt(main), math.sqrt(mtp_sq)


def _coef(max_norm, norm):
    return min(1.0, max_norm / (norm + 1e-6))


@scenario(4)
def _scenario_megatron_experts(rank, world):
    from fastclip.integrations import megatron as fc_megatron

    mp_groups = [dist.new_group([r]) for r in range(world)]
    ep_groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    mp_group, ep_group = mp_groups[rank], ep_groups[rank // 2]

    # 1. patch(): the chain's norm combined on the device; Megatron's own step clips by it.
    model = MegatronModel(rank, mp_group, ep_group)
    fc_megatron.patch()
    try:
        model.set_grads(0)
        model.optimizer.prepare_grads()
        with_mtp, _, _ = _megatron_norms(0)
        norm = fc_megatron.get_grad_norm(model.optimizer)
        assert norm.dtype == torch.float32 and norm.dim() == 0
        assert abs(float(norm) - with_mtp) <= RTOL * with_mtp
        success, grad_norm, _ = model.optimizer.step()  # Megatron-core 0.16.1's ChainedOptimizer.step
        assert success and isinstance(grad_norm, float) and abs(grad_norm - with_mtp) <= RTOL * with_mtp
        model.check(0, _coef(1.0, with_mtp), _coef(1.0, with_mtp))  # 0.16.1 clips MTP with the rest
    finally:
        fc_megatron.unpatch()

    # 2. The helpers for hand-built clippers: each optimizer a param group with its own groups.
    def ids(params):
        return [id(p) for p in params]

    groups = fc_megatron.param_groups(model.optimizer)
    assert [g["process_group"] for g in groups] == [[mp_group], [ep_group]]
    assert ids(groups[0]["params"]) == ids([*model.dense.values(), model.output])
    assert ids(groups[1]["params"]) == ids(model.experts)
    assert ids(fc_megatron.param_groups(model.optimizer, "mtp")[0]["params"]) == [id(model.mtp)]
    assert ids(fc_megatron.norm_parameters(model.optimizer)) == ids([*model.dense.values(), *model.experts])
    split = fc_megatron.moe_param_groups([*model.dense.values(), *model.experts], mp_group, [ep_group])
    assert ids(split[0]["params"]) == ids(model.dense.values()) and ids(split[1]["params"]) == ids(model.experts)
    assert split[1]["process_group"] == [ep_group]

    # 3. patch(clipper=...): one ZClip over the whole chain, one coefficient; MTP its own norm and clip.
    model = MegatronModel(rank, mp_group, ep_group, clip_grad=1.5)
    reference_params = make_params([*M_DENSE.values(), *M_EXPERTS, *M_EXPERTS])
    reference = fastclip.ZClip(reference_params, warmup_steps=5, max_grad_norm=3.0)
    made = []

    def make(params, norm_params, group):
        made.append((params, group))
        return fastclip.ZClip(
            params, warmup_steps=5, max_grad_norm=3.0, norm_parameters=norm_params, process_group=group
        )

    fc_megatron.patch(make)
    try:
        clipped = set()
        for step in range(M_STEPS):
            dense, experts, _ = _megatron_grads(step)
            for p, g in zip(reference_params, [*dense.values(), *experts[0], *experts[1]]):
                p.grad = g.clone()
            expected = reference.step()
            if bool(expected.clipped):
                clipped.add(step)
            model.set_grads(step)
            success, grad_norm, _ = model.optimizer.step()
            _, main, mtp = _megatron_norms(step)
            assert success and abs(grad_norm - main) <= RTOL * main
            assert abs(grad_norm - float(expected.norm)) <= RTOL * main
            assert abs(model.optimizer.grad_norms_by_group["mtp"] - mtp) <= RTOL * mtp
            model.check(step, float(expected.coef), _coef(1.5, mtp))
        assert clipped >= set(M_SPIKES)
        params, group = made[0]
        assert len(made) == 1 and group is None and [g["process_group"] for g in params] == [[mp_group], [ep_group]]
        _same_on_every_rank(model.optimizer._fastclip_clipper.state_dict()["state"]["stats"], "ZClip stats")
    finally:
        fc_megatron.unpatch()


def test_megatron_dense_and_expert_optimizers(gloo_ranks):
    """A real ChainedOptimizer of a dense and an expert FP32Optimizer on 4 ranks (2-way EP): the
    norm combined on the device, Megatron's own step clipping by it, an adaptive clipper over the
    chain with one coefficient, and the MTP head clipped by its own norm."""
    outcome = gloo_ranks.run(_scenario_megatron_experts, 4)
    assert outcome.passed, outcome.report
