"""The CPU norm pass for L2, L1 and inf on GPT-2 124M's grads (float32 and bfloat16), one thread:
the inf and L1 passes should cost what the L2 pass costs (all read the grads once).

    OMP_NUM_THREADS=1 python bench/norm_kinds.py
"""

import time

import torch

import fastclip
from fastclip.cli.bench import GPT2_124M
from fastclip.cli.grads import make_grads

gen = torch.Generator().manual_seed(0)
for dt in [torch.float32, torch.bfloat16]:
    grads = make_grads(GPT2_124M, dt, "cpu", gen)

    def t(f, r=5):
        ts = []
        for _ in range(r):
            a = time.perf_counter()
            f()
            ts.append(time.perf_counter() - a)
        return sorted(ts)[r // 2] * 1e3

    for p in [2.0, 1.0, float("inf")]:
        print(dt, p, round(t(lambda: fastclip.ops.multi_tensor_norm(grads, p, False)), 2), "ms")
