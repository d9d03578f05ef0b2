"""The clippers on a GPU: the same results as on the CPU (the statistics are the same shared
code), launches per step, no host sync, CUDA-graph capture, device moves of the state."""

import pytest
import torch
from clipper_refs import SHAPES, set_grads, spiky_grads, twin_models
from test_clipper_state import CLIPPERS, SPIKES, run

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_twin(model):
    twin = type(model)(SHAPES).cuda()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("name", list(CLIPPERS))
def test_cuda_matches_cpu(name, gen):
    steps = spiky_grads(gen, SHAPES, 60, SPIKES)
    (cpu_model,) = twin_models(n=1)
    gpu_model = cuda_twin(cpu_model)
    cpu = run(CLIPPERS[name](cpu_model.parameters()), list(cpu_model.parameters()), steps)
    gpu = run(
        CLIPPERS[name](gpu_model.parameters()), list(gpu_model.parameters()), [[g.cuda() for g in s] for s in steps]
    )
    for step, ((gc, rc), (gg, rg)) in enumerate(zip(cpu, gpu)):
        torch.testing.assert_close(
            rg._values.cpu(), rc._values, rtol=2e-5, atol=1e-7, equal_nan=True, msg=lambda m: f"step {step}: {m}"
        )
        for a, b in zip(gc, gg):
            torch.testing.assert_close(b.cpu(), a, rtol=2e-5, atol=1e-7)


def kernels_launched(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not any(w in e.name.lower() for w in ("memcpy", "memset"))
    ]


@pytest.mark.parametrize("attached", [False, True], ids=["alone", "attached"])
@pytest.mark.parametrize("name", ["zclip", "normclip", "autoclip", "autoclip-tensor", "adagc", "agc"])
def test_launches_per_step(name, attached, gen, monkeypatch):
    model = cuda_twin(twin_models(n=1)[0])
    clipper = CLIPPERS[name](model.parameters())
    if attached:
        clipper.attach(torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True))
    grads = [g.cuda() for g in spiky_grads(gen, SHAPES, 1)[0]]

    def step():
        set_grads(model.parameters(), grads)
        clipper.step()

    def launched():
        return [n for n in kernels_launched(step) if "copy" not in n.lower() and "fill" not in n.lower()]

    # Norm, statistics and scale in one cooperative kernel (AGC: its one fused pass).
    names = launched()
    assert len(names) == 1 and ("agc_clip_kernel" if name == "agc" else "clip_step_kernel") in names[0], names
    if name != "agc":
        monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
        assert 2 <= len(launched()) <= 3


@pytest.mark.parametrize("name", list(CLIPPERS))
def test_single_launch_matches_several_kernels_bitwise(name, gen, monkeypatch):
    steps = [[g.cuda() for g in s] for s in spiky_grads(gen, SHAPES, 200, SPIKES)]
    outcomes = []
    for setting in ("1", "0"):
        monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", setting)
        model = cuda_twin(twin_models(n=1)[0])
        outcomes.append(run(CLIPPERS[name](model.parameters()), list(model.parameters()), steps))
    for step, ((ga, ra), (gb, rb)) in enumerate(zip(*outcomes)):
        assert torch.equal(ra._values.view(torch.int32), rb._values.view(torch.int32)), f"step {step}"
        for a, b in zip(ga, gb):
            assert torch.equal(a, b), f"step {step}"


@pytest.mark.parametrize("name", ["zclip", "autoclip", "autoclip-tensor", "adagc", "normclip"])
def test_no_host_sync(name, gen):
    model = cuda_twin(twin_models(n=1)[0])
    clipper = CLIPPERS[name](model.parameters())
    steps = [[g.cuda() for g in s] for s in spiky_grads(gen, SHAPES, 3)]
    set_grads(model.parameters(), steps[0])
    clipper.step()  # first step allocates the state
    torch.cuda.set_sync_debug_mode("error")
    try:
        for grads in steps[1:]:
            for p, g in zip(model.parameters(), grads):
                p.grad.copy_(g)
            clipper.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", ["zclip", "adagc", "autoclip-window"])
def test_graph_capture_replays_steps(name, gen):
    steps = [[g.cuda() for g in s] for s in spiky_grads(gen, SHAPES, 30, SPIKES)]
    eager_model = cuda_twin(twin_models(n=1)[0])
    graph_model = cuda_twin(eager_model)
    eager = CLIPPERS[name](eager_model.parameters())
    captured = CLIPPERS[name](graph_model.parameters())
    static = [g.clone() for g in steps[0]]
    for p, g in zip(graph_model.parameters(), static):
        p.grad = g
    captured.step()  # allocates the state outside the graph
    run(eager, list(eager_model.parameters()), steps[:1])  # the step taken before the capture
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            out = captured.step()
    torch.cuda.current_stream().wait_stream(stream)
    for grads in steps[1:]:
        for s, g in zip(static, grads):
            s.copy_(g)
        graph.replay()
        expected_grads, expected = run(eager, list(eager_model.parameters()), [grads])[0]
        torch.testing.assert_close(out._values, expected._values, rtol=0, atol=0, equal_nan=True)
        for a, b in zip(static, expected_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["zclip", "autoclip-tensor", "adagc"])
def test_state_moves_between_devices(name, gen):
    steps = spiky_grads(gen, SHAPES, 40, SPIKES)
    (cpu_model,) = twin_models(n=1)
    clipper = CLIPPERS[name](cpu_model.parameters())
    run(clipper, list(cpu_model.parameters()), steps[:20])
    gpu_model = cuda_twin(cpu_model)
    moved = CLIPPERS[name](gpu_model.parameters())
    moved.load_state_dict(clipper.state_dict())
    cpu_rest = run(clipper, list(cpu_model.parameters()), steps[20:])
    gpu_rest = run(moved, list(gpu_model.parameters()), [[g.cuda() for g in s] for s in steps[20:]])
    for (gc, rc), (gg, rg) in zip(cpu_rest, gpu_rest):
        torch.testing.assert_close(rg._values.cpu(), rc._values, rtol=2e-5, atol=1e-7, equal_nan=True)
        for x, y in zip(gg, gc):
            torch.testing.assert_close(x.cpu(), y, rtol=2e-5, atol=1e-7, equal_nan=True)
