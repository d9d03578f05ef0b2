"""The ``fastclip`` command: ``fastclip bench`` (clipping throughput on this machine),
``fastclip demo`` (adaptive clipping against gradient spikes in a small training run) and
``fastclip info`` (what was built and what it runs on). Also ``python -m fastclip``.

A bad command-line value (out of range, a path that cannot be written, a device this machine
does not have) is a *usage error*, as argparse has it: the check raises :class:`UsageError` and
:func:`run_parsed` turns it into the parser's own error (``usage: ...`` then
``fastclip demo: error: --steps must be >= 10, got 3``, exit status 2). A run that fails for
another reason (not enough memory for a suite, matplotlib missing, out of memory on the device)
ends with ``SystemExit("fastclip bench: ...")``: the message on stderr, exit status 1, no usage.
Ctrl-C exits with 130.
"""

import argparse
import sys

import torch

import fastclip

from .machine import cpu_model

__all__ = ["UsageError", "info_lines", "main", "parse_device", "run_parsed"]


class UsageError(SystemExit):
    """A bad command-line value, ``message`` naming the option (``"--steps must be >= 10, got 3"``).

    :func:`run_parsed` reports it through the parser (usage line, ``<prog>: error: <message>``,
    exit status 2). It is a ``SystemExit``, so code that calls a subcommand's ``run()`` without a
    parser still ends as before: ``"<prog>: <message>"`` on stderr, exit status 1.
    """

    def __init__(self, prog: str, message: str):
        super().__init__(f"{prog}: {message}")
        self.prog, self.message = prog, message


def run_parsed(parser, run, args):
    """``run(args)``, a :class:`UsageError` becoming ``parser.error`` (usage, message, exit 2)."""
    try:
        return run(args)
    except UsageError as e:
        parser.error(e.message)


def parse_device(text: str | None, prog: str) -> torch.device:
    """A ``--device`` option's device: cuda when available for None, else cpu, cuda or cuda:N
    checked against this machine (a :class:`UsageError` for ``prog`` otherwise)."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(prog, f"--device must be cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cpu":
        return torch.device("cpu")  # torch accepts cpu:N; there is one CPU device
    if not torch.cuda.is_available():
        raise UsageError(prog, f"--device {text} but no CUDA GPU is available")
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise UsageError(prog, f"--device {text} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


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
    from . import bench, demo  # here, not at the top: they import this module's UsageError

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
