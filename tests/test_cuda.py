"""CUDA-only behaviour: graph capture, launch count, no host sync, 64-bit indexing on the GPU.
(Parity and op tests run on CUDA too, through the `device` parametrization, when a GPU is present.)"""

import math

import pytest
import torch
from conftest import RTOL_SUM, assert_close_to, make_params, random_tensors, reference_norm, run_json_script

import fastclip
from fastclip import distributed
from fastclip._library import _C
from fastclip.cli.bench import GPT2_124M

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def gpt2_like_grads(dtypes, gen):
    return random_tensors(GPT2_124M, dtypes, "cuda", gen)


def kernels_launched(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm up: allocator, pinned staging buffers
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not any(word in e.name for word in ("Memcpy", "Memset", "memcpy", "memset"))
    ]


@pytest.mark.parametrize("dtypes", [[torch.float32], [torch.bfloat16], [torch.float32, torch.bfloat16, torch.float16]])
def test_clip_grad_norm_is_one_launch_for_any_list(dtypes, gen, monkeypatch):
    for count in (3, 148, 5000):
        grads = random_tensors([(97,)] * count, dtypes, "cuda", gen)
        params = make_params(grads=grads)
        names = kernels_launched(lambda: fastclip.clip_grad_norm_(params, 1.0))
        assert len(names) == 1 and "clip_grad_norm_kernel" in names[0], names  # one cooperative launch
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
    names = kernels_launched(lambda: fastclip.clip_grad_norm_(params, 1.0))
    assert len(names) == 2, names  # the norm kernel, the clip-by-norm kernel


def test_single_launch_matches_two_kernels_bitwise_on_gpu(gen, monkeypatch):
    grads = gpt2_like_grads([torch.bfloat16, torch.float32], gen)
    single, fallback = [g.clone() for g in grads], [g.clone() for g in grads]
    total = fastclip.ops.multi_tensor_clip_grad_norm_(single, 0.5, 2.0)
    monkeypatch.setenv("FASTCLIP_SINGLE_LAUNCH", "0")
    expected = fastclip.ops.multi_tensor_clip_grad_norm_(fallback, 0.5, 2.0)
    assert torch.equal(total, expected)
    assert all(torch.equal(a, b) for a, b in zip(single, fallback))


def test_capture_without_warm_up_and_recapture(gen):
    """The first call ever may be inside a capture (the occupancy query, the metadata upload); the
    same list captured again keeps no more pinned memory (it reuses the kept staging buffer)."""
    grads = random_tensors([(1000,), (33, 7)], [torch.float32], "cuda", gen)
    before = [g.clone() for g in grads]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graphs, norms, pinned_in_use = [], [], []
    with torch.cuda.stream(stream):
        for _ in range(3):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                norms.append(fastclip.ops.multi_tensor_clip_grad_norm_(grads, 1e9, 2.0))
            graphs.append(graph)
            pinned_in_use.append(torch.cuda.host_memory_stats()["active_requests.current"])
    torch.cuda.current_stream().wait_stream(stream)
    for graph in graphs:
        graph.replay()
    torch.cuda.synchronize()
    for norm in norms:
        assert_close_to(norm, reference_norm(before, 2.0), RTOL_SUM[torch.float32])
    for grad, original in zip(grads, before):  # max_norm 1e9: a coefficient of 1 writes nothing
        assert torch.equal(grad, original)
    assert pinned_in_use == [pinned_in_use[0]] * 3, f"pinned blocks in use after each capture: {pinned_in_use}"


def prime_pinned_blocks(byte):
    """Pinned blocks of every small size, filled with `byte` and freed: torch's pinned allocator
    hands them out again as they are."""
    blocks = [torch.full((2**k,), byte, dtype=torch.uint8, pin_memory=True) for k in range(4, 13)]
    del blocks


@pytest.mark.parametrize("count", [1, 3])
def test_recapture_of_an_odd_list_keeps_no_new_staging_buffer(count, gen):
    """An odd number of tensors leaves 8 bytes between the tensor array and the 16-byte aligned
    chunk array of the pinned staging block; they must be written too, since a re-capture finds
    the buffer kept by the first capture by comparing every byte. Each capture's pinned blocks are
    primed with other stale bytes, so a byte left unwritten shows as a new kept buffer."""
    grads = random_tensors([(97,)] * count, [torch.float32], "cuda", gen)
    expected = reference_norm(grads, 2.0)
    before = _C.kept_staging_buffers()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graphs, norms = [], []
    with torch.cuda.stream(stream):
        for attempt in range(3):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="relaxed"):  # relaxed: the priming allocates
                prime_pinned_blocks(0x11 * (attempt + 1))
                norms.append(fastclip.ops.multi_tensor_clip_grad_norm_(grads, 1e9, 2.0))
            graphs.append(graph)
    torch.cuda.current_stream().wait_stream(stream)
    assert _C.kept_staging_buffers() - before <= 1  # the first capture's, if no earlier one matched
    for graph in graphs:
        graph.replay()
    torch.cuda.synchronize()
    for norm in norms:
        assert_close_to(norm, expected, RTOL_SUM[torch.float32])


_FIRST_LAUNCH_IN_A_CAPTURE = r"""
import json, os, sys
import torch
import fastclip

LOG = sys.argv[1]
os.environ["FASTCLIP_KERNEL_LOG"] = LOG


def take():
    lines = open(LOG).read().splitlines() if os.path.exists(LOG) else []
    open(LOG, "w").close()
    names = [line.split(" grid=")[0].split("<")[0] for line in lines]
    return [name + (" cooperative" if line.endswith(" cooperative") else "") for name, line in zip(names, lines)]


gen = torch.Generator().manual_seed(0)
grads = [torch.randn(n, generator=gen).cuda() for n in (1000, 231)]
stream = torch.cuda.Stream()


def capture():
    graph = torch.cuda.CUDAGraph()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            norm = fastclip.ops.multi_tensor_clip_grad_norm_(grads, 1e9, 2.0)
    torch.cuda.current_stream().wait_stream(stream)
    return graph, norm


first_graph, first = capture()
out = {"first capture": take()}
eager = fastclip.ops.multi_tensor_clip_grad_norm_(grads, 1e9, 2.0)
out["eager"] = take()
second_graph, second = capture()
out["second capture"] = take()
first_graph.replay()
second_graph.replay()
torch.cuda.synchronize()
out["same bits"] = torch.equal(first, eager) and torch.equal(second, eager)
out["right"] = torch.allclose(eager, torch.linalg.vector_norm(torch.cat(grads)), rtol=1e-5)
print(json.dumps(out))
"""


def test_a_single_launch_is_first_tried_outside_a_capture(tmp_path):
    """In a fresh process, the first call of the op inside a capture: whether the device takes the
    cooperative launch is not known yet, and a refused launch (MPS, green contexts) could
    invalidate the capture, so the capture holds the several kernels. Once it has run eagerly, a
    capture holds the single launch. Each graph replays to the same bits."""
    out = run_json_script(_FIRST_LAUNCH_IN_A_CAPTURE, tmp_path, 300)
    assert out["first capture"] == ["multi_tensor_norm_kernel", "multi_tensor_clip_by_norm_kernel"], out
    assert out["eager"] == ["clip_grad_norm_kernel cooperative"], out
    assert out["second capture"] == ["clip_grad_norm_kernel cooperative"], out
    assert out["same bits"] and out["right"], out


def test_index_tensors_first_made_inside_a_capture():
    """distributed.py's index tensors (and the clippers' state rows, made the same way) first
    needed inside a capture, without a warm-up: the index is made with the capture and not kept,
    since its copy runs only when the graph replays (an eager call before the first replay must
    not read it); its pinned source outlives the capture, torch's pinned blocks being recycled
    meanwhile. A kept index that a later capture reads stays alive for that graph."""
    values = torch.arange(8, dtype=torch.float64, device="cuda") * 10
    device, indices, on_device = values.device, [5, 1, 6], {}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    first_graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(first_graph):
            captured = values.index_select(0, distributed._index_on(indices, on_device, device))
    torch.cuda.current_stream().wait_stream(stream)
    assert not on_device, "an index made inside a capture was kept"
    prime_pinned_blocks(0xFF)
    eager = values.index_select(0, distributed._index_on(indices, on_device, device))  # before any replay
    assert eager.tolist() == [50.0, 10.0, 60.0]
    assert list(on_device) == [device]
    for _ in range(2):
        prime_pinned_blocks(0xFF)
        first_graph.replay()
        torch.cuda.synchronize()
        assert captured.tolist() == [50.0, 10.0, 60.0]
    second_graph = torch.cuda.CUDAGraph()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(second_graph):
            again = values.index_select(0, distributed._index_on(indices, on_device, device))  # the kept one
    torch.cuda.current_stream().wait_stream(stream)
    on_device.clear()  # the cache lets go of it; the graph still reads it
    scribble = [torch.full((3,), 3, dtype=torch.int64, device="cuda") for _ in range(64)]  # in range, but wrong
    second_graph.replay()
    torch.cuda.synchronize()
    assert again.tolist() == [50.0, 10.0, 60.0]
    del scribble


def test_no_host_sync(gen):
    grads = gpt2_like_grads([torch.bfloat16, torch.float32], gen)
    params = make_params(grads=grads)
    fastclip.clip_grad_norm_(params, 1.0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        fastclip.clip_grad_norm_(params, 1.0)
        fastclip.clip_grad_value_(params, 0.5)
        fastclip.get_total_norm(grads, 3.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cuda_graph_capture_and_replay(gen):
    grads = gpt2_like_grads([torch.float32], gen)[:40]
    static = [g.clone() for g in grads]
    params = make_params(grads=static)
    for p, g in zip(params, static):
        p.grad = g  # the captured kernels read and write these very tensors
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fastclip.clip_grad_norm_(params, 1.0)  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_total = fastclip.clip_grad_norm_(params, 1.0)
    for step in range(3):
        fresh = random_tensors([g.shape for g in grads], [torch.float32], "cuda", gen)
        for s, f in zip(static, fresh):
            s.copy_(f * (step + 1))
        graph.replay()
        expected_params = make_params(grads=fresh)
        for e in expected_params:
            e.grad.mul_(step + 1)
        expected = torch.nn.utils.clip_grad_norm_(expected_params, 1.0)
        assert_close_to(captured_total, expected, rtol=RTOL_SUM[torch.float32])
        for s, e in zip(static, expected_params):
            assert_close_to(s, e.grad, rtol=RTOL_SUM[torch.float32], atol=1e-9)


def agc_reference(grads, params, clip_factor, eps):
    """timm's adaptive_clip_grad per output row, in float64."""
    out = []
    for g, p in zip(grads, params):
        rows = p.detach().double().reshape(p.shape[0] if p.dim() > 1 else 1, -1)
        grad_rows = g.double().reshape(rows.shape)
        bound = rows.norm(dim=1, keepdim=True).clamp(min=eps) * clip_factor
        norm = grad_rows.norm(dim=1, keepdim=True)
        factor = torch.where(norm > bound, bound / norm.clamp(min=1e-6), torch.ones_like(norm))
        out.append((grad_rows * factor).reshape(g.shape))
    return out


def test_agc_long_rows_on_gpu(gen):
    """Rows of over 2^18 elements are cut into segments (three kernels): each row (scaled
    differently, so a mix-up shows) against float64, the same bits run after run, and the same
    under a CUDA graph replay."""
    long_row = 2**18 + 1001
    shapes = [(long_row,), (3, 5), (2, long_row), (4, 33)]
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    grads = [
        g * torch.arange(1, g.shape[0] + 1, device="cuda", dtype=g.dtype).reshape(-1, *[1] * (g.dim() - 1))
        if g.dim() > 1
        else g
        for g in random_tensors(shapes, dtypes, "cuda", gen)
    ]
    params = make_params(grads=grads, generator=gen)
    expected = agc_reference(grads, params, 0.05, 1e-3)
    fastclip.adaptive_clip_grad_(params, 0.05, 1e-3)
    for p, e in zip(params, expected):
        assert_close_to(p.grad, e, rtol=RTOL_SUM[p.grad.dtype], atol=1e-9)
    clipped = [p.grad.clone() for p in params]
    for p, g in zip(params, grads):
        p.grad.copy_(g)
    fastclip.adaptive_clip_grad_(params, 0.05, 1e-3)
    assert all(torch.equal(p.grad, c) for p, c in zip(params, clipped))
    for p, g in zip(params, grads):
        p.grad.copy_(g)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fastclip.adaptive_clip_grad_(params, 0.05, 1e-3)
    for p, g in zip(params, grads):
        p.grad.copy_(g)
    graph.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(p.grad, c) for p, c in zip(params, clipped))


def test_bitwise_deterministic_on_gpu(gen):
    grads = gpt2_like_grads([torch.bfloat16], gen)
    first = fastclip.ops.multi_tensor_norm(grads, 2.0, True)
    for _ in range(10):
        again = fastclip.ops.multi_tensor_norm(grads, 2.0, True)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_tensor_over_2_pow_31_elements_on_gpu():
    n = 2**31 + 40
    t = torch.full((n,), 0.5, dtype=torch.bfloat16, device="cuda")
    t[2**31 + 7] = 3.0
    assert fastclip.ops.multi_tensor_norm([t], math.inf, False)[0].item() == 3.0
    fastclip.ops.multi_tensor_scale_([t], torch.tensor(0.5, device="cuda"))
    assert t[2**31 + 7].item() == 1.5 and t[-1].item() == 0.25


def test_compile_with_inductor_on_gpu(gen):
    torch._dynamo.reset()
    grads = random_tensors([(128, 64), (64,)], [torch.float32, torch.bfloat16], "cuda", gen)
    expected = torch.nn.utils.clip_grad_norm_(make_params(grads=grads), 0.5)
    params = make_params(grads=grads)

    @torch.compile(fullgraph=True)
    def clip(ps):
        return fastclip.clip_grad_norm_(ps, 0.5)

    assert_close_to(clip(params), expected, rtol=RTOL_SUM[torch.float32])
    assert reference_norm(grads, 2.0) > 0.5  # so the clipped grads have norm max_norm
    assert_close_to(fastclip.get_total_norm([p.grad for p in params]), 0.5, rtol=1e-2)
