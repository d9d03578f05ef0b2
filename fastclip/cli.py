"""The ``fastclip`` command: ``fastclip bench`` (clipping throughput on this machine),
``fastclip demo`` (adaptive clipping against gradient spikes in a small training run) and
``fastclip info`` (what was built and what it runs on). Also ``python -m fastclip``.

A bad command-line value is a usage error, as argparse has it: the usage line, then
``fastclip <command>: error: ...``, exit status 2. A run that fails for another reason (not
enough memory for a suite, matplotlib missing) prints ``fastclip <command>: ...`` and exits with
status 1; Ctrl-C exits with 130."""

import argparse
import sys

import torch

import fastclip

from . import bench, demo
from ._command import run_parsed
from .bench_harness import cpu_model

__all__ = ["info_lines", "main"]


def info_lines() -> list[str]:
    """What ``fastclip info`` prints: fastclip's and torch's versions, the CPU kernels in use, the
    CUDA architectures built (or "CPU only"), the GPUs torch sees, and torch's CPU threads."""
    info = fastclip.build_info()
    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU-only build of torch)"
    archs = [a for a in info["cuda_archs"].split(",") if a]
    # "800" is sm_80: compute capability 8.0
    built = ("built for " + ", ".join(f"sm_{int(a) // 10}" for a in archs)) if archs else "CPU only (none built)"
    gpus = (
        [
            f"{i}: {torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(torch.cuda.device_count())
        ]
        if torch.cuda.is_available()
        else []
    )
    runner = (
        "fastclip's CPU kernels"
        if info["cpu_kernels"] == "native"
        else "the CUDA kernels on the CPU execution layer (FASTCLIP_CPU_KERNELS=cuda)"
    )
    rows = [
        ("fastclip", f"{fastclip.__version__} ({fastclip.__path__[0]})"),
        ("torch", torch.__version__ + cuda),
        ("CPU", cpu_model()),
        (
            "CPU ISA",
            f"{info['cpu_isa_in_use']} in use (compiled: {', '.join(info['cpu_isas'])}; "
            "FASTCLIP_CPU_ISA=generic|avx2 caps it)",
        ),
        ("CPU ops run on", runner),
        ("CUDA kernels", built),
        (
            "CUDA on CPU",
            "fastclip._cuda_on_cpu built (FASTCLIP_CPU_KERNELS=cuda runs the CUDA kernels on the CPU)"
            if info["cuda_on_cpu"]
            else "not built",
        ),
        ("GPUs", "; ".join(gpus) if gpus else "none visible"),
        (
            "threads",
            f"{torch.get_num_threads()} (torch.get_num_threads(); torch.set_num_threads or OMP_NUM_THREADS sets it)",
        ),
    ]
    return [f"{label + ':':16s}{value}" for label, value in rows]


def _info(args):
    print("\n".join(info_lines()))


def main(argv=None):
    """Runs ``fastclip bench``, ``fastclip demo`` or ``fastclip info`` from command-line arguments
    (``sys.argv[1:]`` when ``argv`` is None); returns the exit status (0, or 130 when interrupted).
    A bad value exits with status 2 and the subcommand's usage (``SystemExit``)."""
    parser = argparse.ArgumentParser(
        prog="fastclip",
        description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", ""),
        epilog="exit status: 0 done, 1 the run failed, 2 a bad command line (usage error), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"fastclip {fastclip.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{bench,demo,info}")
    commands.required = True
    subparsers = {
        "bench": commands.add_parser("bench", help="benchmark fastclip against torch and the peers"),
        "demo": commands.add_parser(
            "demo", help="train a small LM through gradient spikes, with and without (adaptive) clipping"
        ),
        "info": commands.add_parser(
            "info",
            help="what was built (CPU ISA, CUDA architectures) and what it runs on",
            description="fastclip's and torch's versions, the CPU instruction set in use, the "
            "CUDA architectures built, the GPUs visible and torch's CPU threads",
        ),
    }
    bench.add_arguments(subparsers["bench"])
    demo.add_arguments(subparsers["demo"])
    runs = {"bench": bench.run, "demo": demo.run, "info": _info}
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would name the top-level parser; the subcommand's usage says more
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        run_parsed(subparsers[args.command], runs[args.command], args)
    except KeyboardInterrupt:  # output files are written whole or not at all, so nothing is left half-done
        print(f"\nfastclip {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
