"""A small workload that reaches every fastclip kernel on the GPU, for compute-sanitizer
(bench/gpu_check.sh runs it under memcheck and racecheck): every op on lists with misaligned
starts, odd lengths, empty tensors and mixed dtypes, every norm kind, per-tensor norms on and off,
and a few steps of every clipper, AGC with odd and long rows included, and of StepSkipper on their
norms; all of it twice, with the single cooperative launches and on the several-kernel path
(FASTCLIP_SINGLE_LAUNCH=0). Checks nothing itself but that the results are finite: the sanitizer
reports what went wrong.

    compute-sanitizer --tool memcheck python bench/gpu_sanitize.py
"""

import math
import os

import torch

import fastclip

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU for a dry run


def awkward_list(gen, dtype):
    """Disjoint views of one buffer starting 1, 3, 5, 7 and 0 elements (mod 8) in, lengths around a
    16-byte vector, an empty tensor, a 2-d tensor."""
    base = torch.randn(4096, generator=gen).to(DEVICE, dtype)
    tensors = [base[start : start + length] for start, length in ((1, 7), (11, 33), (45, 1000), (1047, 17), (2048, 64))]
    return tensors + [torch.empty(0, device=DEVICE, dtype=dtype), torch.randn(37, 3, generator=gen).to(DEVICE, dtype)]


def run_ops(gen):
    for dtype in DTYPES:
        tensors = awkward_list(gen, dtype)
        for norm_type in (2.0, 1.0, math.inf, 0.0, 3.0):
            for per_tensor in (False, True):
                total, _ = fastclip.ops.multi_tensor_norm(tensors, norm_type, per_tensor)
                assert total.isfinite(), (dtype, norm_type)
        fastclip.ops.multi_tensor_scale_(tensors, torch.tensor(0.5, device=DEVICE))
        fastclip.ops.multi_tensor_scale_(
            tensors, torch.rand(len(tensors), generator=gen).to(DEVICE), clear_on_zero=True
        )
        fastclip.ops.multi_tensor_clip_by_norm_(tensors, torch.tensor(10.0, device=DEVICE), 1.0)
        fastclip.ops.multi_tensor_clip_grad_norm_(tensors, 0.5, 2.0)
        fastclip.ops.multi_tensor_clamp_(tensors, 0.1)
    mixed = [t for dtype in DTYPES for t in awkward_list(gen, dtype)]
    fastclip.ops.multi_tensor_clip_grad_norm_(mixed, 0.5, 2.0)


def run_clippers(gen):
    # Odd row lengths for AGC, and a row of over 2^18 elements (its segment kernels).
    shapes = [(33, 7), (5,), (64, 3), (1,), (300, 9), (2**18 + 1001,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE)) for s in shapes]
    clippers = [
        fastclip.ZClip(params, warmup_steps=2),
        fastclip.AutoClip(params),
        fastclip.AutoClip(params, history_size=4, scope="tensor"),
        fastclip.AdaGC(params, warmup_steps=2),
        fastclip.AGC(params),
        fastclip.NormClip(params, max_norm=1.0),
        fastclip.StableSPAM(params),
    ]
    skippers = [fastclip.StepSkipper(window=2), fastclip.StepSkipper(window=300, reference=True)]
    for step in range(6):
        for clipper in clippers:
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(DEVICE) * (100.0 if step == 4 else 1.0)
            norm = clipper.step().norm
            for skipper in skippers:
                skipper.step(torch.rand((), generator=gen).to(DEVICE), norm)


def main():
    gen = torch.Generator().manual_seed(0)
    for single_launch in ("1", "0"):  # read at every call; the native CPU kernels have one path
        os.environ["FASTCLIP_SINGLE_LAUNCH"] = single_launch
        run_ops(gen)
        run_clippers(gen)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_sanitize: every op and clipper ran on {DEVICE}")


if __name__ == "__main__":
    main()
