"""Fails unless a kernel log (FASTCLIP_KERNEL_LOG) lists every __global__ function in csrc/cuda:
run after the tests on the CPU execution layer, it proves no kernel went unexercised. Prints how
often each was launched.

    python .ci/check_kernel_log.py <log>
"""

import collections
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s+)?(\w+)\s*\(")


def global_functions():
    return {
        name
        for path in (ROOT / "csrc" / "cuda").glob("*.cu*")
        for name in GLOBAL.findall(path.read_text())
        if path.suffix in (".cu", ".cuh")
    }


def launches(log_path):
    counts = collections.Counter()
    for line in pathlib.Path(log_path).read_text().splitlines():
        counts[line.split(" grid=")[0].split("<")[0]] += 1
    return counts


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    kernels, counts = global_functions(), launches(argv[1])
    if not kernels:
        sys.exit("found no __global__ function in csrc/cuda")
    for name in sorted(kernels):
        print(f"{counts[name]:8d}  {name}")
    missing = sorted(kernels - set(counts))
    if missing:
        sys.exit(f"never launched: {', '.join(missing)}")
    print(f"every one of the {len(kernels)} kernels was launched ({sum(counts.values())} launches)")


if __name__ == "__main__":
    main(sys.argv)
