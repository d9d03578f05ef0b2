"""What a first GPU run should see of fastclip's dealings with the CUDA runtime, printed one line per
check for bench/gpu_check.sh's summary; exits 1 if a check fails.

    python bench/gpu_runtime_check.py recapture     # kept pinned staging buffers over re-captures
    python bench/gpu_runtime_check.py cooperative   # which path the single launches took, and why

recapture: lists of 1, 2 and 3 tensors (an odd count leaves 8 bytes between the tensor and chunk
arrays of the metadata) each captured into a CUDA graph three times, torch's pinned blocks primed
with different stale bytes inside each capture: a re-capture of the same list must find the
staging buffer kept by the first (at most one kept buffer per list), and every graph replays to
torch's norm.

cooperative: clip_grad_norm_ and a ZClip step, five times each, with the kernel log: whether they
ran as one cooperative launch or on the several-kernel path, how many cooperative launches the
runtime refused (at most one per kernel: a refusal is remembered), and the results bitwise equal to
FASTCLIP_SINGLE_LAUNCH=0's. gpu_check.sh runs it plain (one cooperative launch expected) and under
MPS with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, where the single launch may be refused
(`--allow-refusal`).
"""

import argparse
import os
import sys
import tempfile

import torch

import fastclip
from fastclip._library import _C


def primed_pinned_blocks(byte):
    """Pinned blocks of every small size, filled with `byte` and freed: torch's pinned allocator
    hands them out again with those bytes."""
    blocks = [torch.full((2**k,), byte, dtype=torch.uint8, pin_memory=True) for k in range(4, 13)]
    del blocks


def recapture():
    failures = 0
    gen = torch.Generator().manual_seed(0)
    stream = torch.cuda.Stream()
    for count in (1, 2, 3):
        grads = [torch.randn(97 + i, generator=gen).cuda() for i in range(count)]
        expected = torch.linalg.vector_norm(torch.cat(grads))
        before = _C.kept_staging_buffers()
        graphs, norms = [], []
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for attempt in range(3):
                graph = torch.cuda.CUDAGraph()
                # relaxed: the priming allocates pinned memory inside the capture
                with torch.cuda.graph(graph, capture_error_mode="relaxed"):
                    primed_pinned_blocks(0x11 * (attempt + 1))
                    norms.append(fastclip.ops.multi_tensor_clip_grad_norm_(grads, 1e9, 2.0))
                graphs.append(graph)
        torch.cuda.current_stream().wait_stream(stream)
        kept = _C.kept_staging_buffers() - before
        for graph in graphs:
            graph.replay()
        torch.cuda.synchronize()
        right = all(torch.allclose(norm, expected, rtol=1e-5) for norm in norms)
        ok = kept <= 1 and right
        failures += not ok
        print(
            f"recapture: {count}-tensor list captured 3 times: {kept} pinned staging buffer(s) kept "
            f"(at most 1), replays {'right' if right else 'WRONG'}: {'ok' if ok else 'FAILED'}"
        )
    return failures


def logged(path):
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    open(path, "w").close()
    return lines


def describe(lines):
    cooperative = [line for line in lines if line.endswith(" cooperative")]
    if len(lines) == len(cooperative) == 1:
        return "one cooperative launch"
    if lines and not cooperative:
        return "the several kernels"
    return "unexpected: " + "; ".join(lines)


def cooperative(allow_refusal):
    failures = 0
    log = os.path.join(tempfile.mkdtemp(), "kernels.log")
    os.environ["FASTCLIP_KERNEL_LOG"] = log
    gen = torch.Generator().manual_seed(0)
    # Over 256 chunks: the grid is every block the device holds at once, which an MPS client at a
    # fraction of the SMs cannot hold.
    grads = [torch.randn(n, generator=gen).cuda() for n in (1 << 24, 4097, 33, 1 << 16, 7)]
    outcomes = {}
    for setting in ("1", "0"):
        os.environ["FASTCLIP_SINGLE_LAUNCH"] = setting
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        clipper = fastclip.ZClip(params, warmup_steps=2, max_grad_norm=0.5)
        paths, results = [], []
        for step in range(5):
            clipped = [g * (step + 1) for g in grads]
            results.append(fastclip.ops.multi_tensor_clip_grad_norm_(clipped, 0.5, 2.0))
            results += clipped
            paths.append(("clip_grad_norm_", describe(logged(log))))
            for p, g in zip(params, grads):
                p.grad = g * (step + 1)
            results.append(clipper.step()._values)
            results += [p.grad for p in params]
            paths.append(("ZClip step", describe(logged(log))))
        outcomes[setting] = (paths, results)
    del os.environ["FASTCLIP_SINGLE_LAUNCH"], os.environ["FASTCLIP_KERNEL_LOG"]
    counters = _C.launch_counters()
    paths = outcomes["1"][0]
    for what in ("clip_grad_norm_", "ZClip step"):
        seen = [path for name, path in paths if name == what]
        allowed = {"one cooperative launch", "the several kernels"} if allow_refusal else {"one cooperative launch"}
        # A refusal is remembered: the calls after the first all take one path.
        ok = set(seen) <= allowed and len(set(seen[1:])) == 1
        failures += not ok
        print(f"cooperative: {what}, 5 calls: {', '.join(seen)}: {'ok' if ok else 'FAILED'}")
    refused = counters["refused_cooperative_launches"]
    ok = refused <= 2 and (allow_refusal or refused == 0)
    failures += not ok
    print(
        f"cooperative: {refused} cooperative launch(es) refused (at most one per kernel), "
        f"{counters['occupancy_queries']} occupancy queries: {'ok' if ok else 'FAILED'}"
    )
    same = all(torch.equal(a, b) for a, b in zip(*(outcomes[s][1] for s in ("1", "0"))))
    failures += not same
    print(f"cooperative: results bitwise equal to FASTCLIP_SINGLE_LAUNCH=0's: {'ok' if same else 'FAILED'}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("recapture", "cooperative"))
    parser.add_argument("--allow-refusal", action="store_true", help="a refused single launch is not a failure")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_runtime_check: no CUDA GPU visible; nothing to check")
        return 0
    failures = recapture() if args.check == "recapture" else cooperative(args.allow_refusal)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
