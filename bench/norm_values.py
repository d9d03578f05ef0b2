"""The norm pass alone on grads of chosen values: all zeros, ordinary (randn) or tiny (randn * 1e-25,
whose float32 squares underflow), to see what the overflow-safe norms cost where they do extra work.

    python bench/norm_values.py zeros float32   # prints "<values> <dtype> <median ms>"

30 tensors of 4,000,000 elements, L2, median of 9 calls. Run it against two builds alternately
(PYTHONPATH=<other checkout>) for a before/after comparison in one run.
"""

import statistics
import sys
import time

import torch

import fastclip  # noqa: F401  (registers torch.ops.fastclip)

VALUES = {"zeros": 0.0, "randn": 1.0, "tiny": 1e-25}


def main(values: str, dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)
    tensors = [(torch.randn(4_000_000) * VALUES[values]).to(dtype) for _ in range(30)]
    times = []
    for _ in range(9):
        start = time.perf_counter()
        torch.ops.fastclip.multi_tensor_norm(tensors, 2.0, False)
        times.append(time.perf_counter() - start)
    print(f"{values} {dtype_name} {statistics.median(times) * 1e3:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
