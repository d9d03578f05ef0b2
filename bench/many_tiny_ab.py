"""Plain grads read in C++ against grads read in Python, in one process: `fastclip bench --suite
many-tiny`'s plain cases (10,000 and 50,000 one-element grads, one thread, each call's time as a
ratio to the Python walk over the grads) run alternately with the C++ read switched off
(`fastclip._grads.read_in_python()`: clippers and clip_grad_norm_ then walk `p.grad` in Python)
and on. Medians over the runs of each mode's medians.

    python bench/many_tiny_ab.py --runs 3 > bench/results/many_tiny_ab_cpu.txt
"""

import argparse
import contextlib
import statistics

import torch

from fastclip import _grads
from fastclip.cli import machine, overhead


@contextlib.contextmanager
def _no_mesh():  # plain grads only: DTensor grads are read in Python either way
    yield None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--repeat", type=int, default=9, help="timed rounds per run")
    args = parser.parse_args()
    overhead._single_rank_mesh = _no_mesh
    modes = {"grads read in Python": _grads.read_in_python, "grads read in C++": contextlib.nullcontext}
    runs = {mode: [] for mode in modes}
    for _ in range(args.runs):
        for mode, reading in modes.items():
            with reading():
                runs[mode].append(overhead.many_tiny(torch.device("cpu"), args.repeat))
    print(
        f"many-tiny A/B, {args.runs} runs of each mode, --repeat {args.repeat}, one thread "
        f"({machine.device_name(torch.device('cpu'))}): median ratio to the walk"
    )
    first = next(iter(runs.values()))[0]
    methods = [m for m in first[0]["methods"] if m not in ("walk", "torch.clip_grad_norm_")]
    print(f"{'grads':16s} {'method':34s} " + " ".join(f"{mode:>22s}" for mode in modes))
    for index, case in enumerate(first):
        for method in methods:
            ratios = [
                statistics.median(run[index]["methods"][method]["vs_walk"] for run in runs[mode]) for mode in modes
            ]
            print(f"{case['tensors']:,} {case['grads']:10s} {method:34s} " + " ".join(f"{r:21.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
