"""The ``fastclip`` command: ``fastclip bench`` (clipping throughput on this machine) and
``fastclip demo`` (adaptive clipping against gradient spikes in a small training run).
Also ``python -m fastclip``."""

import argparse
import sys

from . import bench, demo

__all__ = ["main"]


def main(argv=None):
    """Runs ``fastclip bench`` or ``fastclip demo`` from command-line arguments (``sys.argv[1:]``
    when ``argv`` is None); returns the exit status (0, or 130 when interrupted)."""
    parser = argparse.ArgumentParser(prog="fastclip", description=" ".join(__doc__.split("\n\n")[0].split()).replace("``", ""))
    commands = parser.add_subparsers(dest="command", metavar="{bench,demo}")
    commands.required = True
    bench.add_arguments(commands.add_parser("bench", help="benchmark fastclip against torch and the peers"))
    demo.add_arguments(commands.add_parser("demo", help="train a small LM through gradient spikes, with and "
                                           "without (adaptive) clipping"))
    args = parser.parse_args(argv)
    try:
        (bench.run if args.command == "bench" else demo.run)(args)
    except KeyboardInterrupt:  # output files are written whole or not at all, so nothing is left half-done
        print(f"\nfastclip {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
