"""Megatron-style model parallelism (a faithful model of Megatron-core's calling convention, since
its own functions hard-code CUDA) and the Lightning callback."""

import math

import pytest
import torch
import torch.distributed as dist
from conftest import make_params
from spawned_ranks import scenario

import fastclip
from fastclip.integrations import megatron as fc_megatron

# The full model: a column-parallel weight, a layernorm weight duplicated on every TP rank, and a
# vocab-parallel embedding tied to an output layer (the tied copy is marked shared).
FULL = {"weight": (8, 6), "norm": (6,), "embedding": (10, 6)}
# Past ZClip's 10-step warm-up: two spikes in a row, then a lone one.
STEPS, SPIKES = 50, (20, 21, 40)


def _full_grads(step):
    g = torch.Generator().manual_seed(99 + step)
    scale = 0.2 * (1 + 0.3 * math.sin(step / 7)) * (30.0 if step in SPIKES else 1.0)
    return {k: torch.randn(s, generator=g) * scale for k, s in FULL.items()}


def _local_pieces(full, tp_rank, tp_size):
    """This rank's pieces of the whole model's tensors, one per parameter of _local_params."""
    return [
        full["weight"].chunk(tp_size)[tp_rank],
        full["norm"],
        full["embedding"].chunk(tp_size)[tp_rank],
        full["embedding"].chunk(tp_size)[tp_rank],
    ]


def _local_params(tp_rank, tp_size, grads, attr):
    """This rank's parameters, as Megatron lays them out, with grads in `attr`."""
    shapes = [g.shape for g in _local_pieces(grads, tp_rank, tp_size)]
    weight, norm, embedding, output = make_params(shapes)  # norm: a duplicate on every TP rank
    weight.tensor_model_parallel = True
    embedding.tensor_model_parallel = True
    output.tensor_model_parallel = True
    output.shared = True  # tied to the embedding
    params = [weight, norm, embedding, output]
    _set_local_grads(params, tp_rank, tp_size, grads, attr)
    return params


def _set_local_grads(params, tp_rank, tp_size, grads, attr):
    for p, g in zip(params, _local_pieces(grads, tp_rank, tp_size)):
        setattr(p, attr, g.clone())


def _megatron_grads_for_norm(params, tp_rank, attr="grad"):
    """Megatron's get_main_grads_for_grad_norm: param_is_not_shared and
    param_is_not_tensor_parallel_duplicate (a duplicate counts on TP rank 0 only)."""
    out = []
    for p in params:
        not_shared = not getattr(p, "shared", False)
        not_duplicate = getattr(p, "tensor_model_parallel", False) or tp_rank == 0
        if not_shared and not_duplicate:
            out.append(getattr(p, attr))
    return out


def _reference(grads, max_norm):
    total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
    coef = min(1.0, max_norm / (total + 1e-6))
    return total, {k: g * coef for k, g in grads.items()}


def _check_local(params, tp_rank, tp_size, expected, attr="grad"):
    for p, e in zip(params, _local_pieces(expected, tp_rank, tp_size)):
        torch.testing.assert_close(getattr(p, attr), e, rtol=2e-5, atol=1e-8)


class StubMegatronOptimizer:
    """What MegatronOptimizer.clip_grad_norm reads from self, for the patched method."""

    def __init__(self, params, tp_rank, group):
        self.params, self.tp_rank, self.group = params, tp_rank, group

    def get_parameters(self):
        return self.params

    def get_main_grads_for_grad_norm(self):
        return _megatron_grads_for_norm(self.params, self.tp_rank)

    def get_grad_stats_parallel_group(self):
        return self.group


@scenario(4)
def _scenario_megatron(rank, world):
    tp_size = 2
    tp_rank, dp_rank = rank % tp_size, rank // tp_size
    # Megatron's model-parallel group (here TP only) is what grad stats reduce over.
    tp_groups = [dist.new_group([d * tp_size + t for t in range(tp_size)]) for d in range(world // tp_size)]
    tp_group = tp_groups[dp_rank]

    # 1. The functions: norm over Megatron's set, every copy (the tied output too) scaled.
    grads = _full_grads(0)
    params = _local_params(tp_rank, tp_size, grads, "grad")
    total = fc_megatron.get_grad_norm_fp32(
        _megatron_grads_for_norm(params, tp_rank), grad_stats_parallel_group=tp_group
    )
    fc_megatron.clip_grad_by_total_norm_fp32(params, 1.0, total)
    expected_total, expected = _reference(grads, 1.0)
    assert abs(float(total) - expected_total) <= 2e-5 * expected_total
    _check_local(params, tp_rank, tp_size, expected)
    assert isinstance(
        fc_megatron.get_grad_norm_fp32(_megatron_grads_for_norm(params, tp_rank), 2, tp_group, as_float=True), float
    )

    # 2. An adaptive clipper on main_grad buffers, norm over Megatron's set, through warm-up and spikes.
    ref_params = make_params(list(FULL.values()))
    reference = fastclip.ZClip(ref_params, warmup_steps=10, max_grad_norm=3.0)
    local = _local_params(tp_rank, tp_size, _full_grads(0), "main_grad")
    norm_params = [
        p for p in local if any(g is p.main_grad for g in _megatron_grads_for_norm(local, tp_rank, "main_grad"))
    ]
    clipper = fastclip.ZClip(
        local,
        warmup_steps=10,
        max_grad_norm=3.0,
        norm_parameters=norm_params,
        process_group=tp_group,
        grad_attr="main_grad",
    )
    clipped = set()
    for step in range(STEPS):
        grads = _full_grads(step)
        for p, g in zip(ref_params, grads.values()):
            p.grad = g.clone()
        _set_local_grads(local, tp_rank, tp_size, grads, "main_grad")
        expected_result, result = reference.step(), clipper.step()
        if bool(expected_result.clipped):
            clipped.add(step)
        torch.testing.assert_close(result.norm, expected_result.norm, rtol=2e-5, atol=0)
        _check_local(local, tp_rank, tp_size, {k: p.grad for k, p in zip(FULL, ref_params)}, attr="main_grad")
    assert clipped >= set(SPIKES)  # the spikes took the clipped path (other steps may too)
    stats = clipper.state_dict()["state"]["stats"]
    gathered = [torch.empty_like(stats) for _ in range(world)]
    dist.all_gather(gathered, stats)
    assert all(torch.equal(g, stats) for g in gathered)  # the same statistics on every rank, DP and TP

    # 3. patch(): Megatron's optimizer method runs a fastclip clipper on Megatron's own selection.
    fc_megatron.patch(
        lambda p, norm_p, group: fastclip.NormClip(p, max_norm=1.0, norm_parameters=norm_p, process_group=group)
    )
    try:
        from megatron.core.optimizer.optimizer import MegatronOptimizer

        grads = _full_grads(5)
        params = _local_params(tp_rank, tp_size, grads, "grad")
        norm = MegatronOptimizer.clip_grad_norm(StubMegatronOptimizer(params, tp_rank, tp_group), 1.0)
        expected_total, expected = _reference(grads, 1.0)
        assert isinstance(norm, float) and abs(norm - expected_total) <= 2e-5 * expected_total
        _check_local(params, tp_rank, tp_size, expected)
    finally:
        fc_megatron.unpatch()


def test_megatron_tensor_and_data_parallel(gloo_ranks):
    """4 ranks: 2-way tensor parallel x 2-way data parallel."""
    outcome = gloo_ranks.run(_scenario_megatron, 4)
    assert outcome.passed, outcome.report


def test_megatron_patch_swaps_and_restores():
    import megatron.core.optimizer.clip_grads as clip_grads  # installed by the README's test command

    original = clip_grads.get_grad_norm_fp32
    fc_megatron.patch()
    try:
        assert clip_grads.get_grad_norm_fp32 is not original
        grads = [torch.randn(5, 3), torch.randn(7)]
        expected = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        assert abs(clip_grads.get_grad_norm_fp32(grads) - expected) <= 1e-5 * expected  # a float, on the CPU
    finally:
        fc_megatron.unpatch()
    assert clip_grads.get_grad_norm_fp32 is original


def test_megatron_norm_single_process_and_errors():
    grads = [torch.randn(5, 3), torch.randn(7)]
    for norm_type in (2.0, 1.0, float("inf")):
        expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]).double(), norm_type)
        torch.testing.assert_close(
            fc_megatron.get_grad_norm_fp32(grads, norm_type), expected.float(), rtol=1e-6, atol=0
        )
    assert float(fc_megatron.get_grad_norm_fp32([])) == 0.0  # a rank with nothing to count
    with pytest.raises(ValueError, match="norm_type must be > 0 or inf"):
        fc_megatron.get_grad_norm_fp32(grads, 0)


def test_lightning_callback_clips_and_logs(tmp_path):
    import lightning.pytorch as lightning  # installed by the README's test command

    from fastclip.integrations.lightning import FastClipCallback

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y) * 1e4  # large grads: clipped

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    callback = FastClipCallback(lambda params: fastclip.NormClip(params, max_norm=0.5))
    trainer = lightning.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    assert callback.last_result is not None and bool(callback.last_result.clipped)
    assert float(callback.last_result.norm) > 0.5
    assert "fastclip/norm" in trainer.callback_metrics
